//! SGEMM through oar's generated kernel against numpy/OpenBLAS timed in the same run.
//! `cargo bench --bench sgemm` (results: benches/README.md).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oar::codegen::jit::JitModel;
use oar::runtime::HostTensor;
use std::collections::BTreeMap;
use std::process::Command;

const THREADS: usize = 2;

fn model(n: usize) -> (JitModel, [HostTensor; 2]) {
    let text = format!("graph @sgemm(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n");
    let g = oar::ir::read_graph(&text, "sgemm").expect("valid graph");
    let m = JitModel::new(&g, &BTreeMap::new(), &Default::default(), THREADS).expect("compiles");
    let a = HostTensor::f32(
        vec![n, n],
        (0..n * n).map(|i| (i % 13) as f32 * 0.1).collect(),
    );
    (m, [a.clone(), a])
}

fn numpy_gflops(n: usize) -> Option<f64> {
    let out = Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers.py"),
            "sgemm",
            &n.to_string(),
            &THREADS.to_string(),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    let mut summary = Vec::new();
    for n in [256usize, 512, 1024, 2048] {
        let (mut m, ins) = model(n);
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.sample_size(if n >= 1024 { 10 } else { 30 });
        let mut best = f64::MAX;
        group.bench_function(format!("oar/{n}"), |b| {
            b.iter_custom(|iters| {
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    m.run(&ins).expect("runs");
                }
                let d = t.elapsed();
                best = best.min(d.as_secs_f64() / iters as f64);
                d
            })
        });
        let ours = 2.0 * (n as f64).powi(3) / best / 1e9;
        summary.push((n, ours, numpy_gflops(n)));
    }
    group.finish();
    println!("\nSGEMM, {THREADS} threads (oar: best of the criterion samples; numpy: median):");
    for (n, ours, np) in summary {
        match np {
            Some(p) => println!(
                "  n={n:5}: oar {ours:6.1} GFLOP/s  numpy {p:6.1} GFLOP/s  oar/numpy {:.2}",
                ours / p
            ),
            None => println!("  n={n:5}: oar {ours:6.1} GFLOP/s  (numpy not available)"),
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
