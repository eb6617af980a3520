//! Elementwise ops: unary activations, binary arithmetic with broadcasting, where, cast,
//! dropout (the forward mask, replayed).
//!
//! Every derivative is the exact one of the reference interpreter's definition
//! (`runtime/src/interp/elementwise.rs`); at a kink (relu at 0, clip at a bound, max at a
//! tie) the rule picks one side, as every framework does.

use super::InputGrads;
use crate::autodiff::{AutodiffError, GradCx};
use oar_ir::op::{BinaryOp, Op, UnaryOp};
use oar_ir::{NodeId, ValueRef};
use std::f64::consts::PI;

type G = Result<ValueRef, AutodiffError>;

/// The cotangent of a unary op's input `x` given its output `y = u(x)` and the output's
/// cotangent `g`. Shared with the fused epilogues (the activation of `fused_matmul`).
pub(crate) fn unary_grad(
    cx: &mut GradCx,
    u: UnaryOp,
    x: ValueRef,
    y: ValueRef,
    g: ValueRef,
    of: NodeId,
) -> G {
    match u {
        UnaryOp::Neg => cx.scale(g, -1.0, of),
        UnaryOp::Exp => cx.mul(g, y, of),
        UnaryOp::Log => cx.div(g, x, of),
        // d sqrt(x) = 1 / (2 sqrt(x)).
        UnaryOp::Sqrt => {
            let h = cx.scale(g, 0.5, of)?;
            cx.div(h, y, of)
        }
        // d x^(-1/2) = -x^(-3/2) / 2 = -y³ / 2.
        UnaryOp::Rsqrt => {
            let y2 = cx.mul(y, y, of)?;
            let y3 = cx.mul(y2, y, of)?;
            let d = cx.scale(y3, -0.5, of)?;
            cx.mul(g, d, of)
        }
        UnaryOp::Tanh => {
            let y2 = cx.mul(y, y, of)?;
            let d = cx.rsub_scalar(1.0, y2, of)?;
            cx.mul(g, d, of)
        }
        // d erf(x) = 2/√π · exp(−x²).
        UnaryOp::Erf => {
            let x2 = cx.mul(x, x, of)?;
            let nx2 = cx.scale(x2, -1.0, of)?;
            let e = cx.unary(UnaryOp::Exp, nx2, of)?;
            let d = cx.scale(e, 2.0 / PI.sqrt(), of)?;
            cx.mul(g, d, of)
        }
        UnaryOp::Abs => {
            let pos = cx.compare_scalar(x, true, 0.0, of)?;
            let ng = cx.scale(g, -1.0, of)?;
            cx.select(pos, g, ng, of)
        }
        UnaryOp::Relu => {
            let pos = cx.compare_scalar(x, true, 0.0, of)?;
            cx.keep_where(pos, g, of)
        }
        UnaryOp::Relu6 => between(cx, x, 0.0, 6.0, g, of),
        UnaryOp::Clip { min, max } => between(cx, x, min, max, g, of),
        // The interpreter keeps x where x >= 0.
        UnaryOp::LeakyRelu { alpha } => {
            let neg = cx.compare_scalar(x, false, 0.0, of)?;
            let ag = cx.scale(g, alpha, of)?;
            cx.select(neg, ag, g, of)
        }
        UnaryOp::Sigmoid => {
            let one_minus = cx.rsub_scalar(1.0, y, of)?;
            let d = cx.mul(y, one_minus, of)?;
            cx.mul(g, d, of)
        }
        // y = clip(αx + β, 0, 1): slope α strictly inside, read off y itself.
        UnaryOp::HardSigmoid { alpha, .. } => {
            let ag = cx.scale(g, alpha, of)?;
            between(cx, y, 0.0, 1.0, ag, of)
        }
        // y = x · clip((x + 3)/6, 0, 1): 0 below −3, 1 above 3, (2x + 3)/6 between.
        UnaryOp::HardSwish => {
            let x2 = cx.scale(x, 2.0 / 6.0, of)?;
            let mid = cx.add_scalar(x2, 0.5, of)?;
            let gm = cx.mul(g, mid, of)?;
            let above = cx.compare_scalar(x, true, 3.0, of)?;
            let upper = cx.select(above, g, gm, of)?;
            let below = cx.compare_scalar(x, false, -3.0, of)?;
            let z = cx.scalar_for(0.0, g, of)?;
            cx.select(below, z, upper, of)
        }
        // y = x Φ(x): Φ(x) + x φ(x).
        UnaryOp::Gelu { tanh: false } => {
            let xs = cx.scale(x, std::f64::consts::FRAC_1_SQRT_2, of)?;
            let erf = cx.unary(UnaryOp::Erf, xs, of)?;
            let e1 = cx.add_scalar(erf, 1.0, of)?;
            let cdf = cx.scale(e1, 0.5, of)?;
            let x2 = cx.mul(x, x, of)?;
            let nx2 = cx.scale(x2, -0.5, of)?;
            let ex = cx.unary(UnaryOp::Exp, nx2, of)?;
            let pdf = cx.scale(ex, 1.0 / (2.0 * PI).sqrt(), of)?;
            let xpdf = cx.mul(x, pdf, of)?;
            let d = cx.add(cdf, xpdf, of)?;
            cx.mul(g, d, of)
        }
        // y = x/2 · (1 + tanh(c(x + kx³))): (1 + t)/2 + x/2 · (1 − t²) · c(1 + 3kx²).
        UnaryOp::Gelu { tanh: true } => {
            let (c, k) = ((2.0 / PI).sqrt(), 0.044715);
            let x2 = cx.mul(x, x, of)?;
            let x3 = cx.mul(x2, x, of)?;
            let kx3 = cx.scale(x3, k, of)?;
            let inner = cx.add(x, kx3, of)?;
            let arg = cx.scale(inner, c, of)?;
            let t = cx.unary(UnaryOp::Tanh, arg, of)?;
            let t1 = cx.add_scalar(t, 1.0, of)?;
            let left = cx.scale(t1, 0.5, of)?;
            let t2 = cx.mul(t, t, of)?;
            let sech2 = cx.rsub_scalar(1.0, t2, of)?;
            let kx2 = cx.scale(x2, 3.0 * k * c, of)?;
            let darg = cx.add_scalar(kx2, c, of)?;
            let hx = cx.scale(x, 0.5, of)?;
            let r1 = cx.mul(hx, sech2, of)?;
            let right = cx.mul(r1, darg, of)?;
            let d = cx.add(left, right, of)?;
            cx.mul(g, d, of)
        }
        // y = x σ(x): σ (1 + x (1 − σ)).
        UnaryOp::Silu => {
            let s = cx.unary(UnaryOp::Sigmoid, x, of)?;
            let one_minus = cx.rsub_scalar(1.0, s, of)?;
            let xs = cx.mul(x, one_minus, of)?;
            let f = cx.add_scalar(xs, 1.0, of)?;
            let d = cx.mul(s, f, of)?;
            cx.mul(g, d, of)
        }
        // y = x tanh(sp), sp = softplus(x) = log(1 + eˣ), sp' = σ(x):
        // dy/dx = t + x (1 − t²) σ(x) with t = tanh(sp) recomputed (not y / x, which fails
        // at x = 0). For large x, eˣ overflows to ∞ and t = tanh(∞) = 1, the limit.
        UnaryOp::Mish => {
            let s = cx.unary(UnaryOp::Sigmoid, x, of)?;
            let e = cx.unary(UnaryOp::Exp, x, of)?;
            let e1 = cx.add_scalar(e, 1.0, of)?;
            let sp = cx.unary(UnaryOp::Log, e1, of)?;
            let t = cx.unary(UnaryOp::Tanh, sp, of)?;
            let t2 = cx.mul(t, t, of)?;
            let sech2 = cx.rsub_scalar(1.0, t2, of)?;
            let xs = cx.mul(x, sech2, of)?;
            let xss = cx.mul(xs, s, of)?;
            let d = cx.add(t, xss, of)?;
            cx.mul(g, d, of)
        }
    }
}

