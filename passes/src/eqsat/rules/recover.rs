//! Recovery of ops that exporters decompose: hardswish, hardsigmoid, GELU (erf and tanh
//! forms), SiLU, softmax, layer norm.

use super::*;
use oar_ir::dist::ReduceOp;
use oar_ir::op::BinaryOp::{Add, Div, Mul, Pow, Sub};

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // x · clip(x + 3, 0, 6) / 6 = hardswish(x)   (also · 1/6; relu6 for the clip)
        Rule { name: "hardswish-from-clip", search: Search::Local(hardswish_from_clip) },
        // x · hardsigmoid_{1/6, 1/2}(x) = hardswish(x)
        Rule { name: "hardswish-from-hardsigmoid", search: Search::Local(hardswish_from_hardsigmoid) },
        // clip(x + 3, 0, 6) / 6 = hardsigmoid_{1/6, 1/2}(x)
        Rule { name: "hardsigmoid-from-clip", search: Search::Local(hardsigmoid_from_clip) },
        // clip(α·x + β, 0, 1) = hardsigmoid_{α, β}(x)
        Rule { name: "hardsigmoid-from-affine", search: Search::Local(hardsigmoid_from_affine) },
        // x · (erf(x / √2) + 1) · 0.5 = gelu(x)
        Rule { name: "gelu-from-erf", search: Search::Local(gelu_from_erf) },
        // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) = gelu_tanh(x)
        Rule { name: "gelu-from-tanh", search: Search::Local(gelu_from_tanh) },
        // x · sigmoid(x) = silu(x)
        Rule { name: "silu-from-sigmoid", search: Search::Local(silu_from_sigmoid) },
        // exp(x − max(x)) / Σ exp(x − max(x)) = softmax(x)   (also without the max)
        Rule { name: "softmax-from-exp", search: Search::Local(softmax_from_exp) },
        // (x − mean) / √(mean((x − mean)²) + ε) · γ + β = layer_norm(x, γ, β)
        Rule { name: "layer-norm-from-moments", search: Search::Local(layer_norm_from_moments) },
    ]
}

/// `c` holds `clip(x + 3, 0, 6)` (or relu6(x + 3)); returns x.
fn relu6_of_x_plus_3(eg: &EG, c: Id) -> Vec<Id> {
    ops(eg, c)
        .filter_map(|(o, ch)| match o {
            Op::Unary(UnaryOp::Relu6) => Some(ch[0]),
            Op::Unary(UnaryOp::Clip { min, max }) if *min == 0.0 && *max == 6.0 => Some(ch[0]),
            _ => None,
        })
        .flat_map(|inner| binary_args(eg, inner, Add))
        .filter(|(_, three)| is_scalar(eg, *three, 3.0))
        .map(|(x, _)| x)
        .collect()
}

/// `c` is `v / 6` or `v · (1/6)`; returns v.
fn over_six(eg: &EG, c: Id) -> Vec<Id> {
    let mut out: Vec<Id> = binary_args(eg, c, Div)
        .into_iter()
        .filter(|(_, s)| is_scalar(eg, *s, 6.0))
        .map(|(v, _)| v)
        .collect();
    out.extend(
        binary_args(eg, c, Mul)
            .into_iter()
            .filter(|(_, s)| is_scalar(eg, *s, 1.0 / 6.0))
            .map(|(v, _)| v),
    );
    out
}

fn hardswish_from_clip(eg: &EG, id: Id, o: &Op, _ch: &[Id]) -> Vec<Rewrite> {
    if !matches!(o, Op::Binary(Div | Mul)) {
        return vec![];
    }
    let mut out = Vec::new();
    for prod in over_six(eg, id) {
        for (x, gate) in binary_args(eg, prod, Mul) {
            if relu6_of_x_plus_3(eg, gate)
                .iter()
                .any(|&x2| same(eg, x, x2))
            {
                out.push(rewrite(
                    id,
                    op(Op::Unary(UnaryOp::HardSwish), vec![class(x)]),
                ));
            }
        }
    }
    out
}

fn is_paddle_hardsigmoid(u: &UnaryOp) -> bool {
    matches!(u, UnaryOp::HardSigmoid { alpha, beta } if (alpha - 1.0 / 6.0).abs() < 1e-6 && (beta - 0.5).abs() < 1e-6)
}

fn hardswish_from_hardsigmoid(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(Mul) {
        return vec![];
    }
    both(ch)
        .into_iter()
        .filter(|&(x, g)| unary_arg(eg, g, is_paddle_hardsigmoid).is_some_and(|x2| same(eg, x, x2)))
        .map(|(x, _)| rewrite(id, op(Op::Unary(UnaryOp::HardSwish), vec![class(x)])))
        .collect()
}

