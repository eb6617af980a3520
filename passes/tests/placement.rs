//! HeterPS placement: the exact scheduler equals brute force on random small chains; it
//! never costs more than any baseline; impossible targets and unpriced clusters say what is
//! wrong; the text report is pinned by a snapshot.

use oar_frontend::nn::{EmbeddingConfig, LinearConfig};
use oar_frontend::{ModelBuilder, ReshapeDim};
use oar_ir::cluster::{Cluster, Link};
use oar_ir::dist::DeviceKind;
use oar_ir::Graph;
use oar_passes::placement::{
    build_problem, schedule, Kind, Layer, Options, PlacementError, Problem, RlConfig, Solver,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn link(gbs: f64, us: f64) -> Link {
    Link {
        kind: "test".into(),
        bandwidth_gbs: gbs,
        latency_us: us,
    }
}

/// A random problem: `times[l][k]` seconds per sample, kinds with prices, availability,
/// memory and devices per node, layers with dense/sparse bytes and cuts.
#[allow(clippy::type_complexity)]
fn problem(
    kinds: &[(f64, u32, f64, u32)],
    layers: &[(Vec<f64>, f64, f64, f64)],
    target: f64,
) -> Problem {
    Problem {
        model: "random".into(),
        cluster: "random".into(),
        kinds: kinds
            .iter()
            .enumerate()
            .map(|(i, &(price, available, memory, per_node))| Kind {
                name: format!("k{i}"),
                device_kind: if i == 0 {
                    DeviceKind::Cpu
                } else {
                    DeviceKind::Gpu
                },
                model: format!("model{i}"),
                price_per_hour: price,
                available,
                memory_bytes: memory,
                devices_per_node: per_node,
                intra_node: link(64.0, 2.0),
            })
            .collect(),
        layers: layers
            .iter()
            .enumerate()
            .map(|(i, (t, dense, sparse, cut))| Layer {
                name: format!("l{i}"),
                seconds_per_sample: t[..kinds.len()].to_vec(),
                dense_param_bytes: *dense,
                sparse_table_bytes: *sparse,
                cut_bytes_after: *cut,
                sparse: *sparse > 0.0,
            })
            .collect(),
        network: link(12.5, 20.0),
        replica_batch: 256,
        epoch_samples: 1e7,
        target,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn exact_equals_brute_force_on_small_chains(
        n_kinds in 1usize..=3,
        kinds in prop::collection::vec(
            (0.5f64..10.0, 1u32..=3, prop::sample::select(vec![1e9, 4e9, 64e9]), 1u32..=2),
            3,
        ),
        layers in prop::collection::vec(
            (
                prop::collection::vec(1e-7f64..1e-4, 3),
                prop::sample::select(vec![0.0, 1e6, 5e7, 3e8]),
                prop::sample::select(vec![0.0, 0.0, 2e9, 6e9]),
                0.0f64..4e4,
            ),
            1..=8,
        ),
        target_scale in 0.05f64..4.0,
    ) {
        // Keep brute force small: availability at most 2 on chains longer than 6.
        let mut kinds = kinds[..n_kinds].to_vec();
        if layers.len() > 6 {
            for k in &mut kinds {
                k.1 = k.1.min(2);
            }
        }
        let one: f64 = layers.iter().map(|l| l.0[0]).sum();
        let p = problem(&kinds, &layers, target_scale / one);
        let solver = Solver::new(&p);
        let exact = solver.exact();
        let brute = solver.brute_force(5_000_000).expect("small enough");
        match (&exact, &brute) {
            (Ok(e), Ok(b)) => {
                prop_assert!(close(e.cost_per_epoch, b.cost_per_epoch),
                    "exact {} vs brute force {}", e.cost_per_epoch, b.cost_per_epoch);
                prop_assert!(e.throughput >= p.target);
                // The exact placement is a valid one: re-placing its stages gives it back.
                let stages: Vec<_> = e.stages.iter().map(|s| (s.first, s.end, s.kind, s.replicas)).collect();
                let again = p.place(&stages);
                prop_assert_eq!(again.as_ref(), Some(e));
            }
            (Err(a), Err(b)) => prop_assert!(close(*a, *b), "max throughput {a} vs {b}"),
            _ => prop_assert!(false, "exact {:?} vs brute force {:?}", exact.as_ref().map(|e| e.cost_per_epoch), brute.as_ref().map(|b| b.cost_per_epoch)),
        }
        // No baseline beats the exact scheduler.
        if let Ok(e) = &exact {
            let mut others = vec![solver.greedy()];
            others.extend(solver.single_kind(|_| true));
            for o in others.into_iter().flatten() {
                prop_assert!(e.cost_per_epoch <= o.cost_per_epoch * (1.0 + 1e-12));
            }
        }
    }
}

/// Two stages on one kind share its devices: a cheap-dear-cheap chain whose cheap stages
/// each need 2 devices at the target is impossible with 3 cheap devices (each stage alone
/// would fit) and possible with 4.
#[test]
fn stages_on_one_kind_share_its_devices() {
    let t = |a: f64, b: f64| (vec![a, b, 0.0], 0.0, 0.0, 0.0);
    // Layer 1 is 100x faster on the dear kind; layers 0 and 2 reach ~99k samples/s on one
    // cheap device.
    let layers = [t(1e-5, 1e-4), t(1e-3, 1e-5), t(1e-5, 1e-4)];
    let three = problem(&[(1.0, 3, 64e9, 8), (10.0, 4, 64e9, 8)], &layers, 150_000.0);
    let solver = Solver::new(&three);
    let max = solver.exact().unwrap_err();
    assert!(max > 90_000.0 && max < 100_000.0, "{max}");
    let brute = solver.brute_force(10_000_000).unwrap().unwrap_err();
    assert!(close(max, brute), "{max} vs {brute}");
    let four = problem(&[(1.0, 4, 64e9, 8), (10.0, 4, 64e9, 8)], &layers, 150_000.0);
    let solver = Solver::new(&four);
    let e = solver.exact().unwrap();
    let b = solver.brute_force(10_000_000).unwrap().unwrap();
    assert!(close(e.cost_per_epoch, b.cost_per_epoch));
    let kinds: Vec<(usize, u32)> = e.stages.iter().map(|s| (s.kind, s.replicas)).collect();
    assert_eq!(kinds, [(0, 2), (1, 2), (0, 2)], "{e:?}");
}

/// A CTR-shaped model in the DSL: 26 sparse slots of 3 ids each, sum-pooled embeddings
/// concatenated with 13 dense features, an MLP 400-400-400 and a sigmoid.
pub fn ctr_like(rows: u64, dim: u64) -> Graph {
    let b = ModelBuilder::new("ctr-like");
    let ids = b.input("sparse_ids", "i64[N,26,3]");
    let dense = b.input("dense", "f32[N,13]");
    let table = EmbeddingConfig::new(rows, dim).init(&b, "emb");
    let pooled = table.forward(&ids).reduce_sum(&[2], false);
    let flat = pooled.reshape(vec![ReshapeDim::Infer, (26 * dim as i64).into()]);
    let mut x = b.concat(&[&flat, &dense], 1);
    let mut width = 26 * dim + 13;
    for i in 0..3 {
        x = LinearConfig::new(width, 400)
            .init(&b, &format!("fc{i}"))
            .forward(&x)
            .relu();
        width = 400;
    }
    let y = LinearConfig::new(400, 1)
        .init(&b, "out")
        .forward(&x)
        .sigmoid();
    b.finish(&[&y]).expect("ctr-like builds")
}

fn hetero() -> Cluster {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/clusters/hetero.toml"
    );
    Cluster::load(std::path::Path::new(path)).expect("hetero.toml")
}

fn bindings(batch: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([("N".to_string(), batch)])
}

fn options(target: f64) -> Options {
    Options {
        target,
        rl: RlConfig {
            iterations: 30,
            ..RlConfig::default()
        },
        ..Options::default()
    }
}

#[test]
fn ctr_like_chain_groups_layers_by_parameter_names() {
    let g = ctr_like(100_000, 16);
    let p = build_problem(&g, &bindings(512), &hetero(), "hetero.toml", &options(5e4)).unwrap();
    let names: Vec<&str> = p.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["emb", "fc0", "fc1", "fc2", "out"]);
    assert!(p.layers[0].sparse && !p.layers[1].sparse);
    // The table and its Adagrad accumulator: rows × dim × 4 B × 2.
    assert_eq!(p.layers[0].sparse_table_bytes, 100_000.0 * 16.0 * 4.0 * 2.0);
    // fc0: (26·16 + 13) × 400 weights + 400 biases, f32.
    assert_eq!(
        p.layers[1].dense_param_bytes,
        ((429 * 400 + 400) * 4) as f64
    );
    // After the embeddings: the pooled rows (26·16 f32) and the dense features (13 f32).
    assert!(
        close(p.layers[0].cut_bytes_after, ((26 * 16 + 13) * 4) as f64),
        "{}",
        p.layers[0].cut_bytes_after
    );
    assert!(close(p.layers[1].cut_bytes_after, 1600.0));
    // The GPU is faster on the wide dense layers (the 400-to-1 `out` is launch-bound).
    for l in &p.layers[1..4] {
        assert!(l.seconds_per_sample[1] < l.seconds_per_sample[0], "{l:?}");
    }
}

