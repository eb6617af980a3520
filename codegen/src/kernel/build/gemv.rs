//! Matrix products with a few (2–15) columns, where packing for the register-blocked GEMM
//! costs more than it saves: a loop nest the vectorizer widens. One row or one column goes
//! to the vector GEMV (`Body::Gemv`, cpu/gemv.rs).

use super::contraction::act_expr;
use super::Builder;
use crate::kernel::{BiasMode, Body, Expr, GemmSpec, IExpr, Stmt};

/// Few columns (a matrix-vector product, a 1×1 convolution of a pooled map): one parallel
/// iteration per row, each a dot product the vectorizer widens along k. `args` in the
/// GEMM's order: A, B, C, then bias and residual as `s` has them.
pub(super) fn small_n(
    b: &mut Builder,
    name: &str,
    args: &[usize],
    s: &GemmSpec,
) -> Result<(), String> {
    let t = IExpr::v(0);
    let (j, k) = (IExpr::v(1), IExpr::v(2));
    let bt = t.clone().div(s.m);
    let i = t.clone().rem(s.m);
    let at_c = bt
        .clone()
        .mul(s.stride_c)
        .add(i.clone().mul(s.ldc))
        .add(j.clone());
    let at_a = bt
        .clone()
        .mul(s.stride_a)
        .add(i.clone().mul(s.lda))
        .add(k.clone());
    let at_b = bt.mul(s.stride_b).add(k.mul(s.ldb)).add(j.clone());
    let mut fin = Expr::Local(0);
    let mut next = 3;
    if s.bias != BiasMode::None {
        let idx = if s.bias == BiasMode::PerRow {
            i.clone()
        } else {
            j.clone()
        };
        fin = fin.add(Expr::Load(next, idx));
        next += 1;
    }
    if s.residual {
        fin = fin.add(Expr::Load(next, at_c.clone()));
    }
    fin = act_expr(s.act, fin);
    let body = vec![Stmt::par(
        s.batch * s.m,
        vec![Stmt::seq(
            1,
            s.n,
            vec![
                Stmt::Local {
                    id: 0,
                    init: Expr::C(0.0),
                },
                Stmt::seq(
                    2,
                    s.k,
                    vec![Stmt::Assign {
                        id: 0,
                        val: Expr::Local(0).add(Expr::Load(0, at_a).mul(Expr::Load(1, at_b))),
                    }],
                ),
                Stmt::Store {
                    buf: 2,
                    idx: at_c,
                    val: fin,
                },
            ],
        )],
    )];
    b.kernel(name, args, Body::Loops(body), s.batch * s.m, 16)
}
