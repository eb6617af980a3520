//! Normalisations, softmax, causal masking and reductions.
//!
//! The normalisations share one identity: for `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` with
//! batch statistics over a set of axes, `dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))` where `ĝ` is
//! the cotangent of `x̂` (the output's times the scale).

use super::InputGrads;
use crate::autodiff::{AutodiffError, GradCx};
use oar_ir::dist::ReduceOp;
use oar_ir::op::{norm_axis, BinaryOp, Op, UnaryOp};
use oar_ir::{NodeId, ValueRef};

type G = Result<ValueRef, AutodiffError>;

fn axis_of(cx: &GradCx, node: NodeId, axis: i64, rank: usize) -> Result<usize, AutodiffError> {
    norm_axis(axis, rank).map_err(|e| super::no_rule(cx, node, &e.0))
}

/// `x̂` and `r` of `x` normalised over `axes` (kept dims) with `eps`.
fn standardize(
    cx: &mut GradCx,
    x: ValueRef,
    axes: &[i64],
    eps: f64,
    of: NodeId,
) -> Result<(ValueRef, ValueRef), AutodiffError> {
    let mu = cx.reduce_keep(ReduceOp::Mean, x, axes.to_vec(), of)?;
    let xc = cx.sub(x, mu, of)?;
    let sq = cx.mul(xc, xc, of)?;
    let var = cx.reduce_keep(ReduceOp::Mean, sq, axes.to_vec(), of)?;
    let ve = cx.add_scalar(var, eps, of)?;
    let r = cx.unary(UnaryOp::Rsqrt, ve, of)?;
    Ok((cx.mul(xc, r, of)?, r))
}

/// `r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))` over `axes`.
fn normalized_backward(
    cx: &mut GradCx,
    ghat: ValueRef,
    xhat: ValueRef,
    r: ValueRef,
    axes: &[i64],
    of: NodeId,
) -> G {
    let m1 = cx.reduce_keep(ReduceOp::Mean, ghat, axes.to_vec(), of)?;
    let gx = cx.mul(ghat, xhat, of)?;
    let m2 = cx.reduce_keep(ReduceOp::Mean, gx, axes.to_vec(), of)?;
    let t = cx.mul(xhat, m2, of)?;
    let d1 = cx.sub(ghat, m1, of)?;
    let d = cx.sub(d1, t, of)?;
    cx.mul(d, r, of)
}

/// Adds `g` to an optional accumulated cotangent.
fn accumulate(cx: &mut GradCx, acc: Option<ValueRef>, g: ValueRef, of: NodeId) -> G {
    match acc {
        Some(a) => cx.add(a, g, of),
        None => Ok(g),
    }
}