#[test]
fn impossible_target_names_the_most_any_placement_reaches() {
    let g = ctr_like(100_000, 16);
    let p = build_problem(&g, &bindings(512), &hetero(), "hetero.toml", &options(1e12)).unwrap();
    let err = schedule(p, &RlConfig::default()).unwrap_err();
    let PlacementError::Infeasible { max, .. } = &err else {
        panic!("{err}")
    };
    assert!(*max > 0.0 && *max < 1e12);
    let msg = err.to_string();
    assert!(msg.contains("reaches 1000000000000 samples/s"), "{msg}");
    assert!(msg.contains("the most any placement reaches"), "{msg}");
    // At that maximum the target is met.
    let p = build_problem(&g, &bindings(512), &hetero(), "hetero.toml", &options(*max)).unwrap();
    let s = schedule(
        p,
        &RlConfig {
            iterations: 5,
            ..RlConfig::default()
        },
    )
    .unwrap();
    assert!(close(s.best.throughput, *max) || s.best.throughput > *max);
}

#[test]
fn a_cluster_without_prices_is_an_error_naming_file_and_group() {
    let g = ctr_like(1000, 8);
    let cluster = Cluster::from_toml(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/clusters/hetero.toml"
        ))
        .unwrap()
        .replace("price_per_hour = 5.12\n", ""),
        "my-cluster.toml",
    )
    .unwrap();
    let err = build_problem(
        &g,
        &bindings(512),
        &cluster,
        "my-cluster.toml",
        &options(5e4),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("my-cluster.toml"), "{err}");
    assert!(err.contains("`a100`"), "{err}");
    assert!(err.contains("price_per_hour"), "{err}");
}

#[test]
fn text_report_snapshot() {
    let g = ctr_like(1_000_000, 16);
    let p = build_problem(&g, &bindings(512), &hetero(), "hetero.toml", &options(5e5)).unwrap();
    let mut s = schedule(
        p,
        &RlConfig {
            iterations: 20,
            ..RlConfig::default()
        },
    )
    .unwrap();
    // Times to schedule vary run to run; the snapshot pins everything else.
    for m in &mut s.methods {
        m.seconds = 0.0;
    }
    insta::assert_snapshot!(s.text());
}
