//! Latency and a per-kernel profile of a zoo model compiled for this CPU at batch 1:
//! `cargo run --release -p oar-codegen --example profile -- lcnet_x1_0 2` (model, threads;
//! the model may also be a `.oir` file with one static f32 input).
use oar_codegen::jit::JitModel;
use oar_passes::{PassContext, Pipeline};
use oar_runtime::{init::init_weights, HostTensor};
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("lcnet_x1_0");
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let g = if name.ends_with(".oir") {
        oar_ir::read_graph(&std::fs::read_to_string(name).unwrap(), name).unwrap()
    } else {
        oar_models::build(name).unwrap().unwrap()
    };
    let dims: Vec<usize> = {
        let t = &g.node(g.inputs()[0]).outputs[0];
        let bind = BTreeMap::from([("N".to_string(), 1)]);
        t.shape.eval(&bind, 1).iter().map(|&d| d as usize).collect()
    };
    let w = init_weights(&g, 0).unwrap();
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    let t0 = std::time::Instant::now();
    let (opt, _) = Pipeline::named("inference", &[])
        .unwrap()
        .run(g, &cx, |_, _| {})
        .unwrap();
    let b = BTreeMap::from([("N".to_string(), 1)]);
    let mut m = JitModel::new(&opt, &b, &w, threads).unwrap();
    eprintln!("compile {:.2} s", t0.elapsed().as_secs_f64());
    let n: usize = dims.iter().product();
    let x = HostTensor::f32(dims, (0..n).map(|i| (i % 255) as f32 / 255.0).collect());
    for _ in 0..5 {
        m.run(std::slice::from_ref(&x)).unwrap();
    }
    let mut ts = Vec::new();
    for _ in 0..50 {
        let t = std::time::Instant::now();
        m.run(std::slice::from_ref(&x)).unwrap();
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Per-kernel times summed over 20 runs: one run is too noisy on a shared machine.
    let mut sum: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for _ in 0..20 {
        for (k, t) in m.profile(std::slice::from_ref(&x)).unwrap() {
            let e = sum.entry(k).or_default();
            e.0 += t / 20.0;
            e.1 += 1;
        }
    }
    let mut prof: Vec<(String, f64)> = sum
        .into_iter()
        .map(|(k, (t, n))| (format!("{k} x{}", n / 20), t))
        .collect();
    prof.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = prof.iter().map(|p| p.1).sum();
    let top: usize = std::env::var("OAR_PROFILE_TOP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    for (k, t) in prof.iter().take(top) {
        eprintln!("  {:>7.3} ms {:5.1}%  {k}", t * 1e3, 100.0 * t / total);
    }
    eprintln!(
        "{name} threads {threads}: p50 {:.3} ms  min {:.3} ms",
        ts[25], ts[0]
    );
}
