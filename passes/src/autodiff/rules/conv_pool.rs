//! Convolutions (data and weight gradients, depthwise included), pooling and resize.

use super::{no_rule, InputGrads};
use crate::autodiff::GradCx;
use oar_ir::{NodeId, ValueRef};

pub(super) fn conv2d(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn conv_transpose2d(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn pool(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn resize(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}
