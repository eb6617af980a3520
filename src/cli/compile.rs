//! `oar compile MODEL|FILE -o OUT`: a native executable (default) or shared library, or
//! the generated code to read (`--emit llvm-ir|asm|kernel-ir`).

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use oar::codegen::cpu::{check_cpu_name, check_features, emit, host_cpu, Emit as CpuEmit};
use oar::codegen::kernel::{build_kernels, CpuModel, Tiling};
use oar::codegen::package::{package, Artifact};
use std::path::PathBuf;
use std::time::Duration;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Emit {
    /// A standalone executable with `--input x.npy -o y.npy [--bench N]`.
    Exe,
    /// A shared library and a C header (oar_model_create / _run / _destroy).
    Lib,
    /// Optimized LLVM IR.
    LlvmIr,
    /// Host assembly.
    Asm,
    /// oar's loop-level kernel IR.
    KernelIr,
}

#[derive(Args, Debug)]
pub struct CompileArgs {
    /// A graph file (text IR, JSON or .onnx) or a zoo model name.
    model: String,
    /// Output path.
    #[arg(short, long)]
    output: PathBuf,
    /// What to produce.
    #[arg(long, value_enum, default_value = "exe")]
    emit: Emit,
    /// Weights (safetensors). Without it: the ONNX file's, or initialised from --seed.
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the weights to OUTPUT.weights instead of inside the binary.
    #[arg(long)]
    external_weights: bool,
    /// Bind symbolic dims (static shapes are compiled in), e.g. `--sym N=1` (default 1).
    #[arg(long = "sym", value_name = "NAME=VALUE")]
    syms: Vec<String>,
    /// Fix an ONNX input's dynamic dims, e.g. `--input-shape x=1x3x224x224`.
    #[arg(long = "input-shape", value_name = "NAME=DxDx..")]
    input_shapes: Vec<String>,
    /// The optimization pipeline run before code generation (`none` to skip).
    #[arg(long, default_value = "inference")]
    pipeline: String,
    /// Generate code for another x86-64 CPU (LLVM's name, e.g. `skylake-avx512`,
    /// `znver4`, `haswell`) instead of this machine's: its instruction set and GEMM tiles.
    #[arg(long, value_name = "CPU")]
    target_cpu: Option<String>,
    /// LLVM target features for --target-cpu, e.g. `+avx512f,+avx512bw` or `-avx512f`.
    #[arg(long, value_name = "FEATURES", requires = "target_cpu")]
    target_features: Option<String>,
}

/// The CPU to generate code for: the host (with its measured caches), or the one named on
/// the command line.
fn target_cpu(a: &CompileArgs) -> anyhow::Result<CpuModel> {
    let host = host_cpu()?;
    match (&a.target_cpu, &a.target_features) {
        (None, _) => Ok(host),
        (Some(name), None) if *name == host.name => Ok(host),
        (Some(name), features) => {
            check_cpu_name(name)?;
            let features = features.as_deref().unwrap_or("");
            check_features(features)?;
            Ok(CpuModel::named(name, features))
        }
    }
}

pub fn run(a: CompileArgs) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("loading {}", a.model));
    let shapes = super::common::parse_input_shapes(&a.input_shapes)?;
    let loaded = oar::load_model(&a.model, &shapes)?;
    let mut bindings = oar::models::find(&a.model)
        .map(|e| e.bindings())
        .unwrap_or_default();
    bindings.extend(super::common::parse_bindings(&a.syms)?);
    let weights = super::common::resolve_weights(&loaded, a.weights.as_deref(), a.seed)?;
    let mut graph = loaded.graph;
    if a.pipeline != "none" {
        bar.set_message(format!("optimizing ({})", a.pipeline));
        graph = super::common::optimize(graph, &a.pipeline, &bindings)?;
    }
    let cpu = target_cpu(&a)?;
    bar.set_message(format!(
        "building kernels for {} ({})",
        cpu.name,
        Tiling::for_cpu(&cpu)
    ));
    let compiled = build_kernels(&graph, &bindings, &cpu)?;
    let input_names: Vec<String> = graph
        .inputs()
        .iter()
        .map(|&i| graph.node(i).name.clone())
        .collect();
    let write = |bytes: &[u8]| -> anyhow::Result<()> {
        std::fs::write(&a.output, bytes)
            .with_context(|| format!("cannot write {}", a.output.display()))
    };
    match a.emit {
        Emit::KernelIr => {
            let text: String = compiled
                .kernels
                .iter()
                .map(|k| k.to_string() + "\n")
                .collect();
            write(text.as_bytes())?;
        }
        Emit::LlvmIr | Emit::Asm => {
            bar.set_message(format!("LLVM O3 ({} kernels)", compiled.kernels.len()));
            let what = if a.emit == Emit::Asm {
                CpuEmit::Asm
            } else {
                CpuEmit::LlvmIr
            };
            write(&emit(&compiled, what)?)?;
        }
        Emit::Exe | Emit::Lib => {
            bar.set_message(format!(
                "LLVM O3 ({} kernels) and linking",
                compiled.kernels.len()
            ));
            let artifact = if a.emit == Emit::Lib {
                Artifact::SharedLibrary
            } else {
                Artifact::Executable
            };
            let out = package(
                &compiled,
                &input_names,
                &weights,
                artifact,
                !a.external_weights,
                &a.output,
            )?;
            bar.finish_and_clear();
            for f in &out.files {
                eprintln!("wrote {}", f.display());
            }
            return Ok(());
        }
    }
    bar.finish_and_clear();
    if !a.output.exists() {
        bail!("nothing was written");
    }
    eprintln!("wrote {}", a.output.display());
    Ok(())
}
