//! Reverse-mode automatic differentiation over the IR.
//!
//! [`append_backward`] takes a forward graph and a scalar loss and returns the same graph
//! with the backward nodes appended and the gradient of every trainable parameter (and, on
//! request, of every float graph input). Gradients are ordinary IR values: the backward graph
//! goes through the same passes (eqsat, fusion, liveness) and backends as any graph.
//!
//! The walk is the textbook one: nodes in reverse topological order, each node's output
//! cotangents summed over its users, then turned into input cotangents by the node's
//! vector-Jacobian product. The per-op rules are one exhaustive `match` in [`rules`]; an op
//! that is not differentiable is an error naming the op and the node.
//!
//! Shapes must be static: a training step is compiled for one batch size (bind symbols with
//! `parallel::partition::specialize` first), so every rule can build constants and
//! broadcasts of a known shape.

pub mod check;
mod cx;
pub mod rules;

pub use cx::GradCx;

use oar_ir::op::Op;
use oar_ir::{Graph, NodeId, ValueRef};
use std::collections::{BTreeMap, BTreeSet};

/// Why a graph could not be differentiated.
#[derive(Debug, thiserror::Error)]
pub enum AutodiffError {
    #[error("the loss {value} does not exist in the graph")]
    NoLoss { value: String },
    #[error("the loss must be a float scalar (one element); `{node}` produces {ty}")]
    LossNotScalar { node: String, ty: String },
    #[error("`{node}` ({op}) has the symbolic type {ty}; differentiate a graph with static shapes (bind the symbols first, e.g. --batch)")]
    Symbolic {
        node: String,
        op: &'static str,
        ty: String,
    },
    #[error(
        "`{node}` ({op}) is not differentiable, but the loss depends on a parameter through it"
    )]
    NotDifferentiable { node: String, op: &'static str },
    #[error("no gradient rule for `{node}` ({op}): {why}")]
    NoRule {
        node: String,
        op: &'static str,
        why: String,
    },
    #[error("building the gradient of `{node}`: {message}")]
    Graph { node: String, message: String },
}

/// The forward graph with its backward appended.
#[derive(Debug, Clone)]
pub struct Backward {
    /// Forward and backward nodes; outputs and state updates are those of the forward graph.
    pub graph: Graph,
    /// The loss value (in `graph`).
    pub loss: ValueRef,
    /// (parameter name, gradient) for every trainable parameter the loss depends on, in the
    /// order the parameters appear in the graph.
    pub param_grads: Vec<(String, ValueRef)>,
    /// (input name, gradient) for float graph inputs the loss depends on, when requested.
    pub input_grads: Vec<(String, ValueRef)>,
    /// Trainable parameters the loss does not depend on (they get no gradient).
    pub unused_params: Vec<String>,
}

/// Trainable parameters: every `param` that is not the target of a state update (batch
/// norm running statistics are updated by the forward pass, not by gradients).
pub fn trainable_params(g: &Graph) -> Vec<NodeId> {
    g.iter()
        .filter(|(_, n)| matches!(n.op, Op::Param(_)))
        .filter(|(_, n)| {
            !g.state
                .iter()
                .any(|s| Some(s.as_str()) == param_name(&n.op))
        })
        .map(|(id, _)| id)
        .collect()
}

fn param_name(op: &Op) -> Option<&str> {
    // Only parameters have names.
    if let Op::Param(p) = op {
        Some(p.name.as_str())
    } else {
        None
    }
}

/// Appends the backward of `loss` to `fwd`. With `wrt_inputs`, float graph inputs get
/// gradients too (finite-difference tests, input attribution).
pub fn append_backward(
    fwd: &Graph,
    loss: ValueRef,
    wrt_inputs: bool,
) -> Result<Backward, AutodiffError> {
    append_backward_with(fwd, loss, wrt_inputs, &BTreeSet::new())
}