/// `g` where `lo < v < hi`, zero elsewhere; infinite bounds are not compared.
fn between(cx: &mut GradCx, v: ValueRef, lo: f64, hi: f64, g: ValueRef, of: NodeId) -> G {
    let mut out = g;
    if hi.is_finite() {
        let m = cx.compare_scalar(v, false, hi, of)?;
        out = cx.keep_where(m, out, of)?;
    }
    if lo.is_finite() {
        let m = cx.compare_scalar(v, true, lo, of)?;
        out = cx.keep_where(m, out, of)?;
    }
    Ok(out)
}

pub(super) fn unary(
    cx: &mut GradCx,
    node: NodeId,
    u: UnaryOp,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), Some(true)) = (gy[0], want.first().copied()) else {
        return Ok(vec![None]);
    };
    let x = cx.graph().node(node).inputs[0];
    let y = ValueRef::new(node, 0);
    Ok(vec![Some(unary_grad(cx, u, x, y, g, node)?)])
}

pub(super) fn binary(
    cx: &mut GradCx,
    node: NodeId,
    b: BinaryOp,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let Some(g) = gy[0] else {
        return Ok(vec![None, None]);
    };
    let (a, bv) = {
        let n = cx.graph().node(node);
        (n.inputs[0], n.inputs[1])
    };
    let y = ValueRef::new(node, 0);
    // The cotangents at the broadcast (output) shape; `None` for no gradient.
    let (ga, gb): (Option<ValueRef>, Option<ValueRef>) = match b {
        BinaryOp::Add => (Some(g), Some(g)),
        BinaryOp::Sub => (Some(g), Some(cx.scale(g, -1.0, node)?)),
        BinaryOp::Mul => (
            want[0].then(|| cx.mul(g, bv, node)).transpose()?,
            want[1].then(|| cx.mul(g, a, node)).transpose()?,
        ),
        // y = a / b: dy/da = 1/b, dy/db = −y/b.
        BinaryOp::Div => {
            let ga = cx.div(g, bv, node)?;
            let gb = if want[1] {
                let gyb = cx.mul(ga, y, node)?;
                Some(cx.scale(gyb, -1.0, node)?)
            } else {
                None
            };
            (Some(ga), gb)
        }
        // y = a^b: dy/da = b a^(b−1), dy/db = y log a (defined for a > 0).
        BinaryOp::Pow => {
            let ga = if want[0] {
                let bm1 = cx.add_scalar(bv, -1.0, node)?;
                let p = cx.binary(BinaryOp::Pow, a, bm1, node)?;
                let d = cx.mul(bv, p, node)?;
                Some(cx.mul(g, d, node)?)
            } else {
                None
            };
            let gb = if want[1] {
                let la = cx.unary(UnaryOp::Log, a, node)?;
                let d = cx.mul(y, la, node)?;
                Some(cx.mul(g, d, node)?)
            } else {
                None
            };
            (ga, gb)
        }
        // The winner takes the gradient; `a` wins ties (as the interpreter's max/min).
        BinaryOp::Max | BinaryOp::Min => {
            let cmp = if b == BinaryOp::Max {
                BinaryOp::Less
            } else {
                BinaryOp::Greater
            };
            let b_wins = cx.binary(cmp, a, bv, node)?;
            let z = cx.scalar_for(0.0, g, node)?;
            (
                Some(cx.select(b_wins, z, g, node)?),
                Some(cx.select(b_wins, g, z, node)?),
            )
        }
        BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => (None, None),
    };
    let mut out = Vec::with_capacity(2);
    for (v, gv, w) in [(a, ga, want[0]), (bv, gb, want[1])] {
        out.push(match (gv, w) {
            (Some(gv), true) => {
                let t = cx.ty(v);
                Some(cx.unbroadcast(gv, &t, node)?)
            }
            _ => None,
        });
    }
    Ok(out)
}

