//! Writes a plan onto a graph as IR distribution attributes, the vocabulary the
//! partitioner reads: one mesh per pipeline stage (`@stage<k>`, axes `dp` × `tp`, device ids
//! from the plan's rank order), the planner's per-layer tensor-parallel choices as weight
//! placements (`intra_op::OpLayout::weight`/`bias`), graph inputs split by batch on `dp`,
//! and every node's pipeline stage from the planner's stage partition over the layers.
//!
//! Layers are found by parameter name: the parameters under `…layers.<i>.` form one layer
//! each, in the order they first appear, which must be the planner's layer order. Linear
//! weights are recognised by the frontend's names (`q_proj`, `k_proj`, `v_proj` → the
//! chain's `qkv`, `out_proj` → `out`, `linear1` → `ffn1`, `linear2` → `ffn2`).

use super::intra_op::OpLayout;
use super::step_cost::{Evaluation, Mapping};
use oar_ir::dist::{OpDist, Placement, ProcessMesh};
use oar_ir::op::Op;
use oar_ir::Graph;

/// Why a plan cannot be written onto a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnnotateError {
    #[error("the graph has {graph} transformer layers (parameters under `layers.<i>.`) but the plan has {plan}")]
    LayerCount { graph: usize, plan: usize },
    #[error("the graph already has distribution attributes (mesh @{0})")]
    AlreadyAnnotated(String),
    #[error("the annotated graph is ill-formed: {0}")]
    Invalid(String),
}

/// Mesh axis names of every stage mesh, outermost first.
pub const AXES: [&str; 2] = ["dp", "tp"];

/// The name of stage `k`'s mesh.
pub fn stage_mesh_name(k: usize) -> String {
    format!("stage{k}")
}

/// The device id of (stage, data-parallel index, tensor-parallel index) under the plan's
/// rank order (tensor innermost, as the cost model assumes).
fn device(e: &Evaluation, stage: u64, d: u64, t: u64) -> u64 {
    let p = &e.plan;
    match p.mapping {
        Mapping::TpDpPp => t + p.tp * (d + p.dp * stage),
        Mapping::TpPpDp => t + p.tp * (stage + p.pp * d),
    }
}

/// One `[dp, tp]` mesh per pipeline stage.
pub fn stage_meshes(e: &Evaluation) -> Vec<ProcessMesh> {
    let p = &e.plan;
    (0..p.pp)
        .map(|k| {
            let mut m = ProcessMesh::new(vec![p.dp, p.tp], AXES.map(String::from).to_vec());
            m.device_ids = (0..p.dp)
                .flat_map(|d| (0..p.tp).map(move |t| (d, t)))
                .map(|(d, t)| device(e, k, d, t))
                .collect();
            m
        })
        .collect()
}

/// The layer prefix of a parameter name (`encoder.layers.3` of
/// `encoder.layers.3.linear1.weight`), if it belongs to one.
fn layer_prefix(name: &str) -> Option<&str> {
    let at = name.rfind("layers.")?;
    let rest = &name[at + "layers.".len()..];
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    (digits > 0 && rest[digits..].starts_with('.')).then(|| &name[..at + 7 + digits])
}

/// The chain op a layer parameter belongs to, by the frontend's module names.
fn chain_op(rest: &str) -> Option<&'static str> {
    let has = |m: &str| rest.split('.').any(|part| part == m);
    if ["q_proj", "k_proj", "v_proj"].iter().any(|m| has(m)) {
        Some("qkv")
    } else if has("out_proj") {
        Some("out")
    } else if has("linear1") {
        Some("ffn1")
    } else if has("linear2") {
        Some("ffn2")
    } else {
        None
    }
}

/// Tensor-axis placement of a layer parameter under the layer's choices.
fn param_placement(rest: &str, rank: usize, layouts: &[OpLayout]) -> Placement {
    let Some(op) = chain_op(rest) else {
        return Placement::Replicate;
    };
    match layouts.iter().find(|l| l.op == op) {
        Some(l) if rank == 2 => l.weight(),
        Some(l) if rank == 1 => l.bias(),
        _ => Placement::Replicate,
    }
}

