//! The planner: every emitted plan fits memory and its degrees multiply to the device count;
//! layer partitions are balanced; impossible requests say what would fit.

use oar_ir::cluster::preset;
use oar_passes::parallel::search::partition_layers;
use oar_passes::parallel::{plan, Job, LayerSpec, ModelSpec, PlanError, TrainingCostModel};
use proptest::prelude::*;

fn gpt(layers: usize, hidden: u64, heads: u64) -> ModelSpec {
    ModelSpec {
        name: format!("gpt-{layers}x{hidden}"),
        vocab: 51200,
        embed_hidden: hidden,
        extra_embedding_rows: 2048,
        layers: vec![
            LayerSpec {
                hidden,
                heads,
                ffn: 4 * hidden
            };
            layers
        ],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn emitted_plans_fit_and_cover_every_device(
        layers in 2usize..48,
        width in 1u64..40,
        nodes in 1u32..9,
        per_device in 1u64..4,
        seq in prop::sample::select(vec![512u64, 1024, 2048]),
        cluster in prop::sample::select(vec!["a100", "v100", "h100"]),
    ) {
        let model = gpt(layers, width * 128, width.max(1));
        let c = preset(cluster).unwrap().with_nodes(nodes);
        let job = Job { global_batch: per_device * c.num_devices(), seq };
        match plan(&model, &job, &c, &TrainingCostModel::default()) {
            Ok(out) => {
                let p = &out.best.plan;
                prop_assert_eq!(p.dp * p.tp * p.pp, c.num_devices());
                prop_assert!(out.best.fits && out.best.memory.total <= out.best.memory.capacity);
                prop_assert_eq!(p.stage_layers.iter().sum::<usize>(), layers);
                prop_assert_eq!(p.dp * p.micro_batch_size * p.micro_batches, job.global_batch);
                prop_assert!(out.best.time.total > 0.0 && out.best.time.total.is_finite());
                for a in &out.alternatives {
                    prop_assert_eq!(a.evaluation.plan.dp * a.evaluation.plan.tp * a.evaluation.plan.pp, c.num_devices());
                    prop_assert!(a.evaluation.time.total >= out.best.time.total || !a.evaluation.fits);
                }
            }
            Err(PlanError::DoesNotFit { min_gib, .. }) => prop_assert!(min_gib > c.node_groups[0].device.memory_gib),
            Err(PlanError::NoCandidate(_)) => {}
        }
    }
}

#[test]
fn stage_partition_balances_uneven_layers() {
    let costs = [1.0, 1.0, 1.0, 1.0, 8.0, 1.0, 1.0, 1.0];
    let p = partition_layers(&costs, 3, 0.0).unwrap();
    assert_eq!(p.iter().sum::<usize>(), 8);
    // The heavy layer sits alone or nearly so; no stage exceeds it by much.
    let mut start = 0;
    let worst = p
        .iter()
        .map(|&n| {
            let s: f64 = costs[start..start + n].iter().sum();
            start += n;
            s
        })
        .fold(0.0, f64::max);
    assert!(worst <= 9.0, "{p:?}");
    assert_eq!(partition_layers(&costs, 9, 0.0), None);
}

#[test]
fn impossible_requests_say_what_would_fit() {
    let model = gpt(96, 12288, 96);
    let c = preset("v100").unwrap().with_nodes(1);
    let err = plan(
        &model,
        &Job {
            global_batch: 8,
            seq: 2048,
        },
        &c,
        &TrainingCostModel::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("GiB per device"), "{msg}");
    assert!(msg.contains("or at least"), "{msg}");
}

/// A cluster of two device kinds: `fast` nodes of A100s, then `slow` nodes of Ascend 910s.
fn mixed(fast: u32, slow: u32) -> oar_ir::cluster::Cluster {
    let mut c = preset("a100").unwrap().with_nodes(fast);
    let mut npu = preset("ascend910").unwrap().node_groups[0].clone();
    npu.nodes = slow;
    c.node_groups.push(npu);
    c.name = "a100+ascend910".into();
    c
}

#[test]
fn mixed_clusters_give_the_slower_kind_proportionally_fewer_layers() {
    let c = mixed(2, 2);
    let model = gpt(32, 4096, 32);
    let job = Job {
        global_batch: 64,
        seq: 2048,
    };
    let fixed = oar_passes::parallel::Constraints {
        pp: Some(4),
        tp: Some(8),
        ..Default::default()
    };
    let out =
        oar_passes::parallel::plan_with(&model, &job, &c, &TrainingCostModel::default(), &fixed)
            .unwrap();
    let b = &out.best;
    // Two stages on each kind, A100s first.
    assert_eq!(b.stage_groups, vec![0, 0, 1, 1]);
    let layers = &b.plan.stage_layers;
    assert_eq!(layers.iter().sum::<usize>(), 32);
    let (fast, slow) = (layers[0] + layers[1], layers[2] + layers[3]);
    assert!(slow < fast, "{layers:?}");
    // The split follows the kinds' speeds on a full-width GEMM, to within one layer per
    // stage (the last stage also carries the LM head).
    let ev = oar_passes::parallel::step_cost::Evaluator::new(
        &model,
        &job,
        &c,
        TrainingCostModel::default(),
    );
    let speed = |g: usize| {
        let k = ev.kernels(g);
        k.peak * k.gemm_efficiency(2048, 4096, 4096)
    };
    let expect = 32.0 * speed(1) / (speed(0) + speed(1));
    assert!(
        (slow as f64 - expect).abs() <= 2.0,
        "{layers:?}, expected ~{expect:.1} on the NPUs"
    );
    // Memory is checked against each kind's own capacity (32 GiB on the NPU).
    assert!(b.fits && b.memory.total <= b.memory.capacity);
}

#[test]
fn mixed_clusters_keep_stages_on_one_kind() {
    let c = mixed(1, 3);
    let model = gpt(24, 2048, 16);
    let job = Job {
        global_batch: 32,
        seq: 1024,
    };
    let out = plan(&model, &job, &c, &TrainingCostModel::default()).unwrap();
    let p = &out.best.plan;
    // A stage (dp × tp devices) never straddles the two groups of 8 and 24 devices.
    assert!(8 % (p.dp * p.tp) == 0, "{p:?}");
    assert_eq!(out.best.stage_groups.len() as u64, p.pp);
}

#[test]
fn weak_scaling_of_a_fixed_layout_stays_below_one() {
    use oar_passes::parallel::weak_scaling;
    let c = preset("a100").unwrap().with_nodes(32);
    let model = gpt(48, 8192, 64);
    let job = Job {
        global_batch: 512,
        seq: 2048,
    };
    let cost = TrainingCostModel::default();
    let out = plan(&model, &job, &c, &cost).unwrap();
    let rows = weak_scaling(&model, &job, &c, &cost, &out.best.plan);
    let effs: Vec<f64> = rows.iter().filter_map(|r| r.efficiency).collect();
    assert!(effs.len() >= 2, "{rows:?}");
    assert!((effs[0] - 1.0).abs() < 1e-12);
    for e in &effs[1..] {
        assert!(*e < 1.0 && *e > 0.8, "{effs:?}");
    }
    // Without stragglers or contention the loss is only the collectives' growth.
    let still = TrainingCostModel {
        step_time_cv: 0.0,
        ..TrainingCostModel::default()
    };
    let quiet = weak_scaling(&model, &job, &c, &still, &out.best.plan);
    let last = |r: &[oar_passes::parallel::search::ScalingRow]| {
        r.iter().rev().find_map(|r| r.efficiency).unwrap()
    };
    assert!(last(&quiet) > last(&rows), "{quiet:?}");
}
