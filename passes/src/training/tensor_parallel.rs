//! Tensor (Megatron) parallelism for a built training step, optionally combined with data
//! parallelism: [`annotate_tensor_parallel`] writes placements on the step's parameters,
//! optimizer state and inputs over a `[dp, tp]` mesh, and the partitioner
//! (`parallel::partition`) does the rest — sharding propagation carries the splits through
//! the forward, the backward and the optimizer update, and a collective goes wherever a
//! value's placement must change.
//!
//! The splits, on the `tp` axis, by the frontend's module names (`layers.<i>.…`):
//! - `q_proj`, `k_proj`, `v_proj`, `linear1`: column-parallel — the `[in, out]` weight
//!   `S(1)`, the bias `S(0)`; attention then runs by heads (the head reshape carries the
//!   split to the head dim, which must divide by `tp`);
//! - `out_proj`, `linear2`: row-parallel — the weight `S(0)`, the bias replicated; their
//!   product is a partial sum, all-reduced before the bias and the residual (Megatron's `g`);
//! - everything else (embeddings, norms, the LM head) replicated: the sharding rules have no
//!   vocabulary-parallel lookup, so the embedding tables are whole on every rank.
//!
//! The backward follows from the same rules: the input gradient of a column-parallel matmul
//! is a partial sum, all-reduced where the replicated residual stream needs it (Megatron's
//! `f` in reverse), and each weight gradient comes out split like its weight. Every
//! optimizer slot (`<param>.moment1`, …) takes its parameter's placement, so the update is
//! elementwise on each rank's shard and the partitioner keeps the new values split.
//!
//! On the `dp` axis, inputs whose leading dim is the batch are split by rows; parameters
//! are replicated, so their gradients are partial sums over `dp`, all-reduced before the
//! update.

use crate::parallel::annotate::{chain_op, layer_prefix};
use oar_ir::dist::{OpDist, Placement, ProcessMesh};
use oar_ir::op::Op;
use oar_ir::{Graph, ValueRef};

/// The name of the `[dp, tp]` mesh a tensor-parallel step runs on.
pub const TP_MESH: &str = "dp_tp";

/// The degrees of a `[dp, tp]` layout; rank `r` sits at `(r / tp, r % tp)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorParallel {
    pub dp: u64,
    pub tp: u64,
}

impl TensorParallel {
    /// Processes the layout runs on.
    pub fn ranks(&self) -> u64 {
        self.dp * self.tp
    }

    /// `[dp, tp]` coordinates of global rank `rank`.
    pub fn coords(&self, rank: u64) -> [u64; 2] {
        [rank / self.tp.max(1), rank % self.tp.max(1)]
    }
}

/// Why a step cannot be split as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorParallelError {
    #[error("tensor parallelism needs degrees of at least 1 (asked dp {dp}, tp {tp})")]
    Degree { dp: u64, tp: u64 },
    #[error("the graph already has distribution attributes (mesh @{0})")]
    AlreadyAnnotated(String),
    #[error("--tp {tp}: `{tensor}` ({ty}) is split on dim {dim}, of size {size}, which does not divide into {tp} parts")]
    Uneven {
        tensor: String,
        ty: String,
        dim: usize,
        size: u64,
        tp: u64,
    },
    #[error("--tp {tp}: the attention after `{tensor}` has {heads} heads (dim 2 of {ty}), which do not divide into {tp} parts")]
    Heads {
        tensor: String,
        ty: String,
        heads: u64,
        tp: u64,
    },
    #[error("--dp {dp}: input `{input}` ({ty}) has a batch of {size}, which does not divide into {dp} parts")]
    Batch {
        input: String,
        ty: String,
        size: u64,
        dp: u64,
    },
    #[error("the annotated step is ill-formed: {0}")]
    Invalid(String),
}

/// The `tp`-axis placement of a parameter or optimizer slot of rank `rank`, by name.
pub fn megatron_placement(name: &str, rank: usize) -> Placement {
    let Some(pre) = layer_prefix(name) else {
        return Placement::Replicate;
    };
    match (chain_op(&name[pre.len()..]), rank) {
        (Some("qkv" | "ffn1"), 2) => Placement::Shard(1),
        (Some("qkv" | "ffn1"), 1) => Placement::Shard(0),
        (Some("out" | "ffn2"), 2) => Placement::Shard(0),
        _ => Placement::Replicate,
    }
}

