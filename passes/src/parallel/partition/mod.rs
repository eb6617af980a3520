//! The partitioner: per-rank graphs from a graph's distribution attributes alone (as
//! `annotate` writes them, or as a user writes them in the text format). Placements start
//! from the `#dist` attributes of inputs and parameters and propagate forward op by op
//! (sharding completion); each op's rule says what it needs from its operands on each mesh
//! axis and what placement its result has. Operands that do not match are resharded:
//! partial → replicated by all-reduce, sharded → replicated by all-gather, replicated →
//! sharded by a local slice. Any op without a sharding rule runs replicated, so every graph
//! partitions; graph outputs are replicated on the ranks of the stage that computes them,
//! except a training step's state updates, which keep their parameter's placement (see
//! `training.rs`: split weights and optimizer state stay split across steps).
//!
//! Pipeline stages: a node's `stage` (inherited from its operands when absent) picks the
//! ranks that run it, those of the stage's mesh (every stage mesh has the same shape and
//! axes). Several stages may share a mesh (interleaved 1F1B's virtual stages: device d
//! holds stages d, d+pp, …); a rank runs all of its mesh's stages. A value used on a stage
//! of another mesh is sent by each producing rank to the rank at the same mesh coordinates
//! there, once per receiving rank (`send`/`recv`, in the producer's node order on both
//! sides). Inputs, parameters and constants are declared on every rank that uses them.

mod rank;
mod specialize;
mod training;

use super::sharding_rules::rule;
use oar_ir::dist::Placement;
use oar_ir::op::Op;
use oar_ir::{ExecMode, Graph, ProcessMesh, TensorType, ValueRef};
use rank::{coords_of, device_at, local_type, RankBuilder};
pub use specialize::specialize;
use std::collections::{BTreeMap, BTreeSet};

/// Why a graph cannot be partitioned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    #[error("the graph declares no process mesh, so it has no distribution to partition (write one with `oar plan MODEL --emit-graph FILE.oir`)")]
    NoMesh,
    #[error("pipeline stage {0} has no mesh: no node of it names one")]
    StageWithoutMesh(u32),
    #[error("pipeline stage {stage} is placed on both @{a} and @{b}")]
    StageOnTwoMeshes { stage: u32, a: String, b: String },
    #[error("stage meshes differ: @{a} is {sa} but @{b} is {sb} (every stage needs the same shape and axes)")]
    MeshMismatch {
        a: String,
        sa: String,
        b: String,
        sb: String,
    },
    #[error("device {device} is in the meshes of stages {a} and {b}, which are different meshes")]
    DeviceInTwoStages { device: u64, a: u32, b: u32 },
    #[error("rank {rank} is not in any mesh of the graph (ranks: {ranks})")]
    UnknownRank { rank: u64, ranks: String },
    #[error("unknown mesh @{0}")]
    UnknownMesh(String),
    #[error("the graph updates training state ({0}): running statistics across ranks are not partitioned yet")]
    TrainingState(String),
    #[error("symbol `{0}` needs a value")]
    UnboundSymbol(String),
    #[error(
        "%{0} has a symbolic type: bind its symbols first (`specialize`, or `--sym NAME=VALUE`)"
    )]
    Symbolic(String),
    #[error("{ty}: dim {dim} does not split evenly over {parts} devices")]
    Uneven { ty: String, dim: usize, parts: u64 },
    #[error("%{node}: {placements} placements for a mesh of {axes} axes")]
    PlacementArity {
        node: String,
        placements: usize,
        axes: usize,
    },
    #[error("cannot make a value partial")]
    MakePartial,
    #[error("%{node} ({op}): local result {got} but the placements say {want}")]
    LocalType {
        node: String,
        op: &'static str,
        got: String,
        want: String,
    },
    #[error("{0}")]
    Graph(String),
}

