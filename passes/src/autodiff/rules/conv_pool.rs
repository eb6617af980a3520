//! Convolutions (data and weight gradients, depthwise included), pooling and resize.
//!
//! - conv2d: `dx = conv_transpose2d(dy, w)` with the same stride, padding, dilation and
//!   groups and the `output_padding` that recovers `x`'s size (the rows a strided window
//!   never reached); `dw = conv2d_grad_weight(x, dy)`; `db = Σ dy` over N, H, W.
//! - fused_conv2d: the epilogue first (activation derivative on the recomputed
//!   pre-activation, the residual's share), then as conv2d.
//! - conv_transpose2d: its data gradient is a conv2d of `dy` with the same weight, its
//!   weight gradient `conv2d_grad_weight(dy, x)` (the roles of input and output swap).
//! - pooling: `pool_grad`; global pooling is a window over the whole plane.
//! - resize (nearest, bilinear): two matmuls with the transposed tap matrices.

use super::elementwise::unary_grad;
use super::{no_rule, InputGrads};
use crate::autodiff::{AutodiffError, GradCx};
use oar_ir::op::{
    ConvAttrs, ConvTransposeAttrs, Epilogue, GradOp, MatMulAttrs, Op, PoolAttrs, PoolKind,
};
use oar_ir::{Dim, NodeId, TensorType, ValueRef};
use oar_runtime::interp::resize_matrix;

/// The cotangent of the only output, or the error of a rule called without one.
fn only_gy(cx: &GradCx, node: NodeId, gy: &[Option<ValueRef>]) -> Result<ValueRef, AutodiffError> {
    gy.first()
        .copied()
        .flatten()
        .ok_or_else(|| no_rule(cx, node, "called without an output cotangent"))
}

fn want_at(want: &[bool], i: usize) -> bool {
    want.get(i).copied().unwrap_or(false)
}

/// `Σ g` over N, H, W: the gradient of a per-channel bias.
fn bias_grad(cx: &mut GradCx, g: ValueRef, node: NodeId) -> Result<ValueRef, AutodiffError> {
    cx.reduce_sum(g, vec![0, 2, 3], false, node)
}

