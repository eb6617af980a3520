//! Epilogue fusion: a conv or matmul with its bias, activation and residual add becomes one
//! node that writes its result once.

use super::*;
use oar_ir::op::{BinaryOp, Epilogue};

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // act(conv(x, w, b)) = fused_conv2d{act}(x, w, b)
        Rule { name: "fuse-conv-activation", search: Search::Local(conv_activation) },
        // conv(x, w, b) + r = fused_conv2d{residual}(x, w, b, r)
        Rule { name: "fuse-conv-residual", search: Search::Local(conv_residual) },
        // x·w + b = fused_matmul{bias}(x, w, b)   (b a parameter or constant)
        Rule { name: "fuse-matmul-bias", search: Search::Local(matmul_bias) },
        // act(x·w + …) = fused_matmul{act}(…)
        Rule { name: "fuse-matmul-activation", search: Search::Local(matmul_activation) },
        // (x·w + b) + r = fused_matmul{bias, residual}(x, w, b, r)
        Rule { name: "fuse-matmul-residual", search: Search::Local(matmul_residual) },
    ]
}

/// Conv nodes in class `c` as (attrs, inputs, epilogue), plain convs as an empty epilogue.
fn convs(eg: &EG, c: Id) -> Vec<(oar_ir::op::ConvAttrs, Vec<Id>, Epilogue)> {
    ops(eg, c)
        .filter_map(|(o, ch)| match o {
            Op::Conv2d(a) => Some((
                a.clone(),
                ch.to_vec(),
                Epilogue {
                    bias: ch.len() == 3,
                    ..Default::default()
                },
            )),
            Op::FusedConv2d { conv, epilogue } => {
                Some((conv.clone(), ch.to_vec(), epilogue.clone()))
            }
            _ => None,
        })
        .collect()
}

fn matmuls(eg: &EG, c: Id) -> Vec<(oar_ir::op::MatMulAttrs, Vec<Id>, Epilogue)> {
    ops(eg, c)
        .filter_map(|(o, ch)| match o {
            Op::MatMul(m) => Some((*m, ch.to_vec(), Epilogue::default())),
            Op::FusedMatMul { mm, epilogue } => Some((*mm, ch.to_vec(), epilogue.clone())),
            _ => None,
        })
        .collect()
}

fn fused_conv(a: oar_ir::op::ConvAttrs, e: Epilogue, ins: &[Id]) -> Term {
    op(
        Op::FusedConv2d {
            conv: a,
            epilogue: e,
        },
        ins.iter().map(|&c| class(c)).collect(),
    )
}

fn fused_mm(m: oar_ir::op::MatMulAttrs, e: Epilogue, ins: &[Id]) -> Term {
    op(
        Op::FusedMatMul { mm: m, epilogue: e },
        ins.iter().map(|&c| class(c)).collect(),
    )
}

fn conv_activation(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    let Op::Unary(u) = o else { return vec![] };
    convs(eg, ch[0])
        .into_iter()
        .filter(|(_, _, e)| e.activation.is_none())
        .map(|(a, ins, mut e)| {
            e.activation = Some(*u);
            rewrite(id, fused_conv(a, e, &ins))
        })
        .collect()
}

fn conv_residual(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(BinaryOp::Add) {
        return vec![];
    }
    let mut out = Vec::new();
    for (y, r) in both(ch) {
        if ty(eg, r) != ty(eg, id) || ty(eg, y) != ty(eg, id) {
            continue;
        }
        for (a, mut ins, mut e) in convs(eg, y) {
            if e.activation.is_none() && !e.residual {
                e.residual = true;
                ins.push(r);
                out.push(rewrite(id, fused_conv(a, e, &ins)));
            }
        }
    }
    out
}

fn matmul_bias(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(BinaryOp::Add) {
        return vec![];
    }
    let mut out = Vec::new();
    for (y, b) in both(ch) {
        if !known(eg, b) || ty(eg, y) != ty(eg, id) || ty(eg, b).rank() > 1 {
            continue;
        }
        for (m, ins, e) in matmuls(eg, y) {
            if e == Epilogue::default() {
                let e = Epilogue {
                    bias: true,
                    ..Default::default()
                };
                out.push(rewrite(id, fused_mm(m, e, &[ins[0], ins[1], b])));
            }
        }
    }
    out
}

fn matmul_activation(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    let Op::Unary(u) = o else { return vec![] };
    matmuls(eg, ch[0])
        .into_iter()
        .filter(|(_, _, e)| e.activation.is_none())
        .map(|(m, ins, mut e)| {
            e.activation = Some(*u);
            rewrite(id, fused_mm(m, e, &ins))
        })
        .collect()
}

fn matmul_residual(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(BinaryOp::Add) {
        return vec![];
    }
    let mut out = Vec::new();
    for (y, r) in both(ch) {
        if ty(eg, r) != ty(eg, id) || ty(eg, y) != ty(eg, id) || known(eg, r) {
            continue;
        }
        for (m, mut ins, mut e) in matmuls(eg, y) {
            if e.activation.is_none() && !e.residual {
                e.residual = true;
                ins.push(r);
                out.push(rewrite(id, fused_mm(m, e, &ins)));
            }
        }
    }
    out
}
