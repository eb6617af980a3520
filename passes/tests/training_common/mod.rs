//! Helpers shared by the optimizer tests: a graph whose gradients are inputs, tensors,
//! and a seeded generator.

// Each test crate uses a different subset of the helpers.
#![allow(dead_code)]

use oar_ir::op::{Init, Op, ParamAttrs};
use oar_ir::{ExecMode, Graph, TensorType, ValueRef};
use oar_passes::training::Slot;
use oar_runtime::interp::{train_step, RunOptions};
use oar_runtime::{HostTensor, Weights};
use std::collections::BTreeMap;

/// A seeded linear congruential generator.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-1, 1), rounded to f32 (the values the graph sees).
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) as f64
    }

    pub fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|_| (self.next() * scale) as f32 as f64)
            .collect()
    }
}

/// A graph whose parameters' gradients are the inputs `grad.<param>`.
pub fn graph_with_grads(params: &[(&str, &[u64])]) -> (Graph, Vec<(String, ValueRef)>) {
    let mut g = Graph::new("opt");
    g.mode = ExecMode::Training;
    let mut grads = Vec::new();
    for (name, dims) in params {
        grads.push((
            name.to_string(),
            g.add_input(format!("grad.{name}"), TensorType::f32(dims)),
        ));
    }
    let mut first = None;
    for (name, dims) in params {
        let op = Op::Param(ParamAttrs {
            name: name.to_string(),
            init: Some(Init::Constant(0.0)),
        });
        let id = g
            .add_node_typed(
                op,
                vec![],
                vec![TensorType::f32(dims)],
                Some(format!("p.{name}")),
            )
            .unwrap();
        first.get_or_insert(ValueRef::from(id));
    }
    g.set_outputs(vec![first.unwrap()]);
    (g, grads)
}

pub fn tensor(dims: &[u64], v: &[f64]) -> HostTensor {
    let shape = dims.iter().map(|&d| d as usize).collect();
    HostTensor::f32(shape, v.iter().map(|&x| x as f32).collect())
}

pub fn scalar(v: f64) -> HostTensor {
    HostTensor::f32(vec![], vec![v as f32])
}

/// Runs the graph once with the named inputs.
pub fn run(g: &Graph, inputs: &BTreeMap<String, HostTensor>, w: &mut Weights) {
    let ins: Vec<HostTensor> = g
        .inputs()
        .iter()
        .map(|&id| {
            let name = &g.node(id).name;
            inputs
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("no input {name}"))
        })
        .collect();
    train_step(g, &ins, w, RunOptions::training(1, 1)).unwrap();
}

/// Parameters of the optimizer tests: a matrix, a vector (no decay by default), and a
/// matrix that starts at zero (LAMB's trust ratio falls back to 1 on its first step).
pub const PARAMS: [(&str, &[u64]); 3] = [
    ("fc.weight", &[3, 4]),
    ("fc.bias", &[4]),
    ("head.weight", &[2, 2]),
];

/// Random [`PARAMS`] (`head.weight` zero) and the optimizer's slots at their initial
/// values, as weights and as f64 values (the f32-rounded ones the graph sees).
pub fn initial_state(rng: &mut Rng, slots: &[Slot]) -> (Weights, BTreeMap<String, Vec<f64>>) {
    let mut w = Weights::new();
    let mut values = BTreeMap::new();
    for (name, dims) in PARAMS {
        let n = dims.iter().product::<u64>() as usize;
        let v = if name == "head.weight" {
            vec![0.0; n]
        } else {
            rng.vec(n, 1.0)
        };
        w.insert(name.to_string(), tensor(dims, &v));
        values.insert(name.to_string(), v);
    }
    for Slot { name, ty, init } in slots {
        let dims = ty.shape.as_static().expect("static slot");
        let n = dims.iter().product::<u64>() as usize;
        w.insert(name.clone(), tensor(&dims, &vec![*init; n]));
        values.insert(name.clone(), vec![*init as f32 as f64; n]);
    }
    (w, values)
}

/// Runs `python3 ARGS` with `input` as JSON on stdin and returns the JSON it prints; `None`,
/// with a SKIP message, when python3 is missing or the script exits with status 3 (its way of
/// saying a package it compares against is not installed). Any other failure panics.
pub fn python_json(args: &[&str], input: &serde_json::Value) -> Option<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("python3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIP: python3 is not available");
        return None;
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the script's input");
    let out = child.wait_with_output().expect("run python3");
    match out.status.code() {
        Some(0) => Some(serde_json::from_slice(&out.stdout).expect("the script's JSON")),
        Some(3) => {
            eprintln!("SKIP: {}", String::from_utf8_lossy(&out.stderr).trim());
            None
        }
        _ => panic!(
            "python3 {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
