//! Elementwise ops: unary activations, binary arithmetic with broadcasting, where, cast,
//! dropout (the forward mask, replayed).

use super::{no_rule, InputGrads};
use crate::autodiff::GradCx;
use oar_ir::op::{BinaryOp, UnaryOp};
use oar_ir::{NodeId, ValueRef};

pub(super) fn unary(
    cx: &mut GradCx,
    node: NodeId,
    _u: UnaryOp,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn binary(
    cx: &mut GradCx,
    node: NodeId,
    _b: BinaryOp,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn select(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn cast(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}

pub(super) fn dropout(
    cx: &mut GradCx,
    node: NodeId,
    _gy: &[Option<ValueRef>],
    _want: &[bool],
) -> InputGrads {
    Err(no_rule(cx, node, "not written yet"))
}
