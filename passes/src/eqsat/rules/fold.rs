//! Inference folding: batch norm into the producing conv or matmul; chains of constant
//! multiplications and additions.

use super::*;
use oar_ir::op::{BinaryOp, ReshapeDim};

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // bn(conv(x, w, b)) = conv(x, w·k, (b − mean)·k + β), k = γ / √(var + ε)
        Rule { name: "fold-bn-into-conv", search: Search::Local(bn_into_conv) },
        // bn(x·w) = x·(w·k) + (β − mean·k) over [N, C]
        Rule { name: "fold-bn-into-matmul", search: Search::Local(bn_into_matmul) },
        // (x · c1) · c2 = x · (c1 · c2)
        Rule { name: "mul-mul-const", search: Search::Local(mul_mul_const) },
        // (x + c1) + c2 = x + (c1 + c2)
        Rule { name: "add-add-const", search: Search::Local(add_add_const) },
    ]
}

fn bn_scale(ch: &[Id], eps: f64) -> Term {
    // k = γ / √(var + ε)
    let var_eps = op(
        Op::Binary(BinaryOp::Add),
        vec![class(ch[4]), Term::Scalar(eps)],
    );
    op(
        Op::Binary(BinaryOp::Div),
        vec![class(ch[1]), op(Op::Unary(UnaryOp::Sqrt), vec![var_eps])],
    )
}

fn bn_shift(bias: Option<Id>, ch: &[Id], k: Term) -> Term {
    // (b − mean)·k + β, with b = 0 when absent
    let centred = match bias {
        Some(b) => op(Op::Binary(BinaryOp::Sub), vec![class(b), class(ch[3])]),
        None => op(Op::Unary(UnaryOp::Neg), vec![class(ch[3])]),
    };
    op(
        Op::Binary(BinaryOp::Add),
        vec![
            op(Op::Binary(BinaryOp::Mul), vec![centred, k]),
            class(ch[2]),
        ],
    )
}

fn bn_into_conv(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    // Only the inference form: the training form normalises with batch statistics.
    let Op::BatchNorm {
        eps,
        momentum: None,
    } = o
    else {
        return vec![];
    };
    if !ch[1..].iter().all(|&c| known(eg, c)) {
        return vec![];
    }
    ops(eg, ch[0])
        .filter_map(|(cop, cch)| {
            let Op::Conv2d(attrs) = cop else { return None };
            if !cch[1..].iter().all(|&c| known(eg, c)) {
                return None;
            }
            let out_ch = ty(eg, cch[1]).shape.0[0].clone();
            let k = bn_scale(ch, *eps);
            let k4 = op(
                Op::Reshape {
                    shape: vec![ReshapeDim::Dim(out_ch), 1.into(), 1.into(), 1.into()],
                },
                vec![k.clone()],
            );
            let w = op(Op::Binary(BinaryOp::Mul), vec![class(cch[1]), k4]);
            let b = bn_shift(cch.get(2).copied(), ch, k);
            Some(rewrite(
                id,
                op(Op::Conv2d(attrs.clone()), vec![class(cch[0]), w, b]),
            ))
        })
        .collect()
}

fn bn_into_matmul(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    // Only the inference form: the training form normalises with batch statistics.
    let Op::BatchNorm {
        eps,
        momentum: None,
    } = o
    else {
        return vec![];
    };
    if ty(eg, ch[0]).rank() != 2 || !ch[1..].iter().all(|&c| known(eg, c)) {
        return vec![];
    }
    ops(eg, ch[0])
        .filter_map(|(mop, mch)| {
            let Op::MatMul(m) = mop else { return None };
            if m.transpose_b || ty(eg, mch[1]).rank() != 2 || !known(eg, mch[1]) {
                return None;
            }
            let k = bn_scale(ch, *eps);
            let w = op(Op::Binary(BinaryOp::Mul), vec![class(mch[1]), k.clone()]);
            let mm = op(Op::MatMul(*m), vec![class(mch[0]), w]);
            Some(rewrite(
                id,
                op(Op::Binary(BinaryOp::Add), vec![mm, bn_shift(None, ch, k)]),
            ))
        })
        .collect()
}

fn const_chain(eg: &EG, id: Id, o: &Op, ch: &[Id], b: BinaryOp) -> Vec<Rewrite> {
    if *o != Op::Binary(b) {
        return vec![];
    }
    let mut out = Vec::new();
    for (inner, c2) in both(ch) {
        if !known(eg, c2) || known(eg, inner) {
            continue;
        }
        for (x, c1) in binary_args(eg, inner, b) {
            if known(eg, c1) && !known(eg, x) {
                let cc = op(Op::Binary(b), vec![class(c1), class(c2)]);
                out.push(rewrite(id, op(Op::Binary(b), vec![class(x), cc])));
            }
        }
    }
    out
}

fn mul_mul_const(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    const_chain(eg, id, o, ch, BinaryOp::Mul)
}

fn add_add_const(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    const_chain(eg, id, o, ch, BinaryOp::Add)
}