pub(super) fn batch_norm(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let Op::BatchNorm { eps, momentum } = n.op else {
        return Err(super::no_rule(cx, node, "internal: not a batch_norm"));
    };
    let [x, scale, rmean, rvar] = [0, 1, 3, 4].map(|i| n.inputs[i]);
    let xd = cx.dims(x);
    if xd.len() < 2 {
        return Err(super::no_rule(
            cx,
            node,
            "batch_norm needs an input of rank ≥ 2",
        ));
    }
    let c = xd[1];
    let axes: Vec<i64> = (0..xd.len() as i64).filter(|&i| i != 1).collect();
    let count = xd.iter().product::<u64>() / c.max(1);
    // Per-channel vectors broadcast as [1, C, 1, …].
    let cshape: Vec<u64> = (0..xd.len()).map(|i| if i == 1 { c } else { 1 }).collect();
    let scale_c = cx.reshape(scale, &cshape, node)?;
    let mut out = vec![None; 5];
    match momentum {
        Some(m) => {
            // Training form: normalised with the batch statistics, which depend on x.
            let (xhat, r) = standardize(cx, x, &axes, eps, node)?;
            let mut gx = None;
            if let Some(g) = gy[0] {
                let ghat = cx.mul(g, scale_c, node)?;
                gx = Some(normalized_backward(cx, ghat, xhat, r, &axes, node)?);
                if want[1] {
                    let gxh = cx.mul(g, xhat, node)?;
                    out[1] = Some(cx.reduce_sum(gxh, axes.clone(), false, node)?);
                }
                if want[2] {
                    out[2] = Some(cx.reduce_sum(g, axes.clone(), false, node)?);
                }
            }
            // new mean = m·running + (1−m)·μ: dμ/dx = 1/count.
            if let Some(gm) = gy.get(1).copied().flatten() {
                let gmc = cx.reshape(gm, &cshape, node)?;
                let d = cx.scale(gmc, (1.0 - m) / count as f64, node)?;
                let d = cx.broadcast_to(d, &xd, node)?;
                gx = Some(accumulate(cx, gx, d, node)?);
            }
            // new var = m·running + (1−m)·σ²: dσ²/dx = 2(x − μ)/count.
            if let Some(gv) = gy.get(2).copied().flatten() {
                let mu = cx.reduce_keep(ReduceOp::Mean, x, axes.clone(), node)?;
                let xc = cx.sub(x, mu, node)?;
                let gvc = cx.reshape(gv, &cshape, node)?;
                let k = cx.scale(gvc, 2.0 * (1.0 - m) / count as f64, node)?;
                let d = cx.mul(xc, k, node)?;
                gx = Some(accumulate(cx, gx, d, node)?);
            }
            if want[0] {
                out[0] = gx;
            }
        }
        None => {
            // Inference form: an affine map per channel of the running statistics.
            let Some(g) = gy[0] else { return Ok(out) };
            let ve = cx.add_scalar(rvar, eps, node)?;
            let r = cx.unary(UnaryOp::Rsqrt, ve, node)?;
            let r_c = cx.reshape(r, &cshape, node)?;
            let m_c = cx.reshape(rmean, &cshape, node)?;
            let xc = cx.sub(x, m_c, node)?;
            let xhat = cx.mul(xc, r_c, node)?;
            let gxh = cx.mul(g, xhat, node)?;
            let sum_gxh = cx.reduce_sum(gxh, axes.clone(), false, node)?;
            let sum_g = cx.reduce_sum(g, axes.clone(), false, node)?;
            if want[0] {
                let k = cx.mul(scale_c, r_c, node)?;
                out[0] = Some(cx.mul(g, k, node)?);
            }
            if want[1] {
                out[1] = Some(sum_gxh);
            }
            if want[2] {
                out[2] = Some(sum_g);
            }
            // The running statistics are buffers (estimates of the data's statistics),
            // not trained: they get no gradient, as in every framework.
        }
    }
    Ok(out)
}

pub(super) fn layer_norm(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let Some(g) = gy[0] else {
        return Ok(vec![None; 3]);
    };
    let Op::LayerNorm { axis, eps } = n.op else {
        return Err(super::no_rule(cx, node, "internal: not a layer_norm"));
    };
    let (x, scale, bias) = (n.inputs[0], n.inputs[1], n.inputs[2]);
    let rank = cx.dims(x).len();
    let a = axis_of(cx, node, axis, rank)?;
    let axes: Vec<i64> = (a as i64..rank as i64).collect();
    let (xhat, r) = standardize(cx, x, &axes, eps, node)?;
    let mut out = vec![None; 3];
    if want[0] {
        let ghat = cx.mul(g, scale, node)?;
        out[0] = Some(normalized_backward(cx, ghat, xhat, r, &axes, node)?);
    }
    if want[1] {
        let gxh = cx.mul(g, xhat, node)?;
        let t = cx.ty(scale);
        out[1] = Some(cx.unbroadcast(gxh, &t, node)?);
    }
    if want[2] {
        let t = cx.ty(bias);
        out[2] = Some(cx.unbroadcast(g, &t, node)?);
    }
    Ok(out)
}