/// One rank's graph and how its inputs and parameters are sliced from the global ones.
#[derive(Debug, Clone)]
pub struct RankGraph {
    pub rank: u64,
    /// The first pipeline stage this rank runs.
    pub stage: u32,
    /// Every pipeline stage this rank runs, in order (one unless stages are interleaved).
    pub stages: Vec<u32>,
    pub graph: Graph,
    /// Name and placement of each input of this rank's graph, in order.
    pub inputs: Vec<(String, Vec<Placement>)>,
    /// Placement of each parameter this rank holds, by name.
    pub param_placements: BTreeMap<String, Vec<Placement>>,
    /// Which outputs of the global graph this rank returns, in order.
    pub outputs: Vec<usize>,
    pub collectives: usize,
    pub sends: usize,
    pub recvs: usize,
}

/// Rank-independent facts: each node's stage and placements, each operand's reshards.
struct Completion {
    /// Stage of each node; `None` for sources, which go wherever they are used.
    stage: Vec<Option<u32>>,
    /// Mesh name of each stage.
    stage_mesh: Vec<String>,
    /// Placements an op's rule gives its outputs (sources: their declared placements).
    produced: Vec<Vec<Placement>>,
    /// Placements its outputs end in (after a reshard to declared output placements).
    declared: Vec<Vec<Placement>>,
    /// For each operand of each node, the placements it is moved through, in order.
    moves: Vec<Vec<Vec<Vec<Placement>>>>,
    /// Stages that use each value (graph outputs count for their producer's stage).
    used_on: BTreeMap<ValueRef, BTreeSet<u32>>,
}

fn placements_of(n: &oar_ir::Node, axes: usize) -> Result<Option<Vec<Placement>>, PartitionError> {
    let Some(pl) = n.dist.as_ref().and_then(|d| d.outputs.first()) else {
        return Ok(None);
    };
    if pl.len() != axes {
        return Err(PartitionError::PlacementArity {
            node: n.name.clone(),
            placements: pl.len(),
            axes,
        });
    }
    Ok(Some(pl.clone()))
}