fn hardsigmoid_from_clip(eg: &EG, id: Id, o: &Op, _ch: &[Id]) -> Vec<Rewrite> {
    if !matches!(o, Op::Binary(Div | Mul)) {
        return vec![];
    }
    over_six(eg, id)
        .into_iter()
        .flat_map(|v| relu6_of_x_plus_3(eg, v))
        .map(|x| {
            rewrite(
                id,
                op(
                    Op::Unary(UnaryOp::HardSigmoid {
                        alpha: 1.0 / 6.0,
                        beta: 0.5,
                    }),
                    vec![class(x)],
                ),
            )
        })
        .collect()
}

fn hardsigmoid_from_affine(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    let Op::Unary(UnaryOp::Clip { min, max }) = o else {
        return vec![];
    };
    if *min != 0.0 || *max != 1.0 {
        return vec![];
    }
    let mut out = Vec::new();
    for (ax, beta) in binary_args(eg, ch[0], Add) {
        let Some(b) = scalar(eg, beta) else { continue };
        for (x, alpha) in binary_args(eg, ax, Mul) {
            if let Some(a) = scalar(eg, alpha).filter(|_| ty(eg, x) == ty(eg, id)) {
                out.push(rewrite(
                    id,
                    op(
                        Op::Unary(UnaryOp::HardSigmoid { alpha: a, beta: b }),
                        vec![class(x)],
                    ),
                ));
            }
        }
    }
    out
}

/// `e` is `erf(x / √2) + 1` (or `erf(x · 1/√2) + 1`) for this x.
fn is_erf_factor(eg: &EG, e: Id, x: Id) -> bool {
    binary_args(eg, e, Add)
        .into_iter()
        .filter(|(_, one)| is_scalar(eg, *one, 1.0))
        .any(|(erf, _)| {
            unary_arg(eg, erf, |u| *u == UnaryOp::Erf).is_some_and(|z| {
                binary_args(eg, z, Div)
                    .iter()
                    .any(|&(x2, s)| same(eg, x, x2) && is_scalar(eg, s, std::f64::consts::SQRT_2))
                    || binary_args(eg, z, Mul).iter().any(|&(x2, s)| {
                        same(eg, x, x2) && is_scalar(eg, s, std::f64::consts::FRAC_1_SQRT_2)
                    })
            })
        })
}

/// `p` is x³ as `pow(x, 3)`, `x·x·x` or `x·(x·x)`.
fn is_cube(eg: &EG, p: Id, x: Id) -> bool {
    binary_args(eg, p, Pow)
        .iter()
        .any(|&(b, e)| same(eg, b, x) && is_scalar(eg, e, 3.0))
        || binary_args(eg, p, Mul).iter().any(|&(a, sq)| {
            same(eg, a, x)
                && binary_args(eg, sq, Mul)
                    .iter()
                    .any(|&(u, v)| same(eg, u, x) && same(eg, v, x))
        })
}

/// `e` is `tanh(√(2/π) · (x + 0.044715 · x³)) + 1` for this x.
fn is_tanh_factor(eg: &EG, e: Id, x: Id) -> bool {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    binary_args(eg, e, Add)
        .into_iter()
        .filter(|(_, one)| is_scalar(eg, *one, 1.0))
        .any(|(t, _)| {
            unary_arg(eg, t, |u| *u == UnaryOp::Tanh).is_some_and(|arg| {
                binary_args(eg, arg, Mul)
                    .into_iter()
                    .filter(|(_, k)| is_scalar(eg, *k, c))
                    .any(|(s, _)| {
                        binary_args(eg, s, Add)
                            .into_iter()
                            .filter(|(x2, _)| same(eg, *x2, x))
                            .any(|(_, cubic)| {
                                binary_args(eg, cubic, Mul)
                                    .iter()
                                    .any(|&(p, k)| is_scalar(eg, k, 0.044715) && is_cube(eg, p, x))
                            })
                    })
            })
        })
}

fn gelu_like(
    eg: &EG,
    id: Id,
    o: &Op,
    ch: &[Id],
    factor: fn(&EG, Id, Id) -> bool,
    tanh: bool,
) -> Vec<Rewrite> {
    if *o != Op::Binary(Mul) {
        return vec![];
    }
    let mut xs = Vec::new();
    for (a, b) in both(ch) {
        // (x · F) · 0.5
        if is_scalar(eg, b, 0.5) {
            xs.extend(
                binary_args(eg, a, Mul)
                    .into_iter()
                    .filter(|&(x, f)| factor(eg, f, x))
                    .map(|(x, _)| x),
            );
        }
        // (x · 0.5) · F
        xs.extend(
            binary_args(eg, a, Mul)
                .into_iter()
                .filter(|&(x, h)| is_scalar(eg, h, 0.5) && factor(eg, b, x))
                .map(|(x, _)| x),
        );
    }
    xs.into_iter()
        .map(|x| rewrite(id, op(Op::Unary(UnaryOp::Gelu { tanh }), vec![class(x)])))
        .collect()
}

