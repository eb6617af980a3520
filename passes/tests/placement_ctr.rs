//! HeterPS placement of the zoo's CTR models (CTR-DNN, Wide&Deep, DeepFM) on the
//! heterogeneous example cluster (a CPU server and an 8x A100 node) at three throughput
//! targets: the exact scheduler costs no more than greedy, RL, CPU-only and GPU-only on
//! every case, and schedules in less time than RL.
//!
//! The table in docs/heterps.md ("Placement") is printed by the ignored test:
//! `cargo test --release -p oar-passes --test placement_ctr -- --ignored --nocapture`.

use oar_ir::cluster::Cluster;
use oar_ir::dist::DeviceKind;
use oar_passes::placement::report::{placement_line, thousands};
use oar_passes::placement::{
    build_problem, schedule, Options, Problem, RlConfig, Schedule, Solver,
};
use std::collections::BTreeMap;

const MODELS: [&str; 3] = ["ctr-dnn", "wide-deep", "deepfm"];

fn hetero() -> Cluster {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/clusters/hetero.toml"
    );
    Cluster::load(std::path::Path::new(path)).expect("hetero.toml")
}

fn problem(model: &str, target: f64) -> Problem {
    let g = oar_models::build(model)
        .expect("a zoo model")
        .expect("builds");
    let opts = Options {
        target,
        ..Options::default()
    };
    let b = BTreeMap::from([("N".to_string(), opts.replica_batch)]);
    build_problem(&g, &b, &hetero(), "hetero.toml", &opts).expect("a problem")
}

/// 50,000 samples/s (the figure), and a quarter and three quarters of the most the
/// cluster reaches for the model.
fn targets(model: &str) -> [f64; 3] {
    let p = problem(model, 1.0);
    let max = Solver::new(&p).max_throughput();
    [50_000.0, (0.25 * max).round(), (0.75 * max).round()]
}

fn run(model: &str, target: f64, rl: &RlConfig) -> Schedule {
    schedule(problem(model, target), rl).expect("a feasible target")
}

#[test]
fn exact_is_cheapest_and_faster_than_rl_on_ctr_models() {
    let rl = RlConfig {
        iterations: 40,
        ..RlConfig::default()
    };
    for model in MODELS {
        for target in targets(model) {
            let s = run(model, target, &rl);
            assert!(s.best.throughput >= target, "{model} at {target}");
            let exact = &s.methods[0];
            for m in &s.methods[1..] {
                if let Some(Ok(pl)) = &m.placement {
                    assert!(
                        s.best.cost_per_epoch <= pl.cost_per_epoch * (1.0 + 1e-12),
                        "{model} at {target}: {} {} < exact {}",
                        m.method.label(),
                        pl.cost_per_epoch,
                        s.best.cost_per_epoch
                    );
                }
            }
            let rl_time = s.methods.last().unwrap().seconds;
            assert!(
                exact.seconds < rl_time,
                "{model} at {target}: exact {} s vs RL {} s",
                exact.seconds,
                rl_time
            );
        }
    }
}

#[test]
fn ctr_models_have_their_layers_in_chain_order() {
    let names = |m: &str| -> Vec<String> {
        problem(m, 1.0)
            .layers
            .iter()
            .map(|l| l.name.clone())
            .collect()
    };
    assert_eq!(
        names("ctr-dnn"),
        ["emb", "fc0", "fc1", "fc2", "out", "loss"]
    );
    let wd = names("wide-deep");
    assert!(wd.contains(&"wide".to_string()), "{wd:?}");
    let fm = names("deepfm");
    assert!(fm.contains(&"fm".to_string()), "{fm:?}");
    let p = problem("ctr-dnn", 1.0);
    assert!(p.layers[0].sparse);
    assert!(p.layers[1..].iter().all(|l| !l.sparse));
}

/// The docs table: cost per epoch and time to schedule of every method, and the predicted
/// throughput ratios of the paper's setting.
#[test]
#[ignore = "prints the docs/heterps.md table; run with --release --ignored --nocapture"]
fn print_docs_table() {
    let rl = RlConfig::default();
    println!("| model | target (samples/s) | exact placement | exact | greedy | CPU only | GPU only | RL |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for model in MODELS {
        for target in targets(model) {
            let s = run(model, target, &rl);
            let cells: Vec<String> = s
                .methods
                .iter()
                .map(|m| match &m.placement {
                    Some(Ok(pl)) => format!(
                        "${:.4} ({:.2}x), {:.2} ms",
                        pl.cost_per_epoch,
                        pl.cost_per_epoch / s.best.cost_per_epoch,
                        m.seconds * 1e3
                    ),
                    Some(Err(max)) => {
                        format!("misses (≤ {}), {:.2} ms", thousands(*max), m.seconds * 1e3)
                    }
                    None => "-".into(),
                })
                .collect();
            println!(
                "| {model} | {} | {} | {} |",
                thousands(target),
                placement_line(&s.problem, &s.best),
                cells.join(" | ")
            );
        }
    }
    println!();
    println!(
        "| model | heterogeneous (samples/s) | CPU only | GPU only | hetero / CPU | hetero / GPU |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for model in MODELS {
        let p = problem(model, 1.0);
        let solver = Solver::new(&p);
        let hetero = solver.max_throughput();
        let best_of = |kind: DeviceKind| {
            (0..p.kinds.len())
                .filter(|&k| p.kinds[k].device_kind == kind)
                .map(|k| solver.max_throughput_of(&vec![k; p.layers.len()]))
                .fold(0.0, f64::max)
        };
        let (cpu, gpu) = (best_of(DeviceKind::Cpu), best_of(DeviceKind::Gpu));
        println!(
            "| {model} | {} | {} | {} | {:.2}x | {:.2}x |",
            thousands(hetero),
            thousands(cpu),
            thousands(gpu),
            hetero / cpu,
            hetero / gpu
        );
    }
}
