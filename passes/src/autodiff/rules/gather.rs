//! Gathers: the gradient is a scatter-add of the cotangent into zeros. Indices get none.
//!
//! - gather / embedding: `gather_grad(indices, dy) {axis, rows}` adds `dy`'s slices into a
//!   zero tensor of the data's shape (repeated ids accumulate); embedding is axis 0.
//! - gather_elements: `scatter_add(zeros, indices, dy) {axis}` (ONNX ScatterElements with
//!   `reduction=add`).

use super::{no_rule, InputGrads};
use crate::autodiff::GradCx;
use oar_ir::op::{norm_axis, GradOp, Op};
use oar_ir::{NodeId, ValueRef};

pub(super) fn vjp(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let Some(g) = gy.first().copied().flatten() else {
        return Err(no_rule(cx, node, "called without an output cotangent"));
    };
    if !want.first().copied().unwrap_or(false) {
        return Ok(vec![None, None]);
    }
    let (data, idx) = (n.inputs[0], n.inputs[1]);
    let dd = cx.dims(data);
    let bad_axis = |cx: &GradCx, e: oar_ir::op::ShapeError| no_rule(cx, node, &e.0);
    let dx = if let Op::Embedding = &n.op {
        let Some(&rows) = dd.first() else {
            return Err(no_rule(cx, node, "needs a [vocab, dim] table"));
        };
        cx.emit(
            Op::Grad(GradOp::Gather { axis: 0, rows }),
            vec![idx, g],
            node,
        )?
    } else if let Op::Gather { axis } = &n.op {
        let a = norm_axis(*axis, dd.len()).map_err(|e| bad_axis(cx, e))?;
        let op = Op::Grad(GradOp::Gather {
            axis: a as i64,
            rows: dd[a],
        });
        cx.emit(op, vec![idx, g], node)?
    } else if let Op::GatherElements { axis } = &n.op {
        let a = norm_axis(*axis, dd.len()).map_err(|e| bad_axis(cx, e))?;
        let ty = cx.ty(data);
        let zeros = cx.zeros(&ty, node)?;
        let op = Op::Grad(GradOp::ScatterAdd { axis: a as i64 });
        cx.emit(op, vec![zeros, idx, g], node)?
    } else {
        return Err(no_rule(cx, node, "not a gather"));
    };
    Ok(vec![Some(dx), None])
}