/// [`append_backward`] with a stop-gradient on the values in `stop`: the loss's dependence
/// through them is treated as constant, so no cotangent reaches them and nothing upstream
/// of them gets a gradient by that path (a frozen or online teacher's side of a
/// distillation term). This is the autodiff half of a stop-gradient; no op marks it in the
/// graph, so the forward graph and every backend are unchanged. To stop only some uses of a
/// value, stop a copy of it (e.g. `x · 1`) that only those uses read.
pub fn append_backward_with(
    fwd: &Graph,
    loss: ValueRef,
    wrt_inputs: bool,
    stop: &BTreeSet<ValueRef>,
) -> Result<Backward, AutodiffError> {
    let loss_ty = fwd
        .value_type(loss)
        .ok_or_else(|| AutodiffError::NoLoss {
            value: loss.to_string(),
        })?
        .clone();
    let loss_node = fwd.node(loss.node);
    if !loss_ty.dtype.is_float() || loss_ty.shape.numel().as_static() != Some(1) {
        return Err(AutodiffError::LossNotScalar {
            node: loss_node.name.clone(),
            ty: loss_ty.to_string(),
        });
    }
    // Sources of gradient: trainable parameters, and float inputs on request.
    let mut needs = vec![false; fwd.len()];
    for id in trainable_params(fwd) {
        needs[id.index()] = true;
    }
    if wrt_inputs {
        for &id in fwd.inputs() {
            needs[id.index()] = fwd.node(id).outputs[0].dtype.is_float();
        }
    }
    // Forward: a node needs a gradient when one of its inputs does.
    for (id, n) in fwd.iter() {
        if !n.op.is_source() && n.inputs.iter().any(|v| needs[v.node.index()]) {
            needs[id.index()] = true;
        }
    }
    // Backward reachability from the loss.
    let mut reaches = vec![false; fwd.len()];
    reaches[loss.node.index()] = true;
    for (id, n) in fwd.iter().collect::<Vec<_>>().into_iter().rev() {
        if reaches[id.index()] {
            for v in &n.inputs {
                reaches[v.node.index()] = true;
            }
        }
    }
    for (id, n) in fwd.iter() {
        if needs[id.index()] && reaches[id.index()] {
            for t in &n.outputs {
                if t.shape.as_static().is_none() {
                    return Err(AutodiffError::Symbolic {
                        node: n.name.clone(),
                        op: n.op.name(),
                        ty: t.to_string(),
                    });
                }
            }
        }
    }

    let mut cx = GradCx::for_graph(fwd.clone());
    let mut grads: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    // The seed dL/dL = 1 (the loss has one element).
    let one = cx.constant(vec![1.0], loss_ty.clone(), loss.node)?;
    grads.insert(loss, one);
    for idx in (0..=loss.node.index()).rev() {
        let id = NodeId(idx as u32);
        if !(needs[idx] && reaches[idx]) {
            continue;
        }
        let node = fwd.node(id);
        if node.op.is_source() {
            continue;
        }
        let gy: Vec<Option<ValueRef>> = (0..node.outputs.len() as u32)
            .map(|p| grads.get(&ValueRef::new(id, p)).copied())
            .collect();
        if gy.iter().all(Option::is_none) {
            continue;
        }
        if !node.op.differentiable() {
            return Err(AutodiffError::NotDifferentiable {
                node: node.name.clone(),
                op: node.op.name(),
            });
        }
        let want: Vec<bool> = node
            .inputs
            .iter()
            .map(|v| {
                needs[v.node.index()]
                    && !stop.contains(v)
                    && fwd.node(v.node).outputs[v.port as usize].dtype.is_float()
            })
            .collect();
        let gx = rules::vjp(&mut cx, id, &gy, &want)?;
        for ((v, g), w) in node.inputs.iter().zip(gx).zip(&want) {
            let (Some(g), true) = (g, *w) else { continue };
            let sum = match grads.get(v) {
                Some(&prev) => cx.add(prev, g, id)?,
                None => g,
            };
            grads.insert(*v, sum);
        }
    }

    let mut param_grads = Vec::new();
    let mut unused_params = Vec::new();
    for id in trainable_params(fwd) {
        let name = param_name(&fwd.node(id).op).unwrap_or_default().to_string();
        match grads.get(&ValueRef::new(id, 0)) {
            Some(&g) => param_grads.push((name, g)),
            None => unused_params.push(name),
        }
    }
    let input_grads = if wrt_inputs {
        fwd.inputs()
            .iter()
            .filter_map(|&id| {
                let g = grads.get(&ValueRef::new(id, 0))?;
                Some((fwd.node(id).name.clone(), *g))
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Backward {
        graph: cx.finish(),
        loss,
        param_grads,
        input_grads,
        unused_params,
    })
}

#[cfg(test)]
mod tests;
