//! `oar run MODEL|FILE --input x.npy`: runs the reference interpreter.

use super::common;
use anyhow::{bail, Context};
use clap::Args;
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::{run as interpret, HostTensor};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A graph file (text IR, JSON or .onnx) or a zoo model name.
    model: String,
    /// Fix an ONNX input's dynamic dims (by default they come from the --input files).
    #[arg(long = "input-shape", value_name = "NAME=DxDx..")]
    input_shapes: Vec<String>,
    /// Input tensors as .npy, in the graph's input order, or `NAME=FILE.npy`.
    #[arg(long = "input", short = 'i', value_name = "[NAME=]FILE")]
    inputs: Vec<String>,
    /// Weights (safetensors). Without it, parameters are initialised from --seed.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Seed for initialising parameters when no weights are given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output files (.npy), one per graph output, in order.
    #[arg(short, long = "output")]
    outputs: Vec<PathBuf>,
    /// `interp`: the reference interpreter; `llvm`: compiled for this CPU (after the
    /// `inference` pipeline).
    #[arg(long, default_value = "interp", value_parser = ["interp", "llvm"])]
    backend: String,
    /// Threads for the llvm backend.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// With `--backend llvm`: print the slowest kernels of one run to stderr.
    #[arg(long)]
    profile: bool,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    // Each --input is positional or NAME=FILE; read the files first, since an ONNX model's
    // dynamic dims are fixed by the inputs it is given.
    let mut given: Vec<(Option<String>, HostTensor)> = Vec::new();
    for spec in &a.inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (Some(n.to_string()), f),
            None => (None, spec.as_str()),
        };
        given.push((name, read_npy(std::path::Path::new(file))?));
    }
    let mut shapes = common::parse_input_shapes(&a.input_shapes)?;
    if let Some(names) = oar::onnx_io::onnx_input_names(std::path::Path::new(&a.model))? {
        // Checked before import: an ONNX input left without a value keeps its dynamic dims,
        // and the first op that combines it with a given input would report a shape
        // mismatch there instead of naming the input.
        check_given_inputs(&names, &given, &shapes)?;
        for (k, (name, t)) in given.iter().enumerate() {
            let name = name.clone().or_else(|| names.get(k).cloned());
            if let Some(n) = name {
                let dims = t.shape.iter().map(|&d| d as u64).collect();
                shapes.entry(n).or_insert(dims);
            }
        }
    }
    let loaded = oar::load_model(&a.model, &shapes)?;
    let graph = loaded.graph;
    let names: Vec<&str> = graph
        .inputs()
        .iter()
        .map(|&i| graph.node(i).name.as_str())
        .collect();
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    check_given_inputs(&owned, &given, &Default::default())?;
    let mut inputs: Vec<Option<HostTensor>> = vec![None; names.len()];
    for (k, (name, t)) in given.into_iter().enumerate() {
        let slot = match name {
            Some(name) => names.iter().position(|n| *n == name).with_context(|| {
                format!(
                    "the graph has no input `{name}` (inputs: {})",
                    names.join(", ")
                )
            })?,
            None => k,
        };
        if slot >= names.len() {
            bail!(
                "{} inputs given but the graph takes {} ({})",
                a.inputs.len(),
                names.len(),
                names.join(", ")
            );
        }
        inputs[slot] = Some(t);
    }
    let inputs: Vec<HostTensor> = inputs
        .into_iter()
        .zip(&names)
        .map(|(t, n)| {
            t.with_context(|| format!("no value for input `{n}` (pass --input {n}=FILE.npy)"))
        })
        .collect::<anyhow::Result<_>>()?;
    let weights = common::resolve_weights(
        &oar::LoadedModel {
            graph: graph.clone(),
            weights: loaded.weights,
        },
        a.weights.as_deref(),
        a.seed,
    )?;
    let outs = if a.backend == "llvm" {
        let bindings = bind_from_inputs(&graph, &inputs);
        let optimized = common::optimize(graph, "inference", &bindings)?;
        let mut m = oar::codegen::jit::JitModel::new(&optimized, &bindings, &weights, a.threads)?;
        let outs = m.run(&inputs)?;
        if a.profile {
            let times = m.profile(&inputs)?;
            let total: f64 = times.iter().map(|t| t.1).sum();
            eprintln!(
                "{} kernel calls, {:.3} ms; slowest:",
                times.len(),
                total * 1e3
            );
            for (k, t) in times.iter().take(15) {
                eprintln!(
                    "  {:>8.3} ms {:5.1}%  {k}",
                    t * 1e3,
                    100.0 * t / total.max(1e-12)
                );
            }
        }
        outs
    } else {
        interpret(&graph, &inputs, &weights)?
    };
    if !a.outputs.is_empty() && a.outputs.len() != outs.len() {
        bail!(
            "the graph has {} outputs but {} -o files were given",
            outs.len(),
            a.outputs.len()
        );
    }
    let mut summary = String::new();
    for (k, t) in outs.iter().enumerate() {
        match a.outputs.get(k) {
            Some(p) => write_npy(p, t)?,
            None => {
                let v = t.to_f64();
                let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
                let more = if v.len() > 6 { ", ..." } else { "" };
                summary += &format!("output {k}: {} [{}{more}]\n", t.describe(), head.join(", "));
            }
        }
    }
    common::emit(&summary, None)
}

/// Symbol values read off the actual inputs (compiled code has static shapes).
fn bind_from_inputs(
    g: &oar::ir::Graph,
    inputs: &[HostTensor],
) -> std::collections::BTreeMap<String, u64> {
    let mut b = std::collections::BTreeMap::new();
    for (&i, t) in g.inputs().iter().zip(inputs) {
        for (d, &n) in g.node(i).outputs[0].shape.0.iter().zip(&t.shape) {
            if let oar::ir::Dim::Sym(_) = d {
                if let [s] = d.symbols()[..] {
                    if d.split_coef().0 == 1 {
                        b.insert(s.to_string(), n as u64);
                    }
                }
            }
        }
    }
    b
}

/// Every given input names a graph input (or fits by position), none is given twice, and
/// every graph input has a value (or a fixed `--input-shape`, which import needs anyway).
fn check_given_inputs(
    names: &[String],
    given: &[(Option<String>, HostTensor)],
    shapes: &std::collections::BTreeMap<String, Vec<u64>>,
) -> anyhow::Result<()> {
    let mut seen = vec![false; names.len()];
    for (k, (name, _)) in given.iter().enumerate() {
        let slot = match name {
            Some(n) => names.iter().position(|m| m == n).with_context(|| {
                format!(
                    "the model has no input `{n}` (inputs: {})",
                    names.join(", ")
                )
            })?,
            None if k < names.len() => k,
            None => bail!(
                "{} inputs given but the model takes {} ({})",
                given.len(),
                names.len(),
                names.join(", ")
            ),
        };
        if std::mem::replace(&mut seen[slot], true) {
            bail!("input `{}` is given twice", names[slot]);
        }
    }
    match names
        .iter()
        .zip(&seen)
        .find(|(n, s)| !**s && !shapes.contains_key(*n))
    {
        Some((n, _)) => bail!("no value for input `{n}` (pass --input {n}=FILE.npy)"),
        None => Ok(()),
    }
}
