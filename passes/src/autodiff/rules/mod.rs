//! Vector-Jacobian products, one per differentiable op, in one exhaustive `match`.
//!
//! A rule gets the node, the cotangent of each output (`None` where no gradient flows into
//! that output) and which inputs want a gradient; it returns one entry per input (`None`
//! for inputs that get none: indices, unwanted inputs). Rules build their gradient from IR
//! ops with [`GradCx`], so the backward graph compiles like any graph.

mod conv_pool;
mod data_movement;
mod deform;
mod elementwise;
mod fused;
mod gather;
mod linalg;
mod norm;

use super::{AutodiffError, GradCx};
use oar_ir::op::Op;
use oar_ir::{NodeId, ValueRef};

/// Input cotangents: one per input of the node.
pub type InputGrads = Result<Vec<Option<ValueRef>>, AutodiffError>;

/// The cotangents of `node`'s inputs given those of its outputs.
pub fn vjp(cx: &mut GradCx, node: NodeId, gy: &[Option<ValueRef>], want: &[bool]) -> InputGrads {
    let op = cx.graph().node(node).op.clone();
    match &op {
        Op::Input | Op::Param(_) | Op::Constant(_) | Op::Recv { .. } => {
            // Sources: the walk stops here.
            Ok(vec![])
        }
        Op::Unary(u) => elementwise::unary(cx, node, *u, gy, want),
        Op::Binary(b) => elementwise::binary(cx, node, *b, gy, want),
        Op::Where => elementwise::select(cx, node, gy, want),
        Op::Cast { .. } => elementwise::cast(cx, node, gy, want),
        Op::Dropout { .. } => elementwise::dropout(cx, node, gy, want),
        Op::MatMul(_) | Op::FusedMatMul { .. } => linalg::matmul(cx, node, gy, want),
        Op::Conv2d(_) | Op::FusedConv2d { .. } => conv_pool::conv2d(cx, node, gy, want),
        Op::ConvTranspose2d(_) => conv_pool::conv_transpose2d(cx, node, gy, want),
        Op::Pool(_) | Op::GlobalPool(_) => conv_pool::pool(cx, node, gy, want),
        Op::Resize(_) => conv_pool::resize(cx, node, gy, want),
        Op::DeformConv2d(_) => deform::deform_conv2d(cx, node, gy, want),
        Op::Nms(_) => Err(no_rule(
            cx,
            node,
            "selects boxes: a discrete choice carries no gradient (train on the head's outputs)",
        )),
        Op::BatchNorm { .. } => norm::batch_norm(cx, node, gy, want),
        Op::LayerNorm { .. } => norm::layer_norm(cx, node, gy, want),
        Op::Softmax { .. } | Op::LogSoftmax { .. } => norm::softmax(cx, node, gy, want),
        Op::CausalMask { .. } => norm::causal_mask(cx, node, gy, want),
        Op::Reduce(_) => norm::reduce(cx, node, gy, want),
        Op::Concat { axis } => data_movement::concat(cx, node, *axis, gy, want),
        Op::Split { axis, .. } => data_movement::split(cx, node, *axis, gy, want),
        Op::Slice(s) => data_movement::slice(cx, node, s, gy, want),
        Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } => {
            data_movement::reshape(cx, node, gy, want)
        }
        Op::Transpose { perm } => data_movement::transpose(cx, node, perm, gy, want),
        Op::BroadcastTo { .. } => data_movement::broadcast_to(cx, node, gy, want),
        Op::Gather { .. } | Op::GatherElements { .. } | Op::Embedding => {
            gather::vjp(cx, node, gy, want)
        }
        Op::Fused { .. } => fused::vjp(cx, node, gy, want),
        Op::Shape | Op::Send { .. } => Err(no_rule(cx, node, "carries no gradient")),
        Op::Grad(_) => Err(no_rule(
            cx,
            node,
            "gradient ops are not differentiated again (no second-order autodiff)",
        )),
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. } => Err(no_rule(
            cx,
            node,
            "collectives are inserted by the partitioner after differentiation; differentiate the single-device graph",
        )),
    }
}

/// The error for an op or a form of an op without a rule.
pub fn no_rule(cx: &GradCx, node: NodeId, why: &str) -> AutodiffError {
    let n = cx.graph().node(node);
    AutodiffError::NoRule {
        node: n.name.clone(),
        op: n.op.name(),
        why: why.to_string(),
    }
}