pub(super) fn softmax(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), Some(true)) = (gy[0], want.first().copied()) else {
        return Ok(vec![None]);
    };
    let n = cx.graph().node(node).clone();
    let y = ValueRef::new(node, 0);
    let rank = cx.dims(y).len();
    let gx = if let Op::Softmax { axis } = n.op {
        // dx = y ⊙ (g − Σ g⊙y).
        let a = axis_of(cx, node, axis, rank)? as i64;
        let gy_ = cx.mul(g, y, node)?;
        let s = cx.reduce_sum(gy_, vec![a], true, node)?;
        let d = cx.sub(g, s, node)?;
        cx.mul(y, d, node)?
    } else if let Op::LogSoftmax { axis } = n.op {
        // dx = g − exp(y) ⊙ Σ g.
        let a = axis_of(cx, node, axis, rank)? as i64;
        let s = cx.reduce_sum(g, vec![a], true, node)?;
        let p = cx.unary(UnaryOp::Exp, y, node)?;
        let ps = cx.mul(p, s, node)?;
        cx.sub(g, ps, node)?
    } else {
        return Err(super::no_rule(
            cx,
            node,
            "internal: routed to the softmax rule",
        ));
    };
    Ok(vec![Some(gx)])
}

/// Masked positions are constants (`fill`): they pass no gradient.
pub(super) fn causal_mask(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), Some(true)) = (gy[0], want.first().copied()) else {
        return Ok(vec![None]);
    };
    Ok(vec![Some(cx.emit(
        Op::CausalMask { fill: 0.0 },
        vec![g],
        node,
    )?)])
}

pub(super) fn reduce(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), Some(true)) = (gy[0], want.first().copied()) else {
        return Ok(vec![None]);
    };
    let n = cx.graph().node(node).clone();
    let Op::Reduce(r) = &n.op else {
        return Err(super::no_rule(cx, node, "internal: not a reduction"));
    };
    let x = n.inputs[0];
    let xd = cx.dims(x);
    let mut axes = Vec::new();
    for &a in &r.axes {
        axes.push(axis_of(cx, node, a, xd.len())?);
    }
    if axes.is_empty() {
        axes = (0..xd.len()).collect();
    }
    // The output with the reduced dims kept as 1s, so it broadcasts against x.
    let kept: Vec<u64> = (0..xd.len())
        .map(|i| if axes.contains(&i) { 1 } else { xd[i] })
        .collect();
    let gk = cx.reshape(g, &kept, node)?;
    let gx = match r.op {
        ReduceOp::Sum => cx.broadcast_to(gk, &xd, node)?,
        ReduceOp::Mean => {
            let count: u64 = axes.iter().map(|&a| xd[a]).product();
            let s = cx.scale(gk, 1.0 / count.max(1) as f64, node)?;
            cx.broadcast_to(s, &xd, node)?
        }
        // The extremum's positions (equality mask) take the gradient; ties all do.
        ReduceOp::Max | ReduceOp::Min => {
            let yk = cx.reshape(ValueRef::new(node, 0), &kept, node)?;
            let hit = cx.binary(BinaryOp::Equal, x, yk, node)?;
            let gb = cx.broadcast_to(gk, &xd, node)?;
            cx.keep_where(hit, gb, node)?
        }
        // d Πx / dx_i is the product of the others: Πx / x_i without zeros; with one zero
        // only that position gets the product of the non-zeros; with two or more, none.
        ReduceOp::Prod => {
            let axes_i: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
            let zero = cx.scalar_for(0.0, x, node)?;
            let is_zero = cx.binary(BinaryOp::Equal, x, zero, node)?;
            let one = cx.scalar_for(1.0, x, node)?;
            let nz = cx.select(is_zero, one, x, node)?;
            let p_nz = cx.reduce_keep(ReduceOp::Prod, nz, axes_i.clone(), node)?;
            let zf = cx.select(is_zero, one, zero, node)?;
            let zeros = cx.reduce_keep(ReduceOp::Sum, zf, axes_i, node)?;
            let none = cx.binary(BinaryOp::Equal, zeros, zero, node)?;
            let just_one = cx.binary(BinaryOp::Equal, zeros, one, node)?;
            let at_zero = cx.keep_where(just_one, p_nz, node)?;
            let q = cx.div(p_nz, nz, node)?;
            let elsewhere = cx.keep_where(none, q, node)?;
            let d = cx.select(is_zero, at_zero, elsewhere, node)?;
            let gb = cx.broadcast_to(gk, &xd, node)?;
            cx.mul(gb, d, node)?
        }
    };
    Ok(vec![Some(gx)])
}
