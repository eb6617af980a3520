//! Matrix products (plain and with a fused epilogue), batched with broadcasting.

use super::{no_rule, InputGrads};
use crate::autodiff::GradCx;
use oar_ir::{NodeId, ValueRef};

pub(super) fn matmul(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}
