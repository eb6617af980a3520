//! The LLVM path against the reference interpreter on random inputs:
//! max |a − b| / max |b| ≤ 1e-4.

use oar_codegen::jit::JitModel;
use oar_runtime::{init::init_weights, run, HostTensor};
use std::collections::BTreeMap;

const TOL: f64 = 1e-4;

fn rel_err(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    let (x, y) = (a.to_f64(), b.to_f64());
    let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    x.iter().zip(&y).fold(0f64, |m, (p, q)| max_diff(m, *p, *q)) / scale
}

fn random_inputs(g: &oar_ir::Graph, b: &BTreeMap<String, u64>, seed: u64) -> Vec<HostTensor> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    g.inputs()
        .iter()
        .map(|&i| {
            let t = &g.node(i).outputs[0];
            let shape: Vec<usize> = t.shape.eval(b, 1).iter().map(|&d| d as usize).collect();
            let n = shape.iter().product();
            match t.dtype {
                oar_ir::DType::I64 => {
                    HostTensor::i64(shape, (0..n).map(|_| (next() % 3) as i64).collect())
                }
                _ => HostTensor::f32(
                    shape,
                    (0..n)
                        .map(|_| (next() % 20001) as f32 / 10000.0 - 1.0)
                        .collect(),
                ),
            }
        })
        .collect()
}

pub fn check(g: &oar_ir::Graph, b: &BTreeMap<String, u64>, threads: usize) {
    let w = init_weights(g, 3).unwrap();
    let inputs = random_inputs(g, b, 5);
    let want = run(g, &inputs, &w).unwrap();
    let mut m = JitModel::new(g, b, &w, threads).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    let got = m.run(&inputs).unwrap();
    for (k, (a, e)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(a, e);
        eprintln!("{} output {k}: rel err {err:.2e}", g.name);
        assert!(err <= TOL, "{} output {k}: rel err {err:.2e}", g.name);
    }
}

fn example(name: &str) -> oar_ir::Graph {
    let path = format!("{}/../examples/{name}.oir", env!("CARGO_MANIFEST_DIR"));
    oar_ir::read_graph(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

#[test]
fn examples_match_the_interpreter() {
    let b = BTreeMap::from([
        ("N".to_string(), 3),
        ("S".to_string(), 5),
        ("seq".to_string(), 5),
    ]);
    for name in ["mlp", "convnet", "transformer"] {
        check(&example(name), &b, 2);
    }
}

#[test]
fn zoo_models_match_the_interpreter() {
    use oar_models::{build, zoo};
    for e in zoo() {
        let small = e.family == "PP-LCNet" || e.name == "ernie-3.0-tiny";
        if !small {
            continue;
        }
        let g = build(e.name).unwrap().unwrap();
        let b = BTreeMap::from([("N".to_string(), 1), ("seq".to_string(), 16)]);
        check(&g, &b, 2);
    }
}

#[test]
fn optimized_graphs_match_the_interpreter() {
    use oar_passes::{PassContext, Pipeline};
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    for name in ["lcnet_x0_5", "ernie-3.0-tiny"] {
        let g = oar_models::build(name).unwrap().unwrap();
        let (opt, _) = Pipeline::named("inference", &[])
            .unwrap()
            .run(g, &cx, |_, _| {})
            .unwrap();
        let b = BTreeMap::from([("N".to_string(), 2), ("seq".to_string(), 8)]);
        check(&opt, &b, 2);
    }
}

/// The running max of |p − q|, where a NaN on one side only counts as an infinite error
/// (`f64::max` would skip it) and NaN on both sides as agreement.
fn max_diff(m: f64, p: f64, q: f64) -> f64 {
    match (p.is_nan(), q.is_nan()) {
        (true, true) => m,
        (false, false) => m.max((p - q).abs()),
        _ => f64::INFINITY,
    }
}
