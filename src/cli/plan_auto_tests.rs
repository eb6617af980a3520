//! Tests of `--plan auto`'s choice: the cluster fitted to the world, the runtime's form of a
//! layout, the fastest runnable layout, and the flags that reproduce it.

use super::*;
use clap::Parser;

/// The calibrated file the tests and docs use (this machine, one device).
const LOCAL: &str = "examples/clusters/local-epyc2.toml";

fn local() -> Cluster {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(LOCAL);
    Cluster::load(&p).expect("the committed calibrated cluster loads")
}

fn world(size: u64, local: u64) -> World {
    World {
        size,
        rank: 0,
        local,
    }
}

/// `ernie-3.0-tiny` as tests/train_auto.rs trains it: 2 layers, hidden 32, 2 heads.
fn tiny() -> ModelSpec {
    let mut cfg = oar::models::ernie_config("ernie-3.0-tiny").expect("zoo");
    cfg.vocab = 300;
    cfg.universal.layers = 2;
    cfg.universal.hidden = 32;
    cfg.universal.heads = 2;
    cfg.universal.ffn = 64;
    crate::cli::plan::ernie_spec("ernie-3.0-tiny", &cfg)
}

#[test]
fn a_cpu_node_is_shared_by_its_ranks() {
    let file = local();
    let one = &file.node_groups[0];
    assert_eq!(one.devices_per_node, 1);
    let c = cluster_for(&file, world(4, 4)).expect("fits");
    let g = &c.node_groups[0];
    assert_eq!((g.nodes, g.devices_per_node), (1, 4));
    let f32 = |g: &oar::ir::cluster::NodeGroup| g.device.peak_tflops.f32.expect("f32");
    assert!((f32(g) * 4.0 - f32(one)).abs() < 1e-12);
    assert!((g.device.memory_gib * 4.0 - one.device.memory_gib).abs() < 1e-9);
    // Two nodes of two ranks each; the file as it is when it already has the devices.
    let c = cluster_for(&file, world(4, 2)).expect("fits");
    assert_eq!(
        (c.node_groups[0].nodes, c.node_groups[0].devices_per_node),
        (2, 2)
    );
    assert_eq!(cluster_for(&file, world(1, 1)).expect("same"), file);
    let e = cluster_for(&file, world(3, 2)).expect_err("3 ranks, 2 per node");
    assert!(e.to_string().contains("whole nodes"), "{e}");
}

#[test]
fn an_accelerator_is_one_ranks_whole() {
    let file = Cluster::resolve("dgx-a100-80g").expect("preset");
    let per = file.node_groups[0].devices_per_node as u64;
    let c = cluster_for(&file, world(2 * per, per)).expect("two nodes");
    assert_eq!(c.node_groups[0].nodes, 2);
    assert_eq!(c.node_groups[0].device, file.node_groups[0].device);
    let e = cluster_for(&file, world(2 * per, 2 * per)).expect_err("too many per node");
    assert!(e.to_string().contains("devices"), "{e}");
}

#[test]
fn runs_split_stages_by_layer_count_and_keep_one_micro_batch_outside_pipelines() {
    let base = |pp, schedule| ParallelPlan {
        dp: 2,
        tp: 1,
        pp,
        micro_batch_size: 1,
        micro_batches: 4,
        zero_stage: 0,
        recompute: PlanRecompute::Full,
        sequence_parallel: false,
        schedule,
        mapping: Mapping::TpPpDp,
        stage_layers: vec![],
    };
    let p = as_run(base(1, Schedule::OneFOneB), 3, 8);
    assert_eq!((p.micro_batch_size, p.micro_batches), (4, 1));
    assert_eq!(as_run(base(2, Schedule::GPipe), 3, 8).stage_layers, [2, 1]);
    // Interleaved: 4 virtual stages of 5 layers (2, 1, 1, 1); rank 0 holds 0 and 2.
    let p = as_run(base(2, Schedule::Interleaved(2)), 5, 8);
    assert_eq!(p.stage_layers, [3, 2]);
    assert_eq!(not_executable(&p), None);
    // Tensor-split pipeline stages run (`--tp 2 --pp 2`), but not with ZeRO.
    let mut tp_pp = p.clone();
    tp_pp.tp = 2;
    assert_eq!(not_executable(&tp_pp), None);
    tp_pp.zero_stage = 1;
    assert!(not_executable(&tp_pp).is_some());
    let mut no_rc = p;
    no_rc.recompute = PlanRecompute::None;
    assert!(not_executable(&no_rc).is_some());
}