fn gelu_from_erf(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    gelu_like(eg, id, o, ch, is_erf_factor, false)
}

fn gelu_from_tanh(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    gelu_like(eg, id, o, ch, is_tanh_factor, true)
}

fn silu_from_sigmoid(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(Mul) {
        return vec![];
    }
    both(ch)
        .into_iter()
        .filter(|&(x, s)| {
            unary_arg(eg, s, |u| *u == UnaryOp::Sigmoid).is_some_and(|x2| same(eg, x, x2))
        })
        .map(|(x, _)| rewrite(id, op(Op::Unary(UnaryOp::Silu), vec![class(x)])))
        .collect()
}

/// The single axis of a keepdims reduction of `op` in class `c`, with its operand.
fn reduce_one_axis(eg: &EG, c: Id, want: ReduceOp) -> Vec<(Id, i64)> {
    ops(eg, c)
        .filter_map(|(o, ch)| match o {
            Op::Reduce(r) if r.op == want && r.keepdims && r.axes.len() == 1 => {
                Some((ch[0], r.axes[0]))
            }
            _ => None,
        })
        .collect()
}

fn softmax_from_exp(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(Div) {
        return vec![];
    }
    let (e, s) = (ch[0], ch[1]);
    let rank = ty(eg, e).rank() as i64;
    let mut out = Vec::new();
    for (e2, axis) in reduce_one_axis(eg, s, ReduceOp::Sum) {
        if !same(eg, e, e2) {
            continue;
        }
        let Some(z) = unary_arg(eg, e, |u| *u == UnaryOp::Exp) else {
            continue;
        };
        let norm = |a: i64| if a < 0 { a + rank } else { a };
        // exp(x − max(x)) or exp(x)
        let mut xs: Vec<Id> = binary_args(eg, z, Sub)
            .into_iter()
            .filter(|&(x, m)| {
                reduce_one_axis(eg, m, ReduceOp::Max)
                    .iter()
                    .any(|&(x2, a)| same(eg, x, x2) && norm(a) == norm(axis))
            })
            .map(|(x, _)| x)
            .collect();
        xs.push(z);
        for x in xs {
            if ty(eg, x) == ty(eg, id) {
                out.push(rewrite(id, op(Op::Softmax { axis }, vec![class(x)])));
            }
        }
    }
    out
}

fn layer_norm_from_moments(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    if *o != Op::Binary(Add) {
        return vec![];
    }
    let t = ty(eg, id);
    let last = t.shape.0.last().cloned();
    let vec_of_last =
        |c: Id| ty(eg, c).shape.0.len() == 1 && ty(eg, c).shape.0.last() == last.as_ref();
    let mut out = Vec::new();
    for (scaled, beta) in both(ch) {
        if !vec_of_last(beta) {
            continue;
        }
        for (normed, gamma) in binary_args(eg, scaled, Mul) {
            if !vec_of_last(gamma) {
                continue;
            }
            for (d, s) in binary_args(eg, normed, Div) {
                for (x, mean) in binary_args(eg, d, Sub) {
                    let centred = reduce_one_axis(eg, mean, ReduceOp::Mean)
                        .iter()
                        .any(|&(x2, a)| same(eg, x, x2) && (a == -1 || a == t.rank() as i64 - 1));
                    if !centred || ty(eg, x) != t {
                        continue;
                    }
                    let Some(ve) = unary_arg(eg, s, |u| *u == UnaryOp::Sqrt) else {
                        continue;
                    };
                    for (v, eps) in binary_args(eg, ve, Add) {
                        let Some(eps) = scalar(eg, eps) else { continue };
                        let var_ok =
                            reduce_one_axis(eg, v, ReduceOp::Mean)
                                .iter()
                                .any(|&(sq, a)| {
                                    (a == -1 || a == t.rank() as i64 - 1)
                                        && (binary_args(eg, sq, Pow).iter().any(|&(d2, two)| {
                                            same(eg, d, d2) && is_scalar(eg, two, 2.0)
                                        }) || binary_args(eg, sq, Mul)
                                            .iter()
                                            .any(|&(u, w)| same(eg, u, d) && same(eg, w, d)))
                                });
                        if var_ok {
                            out.push(rewrite(
                                id,
                                op(
                                    Op::LayerNorm { axis: -1, eps },
                                    vec![class(x), class(gamma), class(beta)],
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}
