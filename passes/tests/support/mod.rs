//! What the partitioner tests share: ernie-3.0-titan-tiny planned on the 4-device CPU cluster
//! (`examples/clusters/cpu4.toml`), random inputs, each rank's slice of the global inputs and
//! weights, and running per-rank graphs in threads with the in-process communicator.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use oar_ir::cluster::Cluster;
use oar_ir::dist::{Placement, ProcessMesh};
use oar_ir::Graph;
use oar_passes::parallel::search::candidates;
use oar_passes::parallel::step_cost::Evaluator;
use oar_passes::parallel::{
    annotate, plan_with, specialize, Constraints, Evaluation, Job, LayerSpec, ModelSpec,
    ParallelPlan, RankGraph, TrainingCostModel,
};
use oar_runtime::comm::LocalComm;
use oar_runtime::{run_on_rank, HostTensor, Weights};
use std::collections::BTreeMap;

pub const MODEL: &str = "ernie-3.0-titan-tiny";

pub fn cpu4() -> Cluster {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/clusters/cpu4.toml"
    );
    Cluster::load(std::path::Path::new(path)).unwrap()
}

/// The planner's view of the zoo model: universal layers, then the two task modules.
pub fn spec() -> ModelSpec {
    let cfg = oar_models::ernie_config(MODEL).unwrap();
    let layer = |s: &oar_models::ernie::StackConfig| LayerSpec {
        hidden: s.hidden,
        heads: s.heads,
        ffn: s.ffn,
    };
    let mut layers = vec![layer(&cfg.universal); cfg.universal.layers as usize];
    let t = cfg.task_modules.as_ref().unwrap();
    layers.extend(vec![layer(t); 2 * t.layers as usize]);
    ModelSpec {
        name: MODEL.into(),
        vocab: cfg.vocab,
        embed_hidden: cfg.universal.hidden,
        extra_embedding_rows: cfg.max_positions + cfg.type_vocab + cfg.task_vocab,
        layers,
    }
}

/// The CLI's default job: 2 sequences per device of 1024 tokens.
pub fn job() -> Job {
    Job {
        global_batch: 2 * cpu4().num_devices(),
        seq: 1024,
    }
}

/// The planner's best plan under constraints.
pub fn plan_constrained(fixed: &Constraints) -> Evaluation {
    plan_with(
        &spec(),
        &job(),
        &cpu4(),
        &TrainingCostModel::default(),
        fixed,
    )
    .unwrap()
    .best
}

/// The plan for (dp, tp, pp) at the CLI's defaults.
pub fn plan(dp: u64, tp: u64, pp: u64) -> Evaluation {
    plan_constrained(&Constraints {
        dp: Some(dp),
        tp: Some(tp),
        pp: Some(pp),
        ..Default::default()
    })
}

/// The first candidate the planner enumerates for (dp, tp, pp) that `pick` accepts,
/// evaluated as the planner evaluates it (to pin a schedule or sequence parallelism that
/// the planner would otherwise choose by cost).
pub fn candidate(dp: u64, tp: u64, pp: u64, pick: impl Fn(&ParallelPlan) -> bool) -> Evaluation {
    let (m, j, c) = (spec(), job(), cpu4());
    let p = candidates(&m, &j, &c)
        .into_iter()
        .find(|p| p.dp == dp && p.tp == tp && p.pp == pp && pick(p))
        .unwrap();
    Evaluator::new(&m, &j, &c, TrainingCostModel::default()).evaluate(&p)
}

/// The annotated graph at `n` sequences of `seq` tokens.
pub fn annotated(e: &Evaluation, n: u64, seq: u64) -> Graph {
    let g = oar_models::build(MODEL).unwrap().unwrap();
    let g = annotate(&g, e).unwrap();
    specialize(&g, &BTreeMap::from([("N".into(), n), ("seq".into(), seq)])).unwrap()
}

/// This rank's slice of a global tensor.
pub fn shard(t: &HostTensor, pl: &[Placement], mesh: &ProcessMesh, coords: &[u64]) -> HostTensor {
    let mut t = t.clone();
    for (a, p) in pl.iter().enumerate() {
        if let Placement::Shard(d) = p {
            let len = t.shape[*d] / mesh.shape[a] as usize;
            t = t.narrow(*d, coords[a] as usize * len, len);
        }
    }
    t
}

