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
