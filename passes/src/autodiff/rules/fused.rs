//! Fused groups: differentiate the body (inlined) with the same rules.
//!
//! The body's nodes are copied into the graph with the group's operands in place of the
//! function inputs (the forward values the rules need: the fused kernel keeps only its
//! outputs), then a local reverse walk over the copies runs the ordinary per-op rules.
//! Cotangents are keyed by the body's values, so an operand passed twice still gets one
//! cotangent per input slot. A copied dropout replays the mask the body's node draws (the
//! interpreter keys a body node's mask by its name in the body).

use super::{no_rule, InputGrads};
use crate::autodiff::{AutodiffError, GradCx};
use oar_ir::op::Op;
use oar_ir::{NodeId, ValueRef};
use std::collections::BTreeMap;

pub(super) fn vjp(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let Op::Fused { func } = &n.op else {
        return Err(no_rule(cx, node, "internal: not a fused group"));
    };
    let Some(body) = cx.graph().functions.get(func).cloned() else {
        return Err(no_rule(cx, node, &format!("unknown function @{func}")));
    };
    let body_inputs = body.inputs().to_vec();
    if body_inputs.len() != n.inputs.len() || body.outputs().len() != gy.len() {
        return Err(no_rule(
            cx,
            node,
            "the body's signature differs from the node's",
        ));
    }

    // Inline: body value -> value in the graph under construction.
    let mut at: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    // Body values that depend on an operand that wants a gradient.
    let mut needs: BTreeMap<ValueRef, bool> = BTreeMap::new();
    for (k, &id) in body_inputs.iter().enumerate() {
        at.insert(ValueRef::new(id, 0), n.inputs[k]);
        needs.insert(ValueRef::new(id, 0), want[k]);
    }
    let mut copies: Vec<(NodeId, NodeId)> = Vec::new();
    for (id, bn) in body.iter() {
        if matches!(bn.op, Op::Input) {
            continue;
        }
        let mut op = bn.op.clone();
        if let Op::Dropout { mask_of, .. } = &mut op {
            mask_of.get_or_insert_with(|| bn.name.clone());
        }
        let new = if op.is_source() {
            cx.emit_source(op, bn.outputs.clone(), node)?
        } else {
            let ins = bn
                .inputs
                .iter()
                .map(|v| at.get(v).copied())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| no_rule(cx, node, "the body uses a value before defining it"))?;
            cx.emit_node(op, ins, node)?
        };
        let need = bn
            .inputs
            .iter()
            .any(|v| needs.get(v).copied().unwrap_or(false));
        for p in 0..bn.outputs.len() as u32 {
            at.insert(ValueRef::new(id, p), ValueRef::new(new, p));
            needs.insert(ValueRef::new(id, p), need);
        }
        copies.push((id, new));
    }

    // Seed with the group's output cotangents (a value returned twice gets both).
    let mut grads: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    for (&v, g) in body.outputs().iter().zip(gy) {
        if let Some(g) = *g {
            add_into(cx, &mut grads, v, g, node)?;
        }
    }
    for &(id, new) in copies.iter().rev() {
        let bn = body.node(id);
        let gys: Vec<Option<ValueRef>> = (0..bn.outputs.len() as u32)
            .map(|p| grads.get(&ValueRef::new(id, p)).copied())
            .collect();
        if bn.op.is_source() || gys.iter().all(Option::is_none) {
            continue;
        }
        let wants: Vec<bool> = bn
            .inputs
            .iter()
            .map(|v| {
                needs.get(v).copied().unwrap_or(false)
                    && body.value_type(*v).is_some_and(|t| t.dtype.is_float())
            })
            .collect();
        if !wants.iter().any(|&w| w) {
            continue;
        }
        if !bn.op.differentiable() {
            return Err(AutodiffError::NotDifferentiable {
                node: format!("{}/{}", n.name, bn.name),
                op: bn.op.name(),
            });
        }
        let gx = super::vjp(cx, new, &gys, &wants)?;
        for ((v, g), w) in bn.inputs.iter().zip(gx).zip(&wants) {
            if let (Some(g), true) = (g, *w) {
                add_into(cx, &mut grads, *v, g, node)?;
            }
        }
    }
    Ok(body_inputs
        .iter()
        .zip(want)
        .map(|(&id, &w)| {
            w.then(|| grads.get(&ValueRef::new(id, 0)).copied())
                .flatten()
        })
        .collect())
}

fn add_into(
    cx: &mut GradCx,
    grads: &mut BTreeMap<ValueRef, ValueRef>,
    v: ValueRef,
    g: ValueRef,
    of: NodeId,
) -> Result<(), AutodiffError> {
    let sum = match grads.get(&v) {
        Some(&prev) => cx.add(prev, g, of)?,
        None => g,
    };
    grads.insert(v, sum);
    Ok(())
}
