//! Writes a plan onto a graph as IR distribution attributes, the vocabulary the
//! partitioner reads: one mesh per pipeline stage (`@stage<k>`, axes `dp` × `tp`, device ids
//! from the plan's rank order), the planner's per-layer tensor-parallel choices as weight
//! placements (`intra_op::OpLayout::weight`/`bias`), graph inputs split by batch on `dp`,
//! and every node's pipeline stage from the planner's stage partition over the layers.
//!
//! Two choices need activation placements as well. Sequence parallelism (Megatron-SP, when
//! the planner's layer layouts shard tokens): each linear of the chain declares the layout
//! of its activation operand (tokens gathered before a column-parallel matmul) and a
//! row-parallel matmul declares its result in the layout the next op of the chain consumes
//! (token-sharded: the partitioner's reduce-scatter instead of an all-reduce); the norms,
//! dropouts and residual adds between them follow by propagation. Interleaved 1F1B with `v`
//! model chunks: the layers are cut into `pp·v` virtual stages of near-equal layer counts,
//! and virtual stage `k` runs on mesh `@stage<k mod pp>`, so device d holds stages d, d+pp, …
//!
//! Layers are found by parameter name: the parameters under `…layers.<i>.` form one layer
//! each, in the order they first appear, which must be the planner's layer order. Linear
//! weights are recognised by the frontend's names (`q_proj`, `k_proj`, `v_proj` → the
//! chain's `qkv`, `out_proj` → `out`, `linear1` → `ffn1`, `linear2` → `ffn2`).

use super::intra_op::{Layout, OpLayout};
use super::step_cost::{Evaluation, Mapping, Schedule};
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
pub(crate) fn layer_prefix(name: &str) -> Option<&str> {
    let at = name.rfind("layers.")?;
    let rest = &name[at + "layers.".len()..];
    let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
    (digits > 0 && rest[digits..].starts_with('.')).then(|| &name[..at + 7 + digits])
}

/// The chain op a layer parameter belongs to, by the frontend's module names.
pub(crate) fn chain_op(rest: &str) -> Option<&'static str> {
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
    let layer_stage = layer_stages(e, prefixes.len());
    let last = layer_stage.last().copied().unwrap_or(0);
    let pp = p.pp.max(1) as u32;
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
    // (layer, chain op) of each linear weight, for sequence parallelism below.
    let mut linear_of: Vec<Option<(usize, &'static str)>> = vec![None; g.len()];
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
                        if rank == 2 {
                            linear_of[i] = chain_op(rest).map(|op| (l, op));
                        }
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
    let operands = sequence_parallel(g, e, &linear_of, &mut placements);
    for ((id, n), inputs) in g.iter().zip(operands) {
        let i = id.index();
        // A source's mesh is its stage's, or the first stage's: stage meshes share a shape.
        out.node_mut(id).dist = Some(OpDist {
            mesh: Some(stage_mesh_name((stage[i].unwrap_or(0) % pp) as usize)),
            outputs: placements[i].take().map(|pl| vec![pl]).unwrap_or_default(),
            inputs,
            stage: stage[i].filter(|_| !matches!(n.op, Op::Input)),
        });
    }
    oar_ir::verify(&out).map_err(|e| AnnotateError::Invalid(e.to_string()))?;
    Ok(out)
}

/// The (virtual) pipeline stage of each of `layers` layers: the plan's stage partition, or
/// with interleaved 1F1B over `v` chunks, `pp·v` contiguous chunks whose layer counts differ
/// by at most one (earlier chunks take the remainder). The cost model prices interleaving
/// by its bubble and memory only, so it fixes no finer partition to follow.
fn layer_stages(e: &Evaluation, layers: usize) -> Vec<u32> {
    let p = &e.plan;
    let chunks = match p.schedule {
        Schedule::Interleaved(v) if p.pp > 1 => (p.pp * v) as usize,
        Schedule::Interleaved(_) | Schedule::GPipe | Schedule::OneFOneB => {
            let mut out = Vec::with_capacity(layers);
            for (k, &n) in p.stage_layers.iter().enumerate() {
                out.extend(std::iter::repeat_n(k as u32, n));
            }
            return out;
        }
    };
    let chunks = chunks.min(layers).max(1);
    let (base, extra) = (layers / chunks, layers % chunks);
    (0..chunks)
        .flat_map(|k| std::iter::repeat_n(k as u32, base + usize::from(k < extra)))
        .collect()
}

/// Sequence parallelism (see the module docs): sets the result placement of row-parallel
/// matmuls in `placements` and returns each node's declared operand placements (empty when
/// unconstrained).
fn sequence_parallel(
    g: &Graph,
    e: &Evaluation,
    linear_of: &[Option<(usize, &'static str)>],
    placements: &mut [Option<Vec<Placement>>],
) -> Vec<Vec<Vec<Placement>>> {
    let p = &e.plan;
    let mut operands = vec![vec![]; g.len()];
    if !p.sequence_parallel || p.tp < 2 {
        return operands;
    }
    let tokens_sharded = |ls: &[OpLayout]| {
        ls.iter()
            .any(|l| l.input == Layout::Tokens || l.output == Layout::Tokens)
    };
    for (id, n) in g.iter() {
        let Op::MatMul(mm) = &n.op else { continue };
        let (Some(x), Some(w)) = (n.inputs.first(), n.inputs.get(1)) else {
            continue;
        };
        let Some((l, op)) = linear_of[w.node.index()] else {
            continue;
        };
        let layouts = &e.layer_layouts[l];
        let Some(at) = layouts.iter().position(|c| c.op == op) else {
            continue;
        };
        let rank = g.value_type(*x).map_or(0, |t| t.rank());
        // The activation is `[batch, tokens, features]`: batch on dp, tokens on tp.
        if !tokens_sharded(layouts) || mm.transpose_a || mm.transpose_b || rank < 3 {
            continue;
        }
        let dp = if p.dp > 1 {
            Placement::Shard(0)
        } else {
            Placement::Replicate
        };
        let on = |l: Layout| vec![dp, l.placement(rank - 2, rank - 1)];
        let (this, next) = (layouts[at], layouts[(at + 1) % layouts.len()]);
        let weight = placements[w.node.index()]
            .clone()
            .unwrap_or_else(|| vec![Placement::Replicate; 2]);
        operands[id.index()] = vec![on(this.input), weight];
        if this.output == Layout::Partial {
            placements[id.index()] = Some(on(next.input));
        }
    }
    operands
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
