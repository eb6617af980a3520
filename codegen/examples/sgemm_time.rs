//! Ad-hoc: `cargo run --release -p oar-codegen --example sgemm_time -- 1024 2`.
use oar_codegen::jit::JitModel;
use oar_runtime::HostTensor;
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let text = format!("graph @mm(%a: f32[{n},{n}], %b: f32[{n},{n}]) -> (f32[{n},{n}]) {{\n  %c = matmul(%a, %b) : f32[{n},{n}]\n  return %c\n}}\n");
    let g = oar_ir::read_graph(&text, "mm").unwrap();
    let mut m = JitModel::new(&g, &BTreeMap::new(), &Default::default(), threads).unwrap();
    let a = HostTensor::f32(
        vec![n, n],
        (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect(),
    );
    let ins = [a.clone(), a];
    m.run(&ins).unwrap();
    let reps = (2e9 / (2.0 * (n as f64).powi(3))).clamp(3.0, 200.0) as usize;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        m.run(&ins).unwrap();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "n={n} threads={threads}: {:.1} GFLOP/s",
        2.0 * (n as f64).powi(3) / s / 1e9
    );
}