/// The gradients of `conv2d(x, w)` given the output cotangent `g`.
fn conv_grads(
    cx: &mut GradCx,
    node: NodeId,
    conv: &ConvAttrs,
    g: ValueRef,
    want: &[bool],
) -> Result<(Option<ValueRef>, Option<ValueRef>), AutodiffError> {
    let ins = cx.graph().node(node).inputs.clone();
    let (x, w) = (ins[0], ins[1]);
    let (xd, wd) = (cx.dims(x), cx.dims(w));
    let (Some(&[_, _, h, wi]), Some(&[_, _, kh, kw])) = (xd.get(..4), wd.get(..4)) else {
        return Err(no_rule(cx, node, "needs NCHW input and OIHW weight"));
    };
    let dx = if want_at(want, 0) {
        // The forward covered (ho−1)·s + eff ≤ H + pads rows; the remainder is the
        // output padding that gives the transposed conv x's exact size.
        let rem = |len: u64, k: u64, i: usize| {
            let eff = conv.dilation[i] * (k - 1) + 1;
            (len + conv.padding[i] + conv.padding[i + 2] - eff) % conv.stride[i]
        };
        let t = ConvTransposeAttrs {
            conv: conv.clone(),
            output_padding: [rem(h, kh, 0), rem(wi, kw, 1)],
        };
        Some(cx.emit(Op::ConvTranspose2d(t), vec![g, w], node)?)
    } else {
        None
    };
    let dw = if want_at(want, 1) {
        let op = Op::Grad(GradOp::Conv2dWeight {
            conv: conv.clone(),
            kernel: [kh, kw],
        });
        Some(cx.emit(op, vec![x, g], node)?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// conv2d (optional bias) and fused_conv2d (bias, residual, activation).
pub(super) fn conv2d(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let g = only_gy(cx, node, gy)?;
    // The dispatch routes only convolutions here; plain conv2d is an epilogue of its bias.
    let (conv, epi) = if let Op::FusedConv2d { conv, epilogue } = &n.op {
        (conv.clone(), epilogue.clone())
    } else if let Op::Conv2d(c) = &n.op {
        let bias = n.inputs.len() > 2;
        let e = Epilogue {
            bias,
            residual: false,
            activation: None,
        };
        (c.clone(), e)
    } else {
        return Err(no_rule(cx, node, "not a convolution"));
    };
    let bias_in = epi.bias.then_some(2);
    let res_in = epi.residual.then_some(2 + usize::from(epi.bias));
    // The epilogue: y = act(conv(x, w) + b + r).
    let gz = match epi.activation {
        None => g,
        Some(act) => {
            // Recompute the pre-activation value; the forward node only has act's output.
            let mut conv_ins = vec![n.inputs[0], n.inputs[1]];
            if let Some(b) = bias_in {
                conv_ins.push(n.inputs[b]);
            }
            let mut z = cx.emit(Op::Conv2d(conv.clone()), conv_ins, node)?;
            if let Some(r) = res_in {
                z = cx.add(z, n.inputs[r], node)?;
            }
            unary_grad(cx, act, z, ValueRef::new(node, 0), g, node)?
        }
    };
    let (dx, dw) = conv_grads(cx, node, &conv, gz, want)?;
    let mut out = vec![dx, dw];
    out.resize(n.inputs.len(), None);
    if let Some(b) = bias_in.filter(|&b| want_at(want, b)) {
        out[b] = Some(bias_grad(cx, gz, node)?);
    }
    if let Some(r) = res_in.filter(|&r| want_at(want, r)) {
        let rt = cx.ty(n.inputs[r]);
        out[r] = Some(cx.unbroadcast(gz, &rt, node)?);
    }
    Ok(out)
}

pub(super) fn conv_transpose2d(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let g = only_gy(cx, node, gy)?;
    let Op::ConvTranspose2d(t) = &n.op else {
        return Err(no_rule(cx, node, "not a transposed convolution"));
    };
    let (x, w) = (n.inputs[0], n.inputs[1]);
    let mut out = vec![None; n.inputs.len()];
    if want_at(want, 0) {
        out[0] = Some(cx.emit(Op::Conv2d(t.conv.clone()), vec![g, w], node)?);
    }
    if want_at(want, 1) {
        let wd = cx.dims(w);
        let (Some(&kh), Some(&kw)) = (wd.get(2), wd.get(3)) else {
            return Err(no_rule(cx, node, "needs a 4-d weight"));
        };
        let op = Op::Grad(GradOp::Conv2dWeight {
            conv: t.conv.clone(),
            kernel: [kh, kw],
        });
        out[1] = Some(cx.emit(op, vec![g, x], node)?);
    }
    if n.inputs.len() > 2 && want_at(want, 2) {
        out[2] = Some(bias_grad(cx, g, node)?);
    }
    Ok(out)
}

/// Windowed and global max/avg pooling.
pub(super) fn pool(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let g = only_gy(cx, node, gy)?;
    if !want_at(want, 0) {
        return Ok(vec![None]);
    }
    let x = n.inputs[0];
    let dx = if let Op::Pool(p) = &n.op {
        cx.emit(Op::Grad(GradOp::Pool(p.clone())), vec![x, g], node)?
    } else if let Op::GlobalPool(kind) = &n.op {
        global_pool_grad(cx, node, *kind, x, g)?
    } else {
        return Err(no_rule(cx, node, "not a pooling"));
    };
    Ok(vec![Some(dx)])
}

/// Global pooling as one window over the whole plane: spatial dims are flattened to
/// `[N, C, S, 1]` (a no-op reshape for NCHW) so any rank ≥ 3 works.
fn global_pool_grad(
    cx: &mut GradCx,
    node: NodeId,
    kind: PoolKind,
    x: ValueRef,
    g: ValueRef,
) -> Result<ValueRef, AutodiffError> {
    let xd = cx.dims(x);
    let (Some(&nb), Some(&c)) = (xd.first(), xd.get(1)) else {
        return Err(no_rule(cx, node, "needs rank ≥ 3"));
    };
    let s: u64 = xd[2..].iter().product();
    let plane = xd.len() == 4;
    let (x4, g4) = if plane {
        (x, g)
    } else {
        (
            cx.reshape(x, &[nb, c, s, 1], node)?,
            cx.reshape(g, &[nb, c, 1, 1], node)?,
        )
    };
    let kernel = if plane { [xd[2], xd[3]] } else { [s, 1] };
    let p = PoolAttrs {
        kind,
        kernel,
        stride: [1, 1],
        padding: [0; 4],
        ceil_mode: false,
        count_include_pad: false,
    };
    let dx = cx.emit(Op::Grad(GradOp::Pool(p)), vec![x4, g4], node)?;
    if plane {
        Ok(dx)
    } else {
        cx.reshape(dx, &xd, node)
    }
}

/// Resize is separable, `y = R_h · x · R_wᵀ` per plane with the interpreter's tap matrices
/// (nearest: one-hot rows; bilinear: two taps), so `dx = R_hᵀ · dy · R_w`: two matmuls with
/// constant matrices of `[H, Ho]` and `[Wo, W]`.
pub(super) fn resize(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let g = only_gy(cx, node, gy)?;
    let Op::Resize(r) = &n.op else {
        return Err(no_rule(cx, node, "not a resize"));
    };
    if !want_at(want, 0) {
        return Ok(vec![None]);
    }
    let x = n.inputs[0];
    let (xd, gd) = (cx.dims(x), cx.dims(g));
    let (Some(&[_, _, h, w]), Some(&[_, _, ho, wo])) = (xd.get(..4), gd.get(..4)) else {
        return Err(no_rule(cx, node, "needs NCHW input"));
    };
    let dtype = cx.ty(x).dtype;
    let rh = resize_matrix(r.mode, r.coord, h as usize, ho as usize);
    let rw = resize_matrix(r.mode, r.coord, w as usize, wo as usize);
    // R_hᵀ: [H, Ho].
    let rh_t: Vec<f64> = (0..h as usize)
        .flat_map(|i| (0..ho as usize).map(move |o| (i, o)))
        .map(|(i, o)| rh[o * h as usize + i])
        .collect();
    let rh_t = cx.constant(
        rh_t,
        TensorType::new(dtype, vec![Dim::Static(h), Dim::Static(ho)]),
        node,
    )?;
    let rw = cx.constant(
        rw,
        TensorType::new(dtype, vec![Dim::Static(wo), Dim::Static(w)]),
        node,
    )?;
    let mm = Op::MatMul(MatMulAttrs::default());
    let rows = cx.emit(mm.clone(), vec![g, rw], node)?;
    let dx = cx.emit(mm, vec![rh_t, rows], node)?;
    Ok(vec![Some(dx)])
}