/// Stages and their meshes, checked to be one shape.
fn stages(g: &Graph) -> Result<(Vec<Option<u32>>, Vec<String>), PartitionError> {
    if g.meshes.is_empty() {
        return Err(PartitionError::NoMesh);
    }
    let mut stage = vec![None; g.len()];
    let mut meshes: BTreeMap<u32, String> = BTreeMap::new();
    for (id, n) in g.iter() {
        let explicit = n.dist.as_ref().and_then(|d| d.stage);
        let s = if n.op.is_source() {
            explicit
        } else {
            explicit.or_else(|| n.inputs.iter().filter_map(|v| stage[v.node.index()]).max())
        };
        stage[id.index()] = s;
        if let Some(m) = n.dist.as_ref().and_then(|d| d.mesh.clone()) {
            if !g.meshes.contains_key(&m) {
                return Err(PartitionError::UnknownMesh(m));
            }
            let s = s.unwrap_or(0);
            match meshes.get(&s) {
                Some(a) if *a != m && !n.op.is_source() => {
                    return Err(PartitionError::StageOnTwoMeshes {
                        stage: s,
                        a: a.clone(),
                        b: m,
                    })
                }
                Some(_) => {}
                None => {
                    meshes.insert(s, m);
                }
            }
        }
    }
    // A graph with one mesh and no stages runs on that mesh.
    if meshes.is_empty() && g.meshes.len() == 1 {
        meshes.extend(g.meshes.keys().map(|m| (0, m.clone())));
    }
    let last = stage.iter().flatten().max().copied().unwrap_or(0);
    let stage_mesh = (0..=last)
        .map(|s| {
            meshes
                .get(&s)
                .cloned()
                .ok_or(PartitionError::StageWithoutMesh(s))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let first = &g.meshes[&stage_mesh[0]];
    for name in &stage_mesh[1..] {
        let m = &g.meshes[name];
        if m.shape != first.shape || m.axis_names != first.axis_names {
            return Err(PartitionError::MeshMismatch {
                a: stage_mesh[0].clone(),
                sa: format!("{:?} {:?}", first.shape, first.axis_names),
                b: name.clone(),
                sb: format!("{:?} {:?}", m.shape, m.axis_names),
            });
        }
    }
    Ok((stage, stage_mesh))
}

fn complete(g: &Graph) -> Result<Completion, PartitionError> {
    // Placements index dims and meshes: only well-formed graphs get here.
    oar_ir::verify(g).map_err(|e| PartitionError::Graph(e.to_string()))?;
    training::check_state(g)?;
    let (stage, stage_mesh) = stages(g)?;
    let mesh = &g.meshes[&stage_mesh[0]];
    let axes = mesh.shape.len();
    let replicated = vec![Placement::Replicate; axes];
    let mut produced: Vec<Vec<Placement>> = Vec::with_capacity(g.len());
    let mut declared: Vec<Vec<Placement>> = Vec::with_capacity(g.len());
    let mut moves = Vec::with_capacity(g.len());
    let mut used_on: BTreeMap<ValueRef, BTreeSet<u32>> = BTreeMap::new();
    for (id, n) in g.iter() {
        if n.outputs.iter().any(|t| t.shape.as_static().is_none()) {
            return Err(PartitionError::Symbolic(n.name.clone()));
        }
        if n.op.is_source() {
            let pl = match n.op {
                Op::Input | Op::Param(_) => placements_of(n, axes)?,
                // op-contract: pass-through (constants and recv start replicated)
                _ => None,
            }
            .unwrap_or_else(|| replicated.clone());
            produced.push(pl.clone());
            declared.push(pl);
            moves.push(vec![]);
            continue;
        }
        let s = stage[id.index()].unwrap_or(0);
        for v in &n.inputs {
            used_on.entry(*v).or_default().insert(s);
        }
        let ins_t: Vec<TensorType> = n
            .inputs
            .iter()
            .filter_map(|v| g.value_type(*v).cloned())
            .collect();
        let mut pls: Vec<Vec<Placement>> = n
            .inputs
            .iter()
            .map(|v| declared[v.node.index()].clone())
            .collect();
        let mut chain: Vec<Vec<Vec<Placement>>> = vec![vec![]; n.inputs.len()];
        // Operand placements the node declares (`in=[…]`) come first.
        if let Some(d) = n.dist.as_ref().filter(|d| !d.inputs.is_empty()) {
            for (k, want) in d.inputs.iter().enumerate().take(pls.len()) {
                if want.len() != axes {
                    return Err(PartitionError::PlacementArity {
                        node: n.name.clone(),
                        placements: want.len(),
                        axes,
                    });
                }
                if *want != pls[k] {
                    chain[k].push(want.clone());
                    pls[k] = want.clone();
                }
            }
        }
        let mut need = pls.clone();
        let mut out = Vec::with_capacity(axes);
        for a in 0..axes {
            let here: Vec<Placement> = pls.iter().map(|p| p[a]).collect();
            let r = match n.op {
                Op::Dropout { .. } if g.mode == ExecMode::Training => {
                    training::dropout_rule(here[0])
                }
                // op-contract: pass-through (per-op decisions are in sharding_rules::rule)
                _ => rule(&n.op, &ins_t, &n.outputs, &here, mesh.shape[a]),
            };
            for (k, p) in r.need.iter().enumerate() {
                need[k][a] = *p;
            }
            out.push(r.out);
        }
        for (k, want) in need.into_iter().enumerate() {
            if want != pls[k] {
                chain[k].push(want);
            }
        }
        let fin = placements_of(n, axes)?.unwrap_or_else(|| out.clone());
        produced.push(out);
        declared.push(fin);
        moves.push(chain);
    }
    for v in g.outputs() {
        let s = stage[v.node.index()].unwrap_or(0);
        used_on.entry(*v).or_default().insert(s);
    }
    Ok(Completion {
        stage,
        stage_mesh,
        produced,
        declared,
        moves,
        used_on,
    })
}

/// The ranks of a graph's stage meshes, in order, each with its stages and its position in
/// their mesh. Stages that share a mesh share its ranks; a device in two meshes is an error.
fn all_ranks(g: &Graph, c: &Completion) -> Result<Vec<(u64, Vec<u32>, usize)>, PartitionError> {
    let mut seen: BTreeMap<u64, (Vec<u32>, usize)> = BTreeMap::new();
    for (s, name) in c.stage_mesh.iter().enumerate() {
        for (pos, &d) in g.meshes[name].device_ids.iter().enumerate() {
            let entry = seen.entry(d).or_insert_with(|| (vec![], pos));
            if let Some(&a) = entry.0.first() {
                if c.stage_mesh[a as usize] != *name {
                    return Err(PartitionError::DeviceInTwoStages {
                        device: d,
                        a,
                        b: s as u32,
                    });
                }
            }
            entry.0.push(s as u32);
        }
    }
    Ok(seen.into_iter().map(|(d, (s, p))| (d, s, p)).collect())
}

/// The ranks a distributed graph runs on.
pub fn ranks(g: &Graph) -> Result<Vec<u64>, PartitionError> {
    let c = complete(g)?;
    Ok(all_ranks(g, &c)?.into_iter().map(|r| r.0).collect())
}

/// Partitions a graph with static shapes and distribution attributes into one graph per
/// rank, ordered by rank.
pub fn partition(g: &Graph) -> Result<Vec<RankGraph>, PartitionError> {
    let c = complete(g)?;
    all_ranks(g, &c)?
        .into_iter()
        .map(|(rank, stages, pos)| build_rank(g, &c, rank, &stages, pos))
        .collect()
}

/// The graph of one rank.
pub fn partition_rank(g: &Graph, rank: u64) -> Result<RankGraph, PartitionError> {
    let c = complete(g)?;
    let all = all_ranks(g, &c)?;
    let Some((_, stages, pos)) = all.iter().find(|r| r.0 == rank) else {
        let ranks: Vec<String> = all.iter().map(|r| r.0.to_string()).collect();
        return Err(PartitionError::UnknownRank {
            rank,
            ranks: ranks.join(", "),
        });
    };
    build_rank(g, &c, rank, stages, *pos)
}

/// A node name worth keeping: automatic (numeric) names are re-assigned in the new graph.
fn kept(name: &str) -> Option<String> {
    (!name.chars().all(|c| c.is_ascii_digit())).then(|| name.to_string())
}

fn graph_err(e: oar_ir::NodeError) -> PartitionError {
    PartitionError::Graph(e.to_string())
}

fn build_rank(
    g: &Graph,
    c: &Completion,
    rank: u64,
    stages: &[u32],
    pos: usize,
) -> Result<RankGraph, PartitionError> {
    let stage = stages[0];
    let mine = |s: u32| stages.contains(&s);
    let mesh_name = &c.stage_mesh[stage as usize];
    let mesh: &ProcessMesh = &g.meshes[mesh_name];
    let coords = coords_of(mesh, pos);
    let mut rb = RankBuilder {
        mesh_name,
        mesh,
        coords: coords.clone(),
        g: Graph::new(format!("{}_rank{rank}", g.name)),
        collectives: 0,
        made: Default::default(),
    };
    rb.g.mode = g.mode;
    rb.g.functions = g.functions.clone();
    rb.g.meshes.insert(mesh_name.clone(), mesh.clone());
    let peer = |s: u32| -> Result<u64, PartitionError> {
        device_at(&g.meshes[&c.stage_mesh[s as usize]], &coords)
            .ok_or_else(|| PartitionError::Graph(format!("stage {s} has no peer for rank {rank}")))
    };
    let used_here = |v: &ValueRef| c.used_on.get(v).is_some_and(|s| s.iter().any(|&t| mine(t)));
    let mut vals: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    let mut inputs = Vec::new();
    let mut param_placements = BTreeMap::new();
    let (mut sends, mut recvs) = (0, 0);
    for (id, n) in g.iter() {
        let i = id.index();
        let ports: Vec<ValueRef> = (0..n.outputs.len() as u32)
            .map(|p| ValueRef::new(id, p))
            .collect();
        if n.op.is_source() {
            if !ports.iter().any(used_here) {
                continue;
            }
            let pl = &c.declared[i];
            let v = match &n.op {
                Op::Input => {
                    inputs.push((n.name.clone(), pl.clone()));
                    rb.g.add_input(n.name.clone(), local_type(&n.outputs[0], pl, mesh)?)
                }
                // op-contract: pass-through (other sources are copied with local types)
                op => {
                    if let Op::Param(p) = op {
                        param_placements.insert(p.name.clone(), pl.clone());
                    }
                    let tys = n
                        .outputs
                        .iter()
                        .map(|t| local_type(t, pl, mesh))
                        .collect::<Result<_, _>>()?;
                    rb.g.add_node_typed(op.clone(), vec![], tys, kept(&n.name))
                        .map_err(graph_err)?
                        .into()
                }
            };
            vals.insert(ports[0], v);
            continue;
        }
        let s = c.stage[i].unwrap_or(0);
        if !mine(s) {
            // Values of another stage used here arrive by recv, in the producer's order.
            for (p, v) in ports.iter().enumerate() {
                if used_here(v) {
                    let ty = local_type(&n.outputs[p], &c.declared[i], mesh)?;
                    let name = (p == 0).then(|| kept(&n.name)).flatten();
                    let r =
                        rb.g.add_node_typed(Op::Recv { peer: peer(s)? }, vec![], vec![ty], name)
                            .map_err(graph_err)?;
                    vals.insert(*v, r.into());
                    recvs += 1;
                }
            }
            continue;
        }
        let mut locals = Vec::with_capacity(n.inputs.len());
        for (k, v) in n.inputs.iter().enumerate() {
            let mut lv = *vals.get(v).ok_or_else(|| {
                PartitionError::Graph(format!("%{}: operand {v} is not on rank {rank}", n.name))
            })?;
            let mut from = c.declared[v.node.index()].clone();
            for to in &c.moves[i][k] {
                lv = rb.reshard_all(lv, &from, to)?;
                from = to.clone();
            }
            locals.push(lv);
        }
        let local_out: Vec<TensorType> = n
            .outputs
            .iter()
            .map(|t| local_type(t, &c.produced[i], mesh))
            .collect::<Result<_, _>>()?;
        let op = training::local_op(&n.op, &n.name, &local_out, g.mode);
        let id2 =
            rb.g.add_node(op, locals, kept(&n.name))
                .map_err(|e| PartitionError::Graph(format!("%{}: {}", n.name, e.message)))?;
        if rb.g.node(id2).outputs != local_out {
            return Err(PartitionError::LocalType {
                node: n.name.clone(),
                op: n.op.name(),
                got: oar_ir::graph::types_text(&rb.g.node(id2).outputs),
                want: oar_ir::graph::types_text(&local_out),
            });
        }
        for (p, v) in ports.iter().enumerate() {
            let lv = ValueRef::new(id2, p as u32);
            let lv = rb.reshard_all(lv, &c.produced[i], &c.declared[i])?;
            vals.insert(*v, lv);
            // One send per receiving rank, however many of its stages use the value.
            let mut to: BTreeSet<u64> = BTreeSet::new();
            for &t in c.used_on.get(v).into_iter().flatten() {
                if !mine(t) && to.insert(peer(t)?) {
                    rb.g.add_node(Op::Send { peer: peer(t)? }, vec![lv], None)
                        .map_err(graph_err)?;
                    sends += 1;
                }
            }
        }
    }
    // The ranks of the producing stage end with the whole outputs; state updates keep
    // their parameter's placement.
    let mut outs = Vec::new();
    let mut outputs = Vec::new();
    let mut state = Vec::new();
    let ends = training::output_placements(g, c, mesh.shape.len());
    let models = g.model_outputs().len();
    for (k, v) in g.outputs().iter().enumerate() {
        if !mine(c.stage[v.node.index()].unwrap_or(0)) {
            continue;
        }
        let lv = *vals
            .get(v)
            .ok_or_else(|| PartitionError::Graph(format!("output {k} is not on rank {rank}")))?;
        outs.push(rb.reshard_all(lv, &c.declared[v.node.index()], &ends[k])?);
        outputs.push(k);
        if k >= models {
            state.push(g.state[k - models].clone());
        }
    }
    rb.g.set_outputs(outs);
    rb.g.state = state;
    oar_ir::verify(&rb.g).map_err(|e| PartitionError::Graph(e.to_string()))?;
    Ok(RankGraph {
        rank,
        stage,
        stages: stages.to_vec(),
        graph: rb.g,
        inputs,
        param_placements,
        outputs,
        collectives: rb.collectives,
        sends,
        recvs,
    })
}
