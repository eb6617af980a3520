//! SGEMM through oar's generated kernel against numpy/OpenBLAS timed in the same run.
//! `cargo bench --bench sgemm` (results: benches/README.md).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oar::codegen::jit::JitModel;
use std::collections::BTreeMap;

mod peer;
use peer::{Interleaved, Peer};

const THREADS: usize = 2;
const ROUNDS: usize = 9;

/// `C = A × B` with A and B bound in place (as numpy's arrays are), so only the product is
/// timed on both sides.
fn model(n: usize) -> JitModel {
    let text = format!("graph @sgemm(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n");
    let g = oar::ir::read_graph(&text, "sgemm").expect("valid graph");
    let mut m =
        JitModel::new(&g, &BTreeMap::new(), &Default::default(), THREADS).expect("compiles");
    let exec = m.executor();
    for k in 0..2 {
        let input = exec.input_f32_mut(k).expect("f32 input");
        for (i, v) in input.iter_mut().enumerate() {
            *v = (i % 13) as f32 * 0.1 - 0.6;
        }
    }
    m
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    let mut summary = Vec::new();
    for n in [256usize, 512, 1024, 2048] {
        let mut m = model(n);
        let flops = 2.0 * (n as f64).powi(3);
        group.throughput(Throughput::Elements(flops as u64));
        group.sample_size(if n >= 1024 { 10 } else { 30 });
        group.bench_function(format!("oar/{n}"), |b| b.iter(|| m.executor().run_bound()));
        let reps = (2e10 / flops).clamp(5.0, 300.0) as usize;
        let r = Peer::start(&["sgemm", &n.to_string(), &THREADS.to_string()]).and_then(|mut np| {
            Interleaved::measure(
                ROUNDS,
                reps,
                |reps| {
                    flops
                        / peer::median_time(reps, || {
                            m.executor()
                                .run_bound()
                                .expect("a one-rank program cannot fail")
                        })
                        / 1e9
                },
                &mut np,
            )
        });
        summary.push((n, r));
    }
    group.finish();
    println!(
        "\nSGEMM, {THREADS} threads, GFLOP/s; {ROUNDS} interleaved rounds (oar block, numpy block); \
         medians over rounds, and the median of the per-round ratios:"
    );
    for (n, r) in summary {
        match r {
            Some(r) => {
                let (ours, np, ratio, lo, hi) = r.summary();
                println!(
                    "  n={n:5}: oar {ours:6.1}  numpy {np:6.1}  oar/numpy {ratio:.2} (rounds {lo:.2}–{hi:.2})"
                );
            }
            None => println!("  n={n:5}: numpy not available"),
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
