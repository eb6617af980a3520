//! Debugging a run: evaluate a graph keeping every intermediate value and report the first
//! node whose output is not finite. The training loop calls it when a step's loss is NaN or
//! infinite, so the error names the node where the trouble started rather than the loss.

use super::{bind_inputs, eval_at, InterpError, RunCtx, RunOptions};
use crate::io::weights::Weights;
use crate::tensor::{HostTensor, TensorData};
use oar_ir::op::Op;
use oar_ir::Graph;

/// The first node (in graph order) with a NaN or infinite element in an output.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// The node's name (its `%name` in the text format).
    pub node: String,
    /// The op's text name.
    pub op: &'static str,
    /// Which output of the node.
    pub port: usize,
    /// The first offending value (NaN, inf or -inf) and its flat index.
    pub value: f32,
    pub index: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "%{}", self.node)?;
        if self.port > 0 {
            write!(f, "#{}", self.port)?;
        }
        write!(
            f,
            " ({}) produced {} at element {}",
            self.op, self.value, self.index
        )
    }
}

fn first_bad(t: &HostTensor) -> Option<(usize, f32)> {
    match &t.data {
        TensorData::F32(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
        // A non-finite f64 stays non-finite (and keeps its sign) as f32.
        TensorData::F64(v) => v
            .iter()
            .position(|x| !x.is_finite())
            .map(|i| (i, v[i] as f32)),
        TensorData::I64(_) | TensorData::Bool(_) => None,
    }
}

/// Runs `graph` like [`super::run_with_options`] (the weights are not changed) and returns the
/// first node whose output holds a non-finite value, inputs included, or `None` when every
/// value is finite. Every intermediate value stays alive: use it to diagnose, not to train.
pub fn first_non_finite(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
    opts: RunOptions,
) -> Result<Option<NonFinite>, InterpError> {
    oar_ir::verify(graph)?;
    let cx = RunCtx::of(graph, None, opts);
    let bindings = bind_inputs(graph, inputs)?;
    let mut values: Vec<Option<Vec<HostTensor>>> = vec![None; graph.len()];
    for (&id, t) in graph.inputs().iter().zip(inputs) {
        values[id.index()] = Some(vec![t.clone()]);
    }
    for (id, node) in graph.iter() {
        // Inputs are bound above; checking them too names a NaN that came in with the batch.
        let outs = if matches!(node.op, Op::Input) {
            values[id.index()].clone().unwrap_or_default()
        } else {
            eval_at(node, &values, &bindings, weights, &cx)?
        };
        for (port, t) in outs.iter().enumerate() {
            if let Some((index, value)) = first_bad(t) {
                return Ok(Some(NonFinite {
                    node: node.name.clone(),
                    op: node.op.name(),
                    port,
                    value,
                    index,
                }));
            }
        }
        values[id.index()] = Some(outs);
    }
    Ok(None)
}