/// Every layout the runtime runs for `n` ranks, enumerated here from the flags' rules
/// (not from the planner's candidate list), with the planner's micro-batch sizes.
fn runnable(model: &ModelSpec, batch: u64, n: u64) -> Vec<ParallelPlan> {
    let (heads, ffn) = (model.layers[0].heads, model.layers[0].ffn);
    let mut out = Vec::new();
    for tp in
        (1..=n).filter(|&t| n.is_multiple_of(t) && heads.is_multiple_of(t) && ffn.is_multiple_of(t))
    {
        for pp in (1..=n / tp).filter(|&p| (n / tp).is_multiple_of(p)) {
            let dp = n / (tp * pp);
            if !batch.is_multiple_of(dp) || pp as usize > model.layers.len() {
                continue;
            }
            let zeros: &[u8] = if dp > 1 && tp == 1 && pp == 1 {
                &[0, 1, 2, 3]
            } else {
                &[0]
            };
            let per = batch / dp;
            let mut shapes = vec![];
            if pp == 1 {
                shapes.push((per, 1, Schedule::OneFOneB));
            } else {
                for mbs in [1u64, 2, 4, 8]
                    .into_iter()
                    .filter(|&m| per.is_multiple_of(m))
                {
                    let m = per / mbs;
                    shapes.push((mbs, m, Schedule::OneFOneB));
                    shapes.push((mbs, m, Schedule::GPipe));
                    if model.layers.len() as u64 >= 2 * pp && m.is_multiple_of(pp) {
                        shapes.push((mbs, m, Schedule::Interleaved(2)));
                    }
                }
            }
            for &zero_stage in zeros {
                for recompute in [
                    PlanRecompute::None,
                    PlanRecompute::Selective,
                    PlanRecompute::Full,
                ] {
                    if (pp > 1 && recompute != PlanRecompute::Full)
                        || (zero_stage == 3 && recompute != PlanRecompute::None)
                    {
                        continue;
                    }
                    for &(mbs, m, schedule) in &shapes {
                        let p = ParallelPlan {
                            dp,
                            tp,
                            pp,
                            micro_batch_size: mbs,
                            micro_batches: m,
                            zero_stage,
                            recompute,
                            sequence_parallel: false,
                            schedule,
                            mapping: if dp > 1 && pp > 1 {
                                Mapping::TpPpDp
                            } else {
                                Mapping::TpDpPp
                            },
                            stage_layers: vec![],
                        };
                        out.push(as_run(p, model.layers.len(), batch));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn the_choice_is_the_planners_fastest_runnable_layout() {
    let model = tiny();
    for n in [1, 2, 4] {
        let job = Job {
            global_batch: 8,
            seq: 16,
        };
        let cluster = cluster_for(&local(), world(n, n)).expect("fits");
        let c = choose(&model, &job, &cluster).expect("a plan");
        let b = &c.best.plan;
        assert_eq!(b.dp * b.tp * b.pp, n, "{b:?}");
        assert_eq!(not_executable(b), None);
        let ev = Evaluator::new(&model, &job, &cluster, TrainingCostModel::default());
        let all = runnable(&model, 8, n);
        assert_eq!(all.len(), c.executable, "{n} ranks: the same runnable set");
        let fastest = all
            .iter()
            .map(|p| ev.evaluate(p))
            .filter(|e| e.fits)
            .map(|e| e.time.total)
            .fold(f64::INFINITY, f64::min);
        assert!(
            c.best.time.total <= fastest * (1.0 + 1e-12),
            "{n} ranks: chose {} s, {fastest} s runnable",
            c.best.time.total
        );
        assert!(c.others.iter().all(|o| o.time.total >= c.best.time.total));
    }
}

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    train: TrainArgs,
}

fn parse(extra: &[String]) -> TrainArgs {
    let mut a: Vec<String> = ["oar", "ernie-3.0-tiny", "--data", "d"]
        .map(String::from)
        .to_vec();
    a.extend(extra.iter().cloned());
    Cmd::try_parse_from(&a).expect("parses").train
}

#[test]
fn the_printed_flags_set_what_the_plan_sets() {
    let base = ParallelPlan {
        dp: 2,
        tp: 1,
        pp: 2,
        micro_batch_size: 1,
        micro_batches: 4,
        zero_stage: 0,
        recompute: PlanRecompute::Full,
        sequence_parallel: false,
        schedule: Schedule::Interleaved(2),
        mapping: Mapping::TpPpDp,
        stage_layers: vec![2, 2],
    };
    let dp_zero = ParallelPlan {
        pp: 1,
        dp: 4,
        zero_stage: 2,
        recompute: PlanRecompute::Selective,
        ..base.clone()
    };
    let tp = ParallelPlan {
        pp: 1,
        tp: 2,
        recompute: PlanRecompute::None,
        ..base.clone()
    };
    for p in [base, dp_zero, tp] {
        let fixed = parse(&flags(&p));
        let mut auto = parse(&[
            "--plan".into(),
            "auto".into(),
            "--cluster".into(),
            "c".into(),
        ]);
        assert!(conflicts(&auto).is_empty());
        apply(&mut auto, &p);
        let key = |a: &TrainArgs| {
            let d = &a.dist;
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {} {:?}",
                d.dp, d.tp, d.pp, d.zero, d.micro_batches, d.chunks, d.pp_schedule, a.recompute
            )
        };
        assert_eq!(key(&auto), key(&fixed), "{:?}", flags(&p));
        assert!(!conflicts(&fixed).is_empty() || flags(&p).is_empty());
    }
}

#[test]
fn a_world_no_layout_splits_is_refused_with_the_rules() {
    let cluster = cluster_for(&local(), world(3, 3)).expect("fits");
    let job = Job {
        global_batch: 8,
        seq: 16,
    };
    let e = choose(&tiny(), &job, &cluster)
        .err()
        .expect("3 ranks cannot split batch 8, 2 heads or 2 layers");
    assert!(
        e.to_string().contains("splits ernie-3.0-tiny over 3 ranks"),
        "{e}"
    );
}