pub(super) fn select(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let Some(g) = gy[0] else {
        return Ok(vec![None, None, None]);
    };
    let ins = cx.graph().node(node).inputs.clone();
    let z = cx.scalar_for(0.0, g, node)?;
    let mut out = vec![None];
    for (k, take_true) in [(1, true), (2, false)] {
        if !want[k] {
            out.push(None);
            continue;
        }
        let picked = if take_true {
            cx.select(ins[0], g, z, node)?
        } else {
            cx.select(ins[0], z, g, node)?
        };
        let t = cx.ty(ins[k]);
        out.push(Some(cx.unbroadcast(picked, &t, node)?));
    }
    Ok(out)
}

pub(super) fn cast(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), Some(true)) = (gy[0], want.first().copied()) else {
        return Ok(vec![None]);
    };
    let x = cx.graph().node(node).inputs[0];
    let from = cx.ty(x).dtype;
    if !from.is_float() {
        return Ok(vec![None]);
    }
    // The cotangent goes back to the input's precision.
    Ok(vec![Some(cx.emit(Op::Cast { to: from }, vec![g], node)?)])
}

/// Dropout is linear in its input with the mask as the coefficient, so its backward is the
/// same dropout on the cotangent, drawing the forward node's mask (`mask_of`): the scale
/// `1/(1−p)` (or 1) in training, the inference scale at inference, both as the forward.
pub(super) fn dropout(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), Some(true)) = (gy[0], want.first().copied()) else {
        return Ok(vec![None]);
    };
    let n = cx.graph().node(node);
    let Op::Dropout { p, mode, mask_of } = &n.op else {
        return Err(super::no_rule(cx, node, "internal: not a dropout"));
    };
    let replay = Op::Dropout {
        p: *p,
        mode: *mode,
        mask_of: Some(mask_of.clone().unwrap_or_else(|| n.name.clone())),
    };
    Ok(vec![Some(cx.emit(replay, vec![g], node)?)])
}
