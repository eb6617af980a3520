//! The suite's cases, as data: each a graph, its symbol bindings, and a name the
//! backends' known-gap lists refer to. Weights (seed 3) and inputs (seed 5, uniform in
//! [−1, 1]) are drawn the same way for every backend.

use super::common::random_graph::{build, param, Step};
use super::common::{example, inference};
use oar_ir::op::{ConvAttrs, PoolAttrs, PoolKind};
use oar_ir::{Graph, Op, TensorType};
use std::collections::BTreeMap;

pub struct Case {
    pub name: String,
    pub graph: Graph,
    pub bindings: BTreeMap<String, u64>,
}

fn bindings(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

/// A chain of 1–5 random steps over a random [d0, d1, d2] input (the property tests'
/// generator, drawn from `seed`).
fn random_chain(seed: u64) -> Graph {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let dims = [1 + next() % 3, 1 + next() % 5, 1 + next() % 19];
    let steps: Vec<Step> = (0..1 + next() % 5)
        .map(|_| Step::from_bits(next() as u32))
        .collect();
    build(dims, &steps)
}

/// Convolution (bias, padding: the executor's zeroed padded copies) then a pool.
fn conv_pool(c: u64, co: u64, k: u64, stride: u64, depthwise: bool, max: bool) -> Graph {
    let mut g = Graph::new("conv_pool");
    let x = g.add_input("x", TensorType::f32(&[2, c, 11, 9]));
    let groups = if depthwise { c } else { 1 };
    let w = param(&mut g, "w", &[co, c / groups, k, k]);
    let b = param(&mut g, "b", &[co]);
    let pad = k / 2;
    let attrs = ConvAttrs {
        stride: [stride, stride],
        padding: [pad; 4],
        dilation: [1, 1],
        groups,
    };
    let y = g.add_node(Op::Conv2d(attrs), vec![x, w, b], None).unwrap();
    let pool = PoolAttrs {
        kind: if max { PoolKind::Max } else { PoolKind::Avg },
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0; 4],
        ceil_mode: true,
        count_include_pad: false,
    };
    let z = g.add_node(Op::Pool(pool), vec![y.into()], None).unwrap();
    g.set_outputs(vec![z.into()]);
    g
}

/// Every case: the examples, the zoo's small configs (every PP-LCNet scale, ERNIE tiny),
/// two of them after the inference pipeline, random chains and convolutions.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |name: String, graph: Graph, b: BTreeMap<String, u64>| {
        out.push(Case {
            name,
            graph,
            bindings: b,
        })
    };
    for name in ["mlp", "convnet", "transformer"] {
        let b = bindings(&[("N", 3), ("S", 5), ("seq", 5)]);
        add(format!("examples/{name}"), example(name), b);
    }
    for e in oar_models::zoo() {
        if e.family == "PP-LCNet" || e.name == "ernie-3.0-titan-tiny" {
            let g = (e.build)().unwrap_or_else(|err| panic!("{}: {err}", e.name));
            add(e.name.to_string(), g, bindings(&[("N", 1), ("seq", 16)]));
        }
    }
    for name in ["lcnet_x0_5", "ernie-3.0-titan-tiny"] {
        let g = inference(oar_models::build(name).unwrap().unwrap());
        add(
            format!("{name}+inference"),
            g,
            bindings(&[("N", 2), ("seq", 8)]),
        );
    }
    for seed in 1..=6 {
        add(
            format!("random_chain_{seed}"),
            random_chain(seed),
            bindings(&[]),
        );
    }
    add(
        "conv3x3_maxpool".into(),
        conv_pool(3, 8, 3, 1, false, true),
        bindings(&[]),
    );
    add(
        "depthwise5x5_s2_avgpool".into(),
        inference(conv_pool(6, 12, 5, 2, true, false)),
        bindings(&[]),
    );
    out
}
