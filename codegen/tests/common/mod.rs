//! Helpers shared by codegen's test crates: the error measure every comparison states a
//! bound on, random non-zero inputs, the examples, and the random-graph generator.
#![allow(dead_code)]

pub mod random_graph;

use oar_runtime::HostTensor;
use std::collections::BTreeMap;

/// The bound on [`rel_err`] for every executor against the interpreter.
pub const TOL: f64 = 1e-4;

/// max |a − b| / max |b|, where a NaN on one side only is an infinite error.
pub fn rel_err(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    let (x, y) = (a.to_f64(), b.to_f64());
    let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    x.iter().zip(&y).fold(0f64, |m, (p, q)| max_diff(m, *p, *q)) / scale
}

/// The running max of |p − q|, where a NaN on one side only counts as an infinite error
/// (`f64::max` would skip it) and NaN on both sides as agreement.
pub fn max_diff(m: f64, p: f64, q: f64) -> f64 {
    match (p.is_nan(), q.is_nan()) {
        (true, true) => m,
        (false, false) => m.max((p - q).abs()),
        _ => f64::INFINITY,
    }
}

/// Inputs of `g` with symbols bound by `b`: f32 uniform in [−1, 1], i64 in 0..3 (token
/// ids and types), from an xorshift seeded by `seed`.
pub fn random_inputs(g: &oar_ir::Graph, b: &BTreeMap<String, u64>, seed: u64) -> Vec<HostTensor> {
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

/// `examples/NAME.oir`.
pub fn example(name: &str) -> oar_ir::Graph {
    let path = format!("{}/../examples/{name}.oir", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    oar_ir::read_graph(&text, &path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `g` after the inference pipeline for the local CPU.
pub fn inference(g: oar_ir::Graph) -> oar_ir::Graph {
    use oar_passes::{PassContext, Pipeline};
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    Pipeline::named("inference", &[])
        .unwrap()
        .run(g, &cx, |_, _| {})
        .unwrap()
        .0
}

/// Random f32 entries in [−1, 1) (xorshift), distinct with probability ~1.
pub fn rand_tensor(dims: &[u64], seed: u64) -> HostTensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: u64 = dims.iter().product();
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    HostTensor::f32(dims.iter().map(|&d| d as usize).collect(), v)
}