/// Random but valid inputs for the pre-training graph, by name.
pub fn inputs(g: &Graph, seq: u64) -> BTreeMap<String, HostTensor> {
    let mut s = 12345u64;
    let mut next = |hi: i64| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as i64) % hi
    };
    g.inputs()
        .iter()
        .map(|&i| {
            let node = g.node(i);
            let t = &node.outputs[0];
            let shape: Vec<usize> = t
                .shape
                .as_static()
                .unwrap()
                .iter()
                .map(|&d| d as usize)
                .collect();
            let count: usize = shape.iter().product();
            let v = match (t.dtype, node.name.as_str()) {
                (oar_ir::DType::I64, "position_ids") => HostTensor::i64(
                    shape,
                    (0..count).map(|k| (k % seq as usize) as i64).collect(),
                ),
                (oar_ir::DType::I64, name) => {
                    let hi = if name.contains("type") { 2 } else { 40000 };
                    HostTensor::i64(shape, (0..count).map(|_| next(hi)).collect())
                }
                _ => HostTensor::f32(shape, (0..count).map(|_| (next(2)) as f32).collect()),
            };
            (node.name.clone(), v)
        })
        .collect()
}

/// The global graph's inputs in order.
pub fn ordered(g: &Graph, ins: &BTreeMap<String, HostTensor>) -> Vec<HostTensor> {
    g.inputs()
        .iter()
        .map(|&i| ins[&g.node(i).name].clone())
        .collect()
}

/// Coordinates of a rank in its graph's (only) mesh, row-major.
pub fn coords(rg: &RankGraph) -> (&ProcessMesh, Vec<u64>) {
    let mesh = rg.graph.meshes.values().next().unwrap();
    let mut rest = mesh.device_ids.iter().position(|&d| d == rg.rank).unwrap() as u64;
    let mut c = vec![0; mesh.shape.len()];
    for a in (0..mesh.shape.len()).rev() {
        c[a] = rest % mesh.shape[a];
        rest /= mesh.shape[a];
    }
    (mesh, c)
}

/// A rank's inputs and weights, sliced from the global ones by its placements.
pub fn local(
    rg: &RankGraph,
    g: &Graph,
    ins: &BTreeMap<String, HostTensor>,
    weights: &Weights,
) -> (Vec<HostTensor>, Weights) {
    let (mesh, coords) = coords(rg);
    let (name, _) = rg.graph.meshes.iter().next().unwrap();
    assert_eq!(g.meshes[name], *mesh);
    let local_in = rg
        .inputs
        .iter()
        .map(|(n, pl)| shard(&ins[n], pl, mesh, &coords))
        .collect();
    let local_w = rg
        .param_placements
        .iter()
        .map(|(k, pl)| (k.clone(), shard(&weights[k], pl, mesh, &coords)))
        .collect();
    (local_in, local_w)
}

/// Runs every rank's graph in its own thread, all on one in-process communicator (their
/// send/recv and collectives meet there), and returns each rank's outputs in rank order.
pub fn run_ranks(
    ranks: &[RankGraph],
    g: &Graph,
    ins: &BTreeMap<String, HostTensor>,
    weights: &Weights,
) -> Vec<Vec<HostTensor>> {
    let ids: Vec<u64> = ranks.iter().map(|r| r.rank).collect();
    let comms = LocalComm::group(&ids);
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranks
            .iter()
            .zip(&comms)
            .map(|(rg, comm)| {
                let (li, lw) = local(rg, g, ins, weights);
                scope.spawn(move || {
                    run_on_rank(&rg.graph, &li, &lw, comm)
                        .unwrap_or_else(|e| panic!("rank {}: {e}", rg.rank))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn assert_close(got: &HostTensor, want: &HostTensor, what: &str) {
    let (d, s) = got.max_abs_diff(want).unwrap();
    assert!(
        d <= 1e-5 * s.max(1.0),
        "{what}: {got:?} vs {want:?} (max difference {d})"
    );
}

/// Every rank's outputs are the single-device outputs it returns, to 1e-5.
pub fn assert_ranks_match(ranks: &[RankGraph], got: &[Vec<HostTensor>], want: &[HostTensor]) {
    for (rg, outs) in ranks.iter().zip(got) {
        assert_eq!(outs.len(), rg.outputs.len(), "rank {}", rg.rank);
        for (a, &k) in outs.iter().zip(&rg.outputs) {
            assert_close(a, &want[k], &format!("rank {} output {k}", rg.rank));
        }
    }
}
