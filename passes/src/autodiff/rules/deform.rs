//! Deformable convolution v2: one `deform_conv2d_grad(x, offset, mask, w, dy)` node gives
//! `(dx, doffset, dmask, dw)` (they share the bilinear sampling, so one pass computes all
//! four); the bias gradient is `Σ dy` over N, H, W as for conv2d.

use super::{no_rule, InputGrads};
use crate::autodiff::GradCx;
use oar_ir::op::{GradOp, Op};
use oar_ir::{NodeId, ValueRef};

pub(super) fn deform_conv2d(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let Op::DeformConv2d(attrs) = &n.op else {
        return Err(no_rule(cx, node, "not a deformable convolution"));
    };
    let Some(g) = gy.first().copied().flatten() else {
        return Err(no_rule(cx, node, "called without an output cotangent"));
    };
    let wanted = |i: usize| want.get(i).copied().unwrap_or(false);
    let mut grads: Vec<Option<ValueRef>> = vec![None; n.inputs.len()];
    if (0..4).any(wanted) {
        let mut ins = n.inputs[..4].to_vec();
        ins.push(g);
        let id = cx.emit_node(Op::Grad(GradOp::DeformConv2d(attrs.clone())), ins, node)?;
        for (i, slot) in grads.iter_mut().enumerate().take(4) {
            if wanted(i) {
                *slot = Some(ValueRef::new(id, i as u32));
            }
        }
    }
    if n.inputs.len() > 4 && wanted(4) {
        grads[4] = Some(cx.reduce_sum(g, vec![0, 2, 3], false, node)?);
    }
    Ok(grads)
}