/// The graph with the plan written on it (see the module docs).
pub fn annotate(g: &Graph, e: &Evaluation) -> Result<Graph, AnnotateError> {
    if let Some(m) = g.meshes.keys().next() {
        return Err(AnnotateError::AlreadyAnnotated(m.clone()));
    }
    let p = &e.plan;
    // Layers in order of their first parameter.
    let mut prefixes: Vec<&str> = Vec::new();
    for n in g.nodes() {
        if let Op::Param(pa) = &n.op {
            if let Some(pre) = layer_prefix(&pa.name) {
                if !prefixes.contains(&pre) {
                    prefixes.push(pre);
                }
            }
        }
    }
    if prefixes.len() != e.layer_layouts.len()
        || prefixes.len() != p.stage_layers.iter().sum::<usize>()
    {
        return Err(AnnotateError::LayerCount {
            graph: prefixes.len(),
            plan: e.layer_layouts.len(),
        });
    }
    let mut layer_stage = Vec::new();
    for (k, &n) in p.stage_layers.iter().enumerate() {
        layer_stage.extend(std::iter::repeat_n(k as u32, n));
    }
    let last = p.pp.saturating_sub(1) as u32;
    let tp_split = |pl: Placement| if p.tp > 1 { pl } else { Placement::Replicate };
    let dp_split = if p.dp > 1 {
        Placement::Shard(0)
    } else {
        Placement::Replicate
    };

    let mut out = g.clone();
    for (k, m) in stage_meshes(e).into_iter().enumerate() {
        out.meshes.insert(stage_mesh_name(k), m);
    }
    // Stage of each node; inputs and constants float to their consumers (stage None), and
    // so do nodes computed from them alone (label reshapes go where the loss is).
    let mut stage: Vec<Option<u32>> = vec![None; g.len()];
    let mut placements: Vec<Option<Vec<Placement>>> = vec![None; g.len()];
    let mut seen_layer = false;
    for (id, n) in g.iter() {
        let i = id.index();
        match &n.op {
            Op::Param(pa) => {
                let rank = n.outputs[0].rank();
                match layer_prefix(&pa.name) {
                    Some(pre) => {
                        seen_layer = true;
                        let l = prefixes.iter().position(|x| *x == pre).unwrap_or(0);
                        let rest = &pa.name[pre.len()..];
                        let tp = tp_split(param_placement(rest, rank, &e.layer_layouts[l]));
                        stage[i] = Some(layer_stage[l]);
                        placements[i] = Some(vec![Placement::Replicate, tp]);
                    }
                    // Embeddings before the first layer; heads after the last.
                    None => {
                        stage[i] = Some(if seen_layer { last } else { 0 });
                        placements[i] = Some(vec![Placement::Replicate; 2]);
                    }
                }
            }
            Op::Input => {
                let batch = n.outputs[0].rank() > 0;
                let dp = if batch {
                    dp_split
                } else {
                    Placement::Replicate
                };
                placements[i] = Some(vec![dp, Placement::Replicate]);
            }
            // op-contract: pass-through (other sources float to their consumers)
            op if op.is_source() => {}
            // op-contract: pass-through (every computed node follows its inputs' stage)
            _ => stage[i] = n.inputs.iter().filter_map(|v| stage[v.node.index()]).max(),
        }
    }
    let mut consumers: Vec<Vec<usize>> = vec![vec![]; g.len()];
    for (id, n) in g.iter() {
        for v in &n.inputs {
            consumers[v.node.index()].push(id.index());
        }
    }
    for (id, n) in g.iter().collect::<Vec<_>>().into_iter().rev() {
        let i = id.index();
        if stage[i].is_none() && !n.op.is_source() {
            stage[i] = Some(
                consumers[i]
                    .iter()
                    .filter_map(|&c| stage[c])
                    .min()
                    .unwrap_or(0),
            );
        }
    }
    for (id, n) in g.iter() {
        let i = id.index();
        // A source's mesh is its stage's, or the first stage's: stage meshes share a shape.
        out.node_mut(id).dist = Some(OpDist {
            mesh: Some(stage_mesh_name(stage[i].unwrap_or(0) as usize)),
            outputs: placements[i].take().map(|pl| vec![pl]).unwrap_or_default(),
            inputs: vec![],
            stage: stage[i].filter(|_| !matches!(n.op, Op::Input)),
        });
    }
    oar_ir::verify(&out).map_err(|e| AnnotateError::Invalid(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_prefixes_and_chain_ops_follow_the_frontend_names() {
        assert_eq!(
            layer_prefix("nlu.encoder.layers.12.linear1.weight"),
            Some("nlu.encoder.layers.12")
        );
        assert_eq!(layer_prefix("embeddings.word_embeddings.weight"), None);
        assert_eq!(layer_prefix("layers.x.weight"), None);
        assert_eq!(chain_op(".self_attn.k_proj.bias"), Some("qkv"));
        assert_eq!(chain_op(".linear2.weight"), Some("ffn2"));
        assert_eq!(chain_op(".norm1.weight"), None);
    }
}
