//! Normalisations, softmax, causal masking and reductions.

use super::{no_rule, InputGrads};
use crate::autodiff::GradCx;
use oar_ir::{NodeId, ValueRef};

pub(super) fn batch_norm(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn layer_norm(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn softmax(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn causal_mask(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn reduce(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}
