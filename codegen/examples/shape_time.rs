//! GEMM throughput on one shape: `cargo run --release -p oar-codegen --example shape_time --
//! M N K THREADS [weight]` (compare `python3 benches/peers.py sgemm N THREADS` for square
//! shapes). Inputs are bound in place, so only the kernels are timed; with `weight`, B is
//! a parameter (as in a linear layer), with `weight-a` A is (as in a 1×1 convolution).
use oar_codegen::jit::JitModel;
use oar_runtime::HostTensor;
use std::collections::BTreeMap;
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .take(4)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, n, k, t) = (a[0], a[1], a[2], a[3]);
    let mode = std::env::args().nth(5).unwrap_or_default();
    let weight = mode == "weight" || mode == "weight-a";
    let text = if mode == "weight-a" {
        format!("graph @mm(%bx: f32[{k},{n}]) -> (f32[{m},{n}]) {{\n  %a = param \"b\" : f32[{m},{k}]\n  %c = matmul(%a, %bx) : f32[{m},{n}]\n  return %c\n}}\n")
    } else if weight {
        format!("graph @mm(%a: f32[{m},{k}]) -> (f32[{m},{n}]) {{\n  %b = param \"b\" : f32[{k},{n}]\n  %c = matmul(%a, %b) : f32[{m},{n}]\n  return %c\n}}\n")
    } else {
        format!("graph @mm(%a: f32[{m},{k}], %b: f32[{k},{n}]) -> (f32[{m},{n}]) {{\n  %c = matmul(%a, %b) : f32[{m},{n}]\n  return %c\n}}\n")
    };
    let g = oar_ir::read_graph(&text, "mm").unwrap();
    let w = BTreeMap::from([(
        "b".to_string(),
        if mode == "weight-a" {
            HostTensor::f32(vec![m, k], vec![0.25; m * k])
        } else {
            HostTensor::f32(vec![k, n], vec![0.25; k * n])
        },
    )]);
    let mut model = JitModel::new(&g, &BTreeMap::new(), &w, t).unwrap();
    let exec = model.executor();
    exec.input_f32_mut(0).unwrap().fill(0.5);
    if !weight {
        exec.input_f32_mut(1).unwrap().fill(0.25);
    }
    exec.run_bound().expect("a one-rank program cannot fail");
    let reps = (1e9 / (2.0 * (m * n * k) as f64)).clamp(5.0, 2000.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let s = std::time::Instant::now();
        for _ in 0..reps {
            exec.run_bound().expect("a one-rank program cannot fail");
        }
        best = best.min(s.elapsed().as_secs_f64() / reps as f64);
    }
    println!(
        "M={m} N={n} K={k} t={t}: {:.1} GFLOP/s ({:.3} ms)",
        2.0 * (m * n * k) as f64 / best / 1e9,
        best * 1e3
    );
}