/// The step with the layout written on it (see the module docs): a `[dp, tp]` mesh named
/// [`TP_MESH`], Megatron placements on parameters and their slots, batch-split inputs, and
/// each gradient of `gradients` (parameter, node name, port; [`super::TrainStep::gradients`])
/// declared in its parameter's placement, so a gradient that is a partial sum over `dp` is
/// all-reduced once, where the backward produces it, rather than wherever the clipping and
/// the update first need it.
pub fn annotate_tensor_parallel(
    step: &Graph,
    gradients: &[(String, String, u32)],
    layout: &TensorParallel,
) -> Result<Graph, TensorParallelError> {
    let TensorParallel { dp, tp } = *layout;
    if dp == 0 || tp == 0 {
        return Err(TensorParallelError::Degree { dp, tp });
    }
    if let Some(m) = step.meshes.keys().next() {
        return Err(TensorParallelError::AlreadyAnnotated(m.clone()));
    }
    let batch = step
        .inputs()
        .first()
        .and_then(|&id| step.node(id).outputs[0].shape.as_static())
        .and_then(|s| s.first().copied());
    let mut g = step.clone();
    g.meshes.insert(
        TP_MESH.into(),
        ProcessMesh::new(vec![dp, tp], vec!["dp".into(), "tp".into()]),
    );
    let ids: Vec<_> = step.iter().map(|(id, _)| id).collect();
    for id in ids {
        let n = step.node(id);
        let ty = &n.outputs[0];
        let dims = ty.shape.as_static().unwrap_or_default();
        let placements = match &n.op {
            Op::Param(p) => {
                let pl = megatron_placement(&p.name, dims.len());
                if let (Placement::Shard(d), true) = (pl, tp > 1) {
                    if !dims[d].is_multiple_of(tp) {
                        return Err(TensorParallelError::Uneven {
                            tensor: p.name.clone(),
                            ty: ty.to_string(),
                            dim: d,
                            size: dims[d],
                            tp,
                        });
                    }
                }
                let pl = if tp > 1 { pl } else { Placement::Replicate };
                vec![Placement::Replicate, pl]
            }
            Op::Input => {
                let rows = dims.first().copied();
                let split = dp > 1 && rows.is_some() && rows == batch;
                if let (true, Some(rows)) = (split, rows) {
                    if !rows.is_multiple_of(dp) {
                        return Err(TensorParallelError::Batch {
                            input: n.name.clone(),
                            ty: ty.to_string(),
                            size: rows,
                            dp,
                        });
                    }
                }
                let d = if split {
                    Placement::Shard(0)
                } else {
                    Placement::Replicate
                };
                vec![d, Placement::Replicate]
            }
            // op-contract: pass-through (computed values follow by propagation)
            _ => continue,
        };
        g.node_mut(id).dist = Some(OpDist {
            mesh: Some(TP_MESH.into()),
            outputs: vec![placements],
            inputs: vec![],
            stage: None,
        });
    }
    declare_gradients(&mut g, gradients);
    if tp > 1 {
        check_heads(step, tp)?;
    }
    oar_ir::verify(&g).map_err(|e| TensorParallelError::Invalid(e.to_string()))?;
    Ok(g)
}

/// Declares each single-output gradient node's result in its parameter's placement.
fn declare_gradients(g: &mut Graph, gradients: &[(String, String, u32)]) {
    let placement: std::collections::BTreeMap<String, Vec<Placement>> = g
        .nodes()
        .iter()
        .filter_map(|n| match (&n.op, &n.dist) {
            (Op::Param(p), Some(d)) => d.outputs.first().map(|pl| (p.name.clone(), pl.clone())),
            // op-contract: pass-through (only parameters have placements to copy)
            _ => None,
        })
        .collect();
    for (param, node, port) in gradients {
        let (Some(pl), Some(id)) = (placement.get(param.as_str()), g.find(node)) else {
            continue;
        };
        let n = g.node(id);
        if *port != 0 || n.outputs.len() != 1 || n.op.is_source() || n.dist.is_some() {
            continue;
        }
        let pl = pl.clone();
        g.node_mut(id).dist = Some(OpDist {
            mesh: Some(TP_MESH.into()),
            outputs: vec![pl],
            inputs: vec![],
            stage: None,
        });
    }
}

/// Attention splits by heads: the reshape of a q/k/v projection to `[batch, seq, heads,
/// head_dim]` must have `heads` divisible by `tp` (else the split would silently fall back
/// to replicated attention).
fn check_heads(g: &Graph, tp: u64) -> Result<(), TensorParallelError> {
    let qkv_weight = |v: ValueRef| -> Option<String> {
        let n = g.node(v.node);
        let Op::MatMul(_) = n.op else { return None };
        let w = g.node(n.inputs.get(1)?.node);
        match &w.op {
            Op::Param(p) => layer_prefix(&p.name)
                .filter(|pre| chain_op(&p.name[pre.len()..]) == Some("qkv"))
                .map(|_| p.name.clone()),
            // op-contract: pass-through (only a parameter names a projection)
            _ => None,
        }
    };
    for (_, n) in g.iter() {
        let Op::Reshape { .. } = n.op else { continue };
        let Some(&x) = n.inputs.first() else { continue };
        // The projection, or its bias add.
        let src = g.node(x.node);
        let found = qkv_weight(x).or_else(|| match src.op {
            Op::Binary(_) => src.inputs.iter().find_map(|&v| qkv_weight(v)),
            // op-contract: pass-through (a head reshape reads the projection or its bias add)
            _ => None,
        });
        let (Some(tensor), Some(dims)) = (found, n.outputs[0].shape.as_static()) else {
            continue;
        };
        if dims.len() == 4 && !dims[2].is_multiple_of(tp) {
            return Err(TensorParallelError::Heads {
                tensor,
                ty: n.outputs[0].to_string(),
                heads: dims[2],
                tp,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_placements_follow_the_module_names() {
        let at = |n: &str, r| megatron_placement(n, r);
        let l = "ernie.encoder.layers.0";
        assert_eq!(
            at(&format!("{l}.self_attn.q_proj.weight"), 2),
            Placement::Shard(1)
        );
        assert_eq!(
            at(&format!("{l}.self_attn.v_proj.bias.moment2"), 1),
            Placement::Shard(0)
        );
        assert_eq!(
            at(&format!("{l}.self_attn.out_proj.weight.moment1"), 2),
            Placement::Shard(0)
        );
        assert_eq!(at(&format!("{l}.linear2.bias"), 1), Placement::Replicate);
        assert_eq!(at(&format!("{l}.norm1.weight"), 1), Placement::Replicate);
        assert_eq!(
            at("ernie.embeddings.word_embeddings.weight", 2),
            Placement::Replicate
        );
        assert_eq!(
            TensorParallel { dp: 2, tp: 2 }.coords(3),
            [1, 1],
            "tp innermost"
        );
    }
}
