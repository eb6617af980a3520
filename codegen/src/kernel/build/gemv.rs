//! Matrix products with few rows or few columns, where packing for the register-blocked
//! GEMM costs more than it saves: plain loop nests the vectorizer widens.

use super::contraction::act_expr;
use super::Builder;
use crate::kernel::{BiasMode, Body, Expr, GemmSpec, IExpr, Stmt};

/// Few rows (a batch-1 linear layer): packing B would cost more than the product, so each
/// parallel iteration owns a block of columns and streams B's rows through it.
#[allow(clippy::too_many_arguments)]
pub(super) fn small_m(
    b: &mut Builder,
    name: &str,
    a: usize,
    bm: usize,
    c: usize,
    s: &GemmSpec,
    bias: Option<usize>,
    res: Option<usize>,
) -> Result<(), String> {
    // Column blocks: the widest divisor of n up to 256 (whole cache lines of B per k).
    let blk = (1..=s.n.min(256)).rev().find(|d| s.n % d == 0).unwrap_or(1);
    let nb = s.n / blk;
    let t = IExpr::v(0);
    let (i, k, j) = (IExpr::v(1), IExpr::v(2), IExpr::v(3));
    let bt = t.clone().div(nb);
    let col = t.clone().rem(nb).mul(blk).add(j.clone());
    let at_c = bt
        .clone()
        .mul(s.stride_c)
        .add(i.clone().mul(s.ldc))
        .add(col.clone());
    let at_a = bt
        .clone()
        .mul(s.stride_a)
        .add(i.clone().mul(s.lda))
        .add(k.clone());
    let at_b = bt.mul(s.stride_b).add(k.mul(s.ldb)).add(col.clone());
    let mut args = vec![c, a, bm];
    let mut fin = Expr::Load(0, at_c.clone());
    if let Some(bb) = bias {
        args.push(bb);
        let idx = if s.bias == BiasMode::PerRow {
            i.clone()
        } else {
            col.clone()
        };
        fin = fin.add(Expr::Load(args.len() - 1, idx));
    }
    if let Some(r) = res {
        args.push(r);
        fin = fin.add(Expr::Load(args.len() - 1, at_c.clone()));
    }
    fin = act_expr(s.act, fin);
    let store = |val: Expr| Stmt::Store {
        buf: 0,
        idx: at_c.clone(),
        val,
    };
    let cols = |body: Vec<Stmt>| Stmt::seq(3, blk, body);
    let body = vec![Stmt::par(
        s.batch * nb,
        vec![Stmt::seq(
            1,
            s.m,
            vec![
                cols(vec![store(Expr::C(0.0))]),
                Stmt::seq(
                    2,
                    s.k,
                    vec![cols(vec![store(Expr::Load(0, at_c.clone()).add(
                        Expr::Load(1, at_a.clone()).mul(Expr::Load(2, at_b.clone())),
                    ))])],
                ),
                cols(vec![store(fin)]),
            ],
        )],
    )];
    b.kernel(name, &args, Body::Loops(body), s.batch * nb, 2)
}

/// Few columns (a matrix-vector product, a 1×1 convolution of a pooled map): one parallel
/// iteration per row, each a dot product the vectorizer widens along k.
#[allow(clippy::too_many_arguments)]
pub(super) fn small_n(
    b: &mut Builder,
    name: &str,
    a: usize,
    bm: usize,
    c: usize,
    s: &GemmSpec,
    bias: Option<usize>,
    res: Option<usize>,
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
    let mut args = vec![c, a, bm];
    let mut fin = Expr::Local(0);
    if let Some(bb) = bias {
        args.push(bb);
        let idx = if s.bias == BiasMode::PerRow {
            i.clone()
        } else {
            j.clone()
        };
        fin = fin.add(Expr::Load(args.len() - 1, idx));
    }
    if let Some(r) = res {
        args.push(r);
        fin = fin.add(Expr::Load(args.len() - 1, at_c.clone()));
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
                        val: Expr::Local(0).add(Expr::Load(1, at_a).mul(Expr::Load(2, at_b))),
                    }],
                ),
                Stmt::Store {
                    buf: 0,
                    idx: at_c,
                    val: fin,
                },
            ],
        )],
    )];
    b.kernel(name, &args, Body::Loops(body), s.batch * s.m, 16)
}
