//! The partitioner for real: ernie-3.0-tiny's per-rank graphs on a 2×2 mesh (data × tensor,
//! Megatron-style column/row splits) run in the reference interpreter with an in-process
//! communicator and give the single-device losses on every rank.

use oar_ir::dist::{Placement, ProcessMesh};
use oar_passes::parallel::partition::{partition, specialize, ShardingHints};
use oar_runtime::comm::LocalComm;
use oar_runtime::{init::init_weights, run, run_on_rank, HostTensor, Weights};
use std::collections::BTreeMap;

fn shard(t: &HostTensor, pl: &[Placement], mesh: &ProcessMesh, coords: &[u64]) -> HostTensor {
    let mut t = t.clone();
    for (a, p) in pl.iter().enumerate() {
        if let Placement::Shard(d) = p {
            let len = t.shape[*d] / mesh.shape[a] as usize;
            t = t.narrow(*d, coords[a] as usize * len, len);
        }
    }
    t
}

fn megatron_hints(g: &oar_ir::Graph) -> ShardingHints {
    use Placement::{Replicate as R, Shard as S};
    let mut h = ShardingHints::default();
    for &i in g.inputs() {
        h.inputs.insert(g.node(i).name.clone(), vec![S(0), R]);
    }
    for n in g.nodes() {
        let oar_ir::op::Op::Param(p) = &n.op else {
            continue;
        };
        let column = ["q_proj", "k_proj", "v_proj", "linear1"]
            .iter()
            .any(|k| p.name.contains(&format!(".{k}.")));
        let row = ["out_proj", "linear2"]
            .iter()
            .any(|k| p.name.contains(&format!(".{k}.")));
        let pl = match (column, row, p.name.ends_with(".weight")) {
            (true, _, true) => vec![R, S(1)],
            (true, _, false) => vec![R, S(0)],
            (_, true, true) => vec![R, S(0)],
            _ => vec![R, R],
        };
        h.params.insert(p.name.clone(), pl);
    }
    h
}

#[test]
fn ernie_tiny_on_a_2x2_mesh_matches_one_device() {
    let g = oar_models::build("ernie-3.0-tiny").unwrap().unwrap();
    let (n, seq) = (4u64, 8u64);
    let mut g = specialize(
        &g,
        &BTreeMap::from([("N".to_string(), n), ("seq".to_string(), seq)]),
    )
    .unwrap();
    let mesh = ProcessMesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]);
    g.meshes.insert("m".into(), mesh.clone());
    let hints = megatron_hints(&g);
    let ranks = partition(&g, "m", &hints).unwrap();
    assert_eq!(ranks.len(), 4);
    assert!(ranks.iter().all(|r| r.collectives > 0));

    // One set of global inputs and weights.
    let weights = init_weights(&g, 9).unwrap();
    let mut s = 12345u64;
    let mut next = |hi: i64| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as i64) % hi
    };
    let inputs: Vec<HostTensor> = g
        .inputs()
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
            match (t.dtype, node.name.as_str()) {
                (oar_ir::DType::I64, "position_ids") => HostTensor::i64(
                    shape,
                    (0..count).map(|k| (k % seq as usize) as i64).collect(),
                ),
                (oar_ir::DType::I64, name) => {
                    let hi = if name.contains("type") { 2 } else { 40000 };
                    HostTensor::i64(shape, (0..count).map(|_| next(hi)).collect())
                }
                _ => HostTensor::f32(
                    shape,
                    (0..count)
                        .map(|k| if k % 3 == 0 { 0.0 } else { 1.0 })
                        .collect(),
                ),
            }
        })
        .collect();
    let want = run(&g, &inputs, &weights).unwrap();

    let comms = LocalComm::group(&mesh.device_ids);
    let results: Vec<Vec<HostTensor>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranks
            .iter()
            .zip(&comms)
            .enumerate()
            .map(|(pos, (rg, comm))| {
                let coords = vec![pos as u64 / 2, pos as u64 % 2];
                let local_in: Vec<HostTensor> = inputs
                    .iter()
                    .zip(&rg.input_placements)
                    .map(|(t, pl)| shard(t, pl, &mesh, &coords))
                    .collect();
                let local_w: Weights = weights
                    .iter()
                    .map(|(k, t)| (k.clone(), shard(t, &rg.param_placements[k], &mesh, &coords)))
                    .collect();
                let graph = &rg.graph;
                scope.spawn(move || {
                    run_on_rank(graph, &local_in, &local_w, comm)
                        .unwrap_or_else(|e| panic!("rank {pos}: {e}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    });
    for (r, got) in results.iter().enumerate() {
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            let (d, s) = a.max_abs_diff(b).unwrap();
            assert!(
                d <= 1e-4 * s.max(1e-6),
                "rank {r} output {k}: {a:?} vs {b:?}"
            );
        }
    }
    // Tensor parallelism split the attention and FFN weights.
    let r0 = &ranks[0];
    assert_eq!(
        r0.param_placements["encoder.layers.0.linear1.weight"],
        vec![Placement::Replicate, Placement::Shard(1)]
    );
    let local_w1 = r0
        .graph
        .nodes()
        .iter()
        .find(|n| n.name == "encoder.layers.0.linear1.weight")
        .unwrap();
    assert_eq!(local_w1.outputs[0].to_string(), "f32[128,256]");
}
