//! GEMM throughput on one shape: `cargo run --release -p oar-codegen --example shape_time --
//! M N K THREADS` (compare `python3 benches/peers.py sgemm N THREADS` for square shapes).
use oar_codegen::jit::JitModel;
use oar_runtime::HostTensor;
use std::collections::BTreeMap;
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, n, k, t) = (a[0], a[1], a[2], a[3]);
    let text = format!("graph @mm(%a: f32[{m},{k}], %b: f32[{k},{n}]) -> (f32[{m},{n}]) {{\n  %c = matmul(%a, %b) : f32[{m},{n}]\n  return %c\n}}\n");
    let g = oar_ir::read_graph(&text, "mm").unwrap();
    let mut model = JitModel::new(&g, &BTreeMap::new(), &Default::default(), t).unwrap();
    let x = HostTensor::f32(vec![m, k], vec![0.5; m * k]);
    let y = HostTensor::f32(vec![k, n], vec![0.25; k * n]);
    let ins = [x, y];
    model.run(&ins).unwrap();
    let reps = (1e9 / (2.0 * (m * n * k) as f64)).clamp(5.0, 2000.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let s = std::time::Instant::now();
        for _ in 0..reps {
            model.run(&ins).unwrap();
        }
        best = best.min(s.elapsed().as_secs_f64() / reps as f64);
    }
    println!(
        "M={m} N={n} K={k} t={t}: {:.1} GFLOP/s ({:.3} ms)",
        2.0 * (m * n * k) as f64 / best / 1e9,
        best * 1e3
    );
}
