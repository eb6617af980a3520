//! Subcommands. Each file is one command family.

mod cluster;
mod compile;
mod export;
mod inspect;
mod models;
mod plan;
mod run;

use clap::{Parser, Subcommand};

/// oar: compile models, plan their parallel training, inspect their IR.
#[derive(Parser, Debug)]
#[command(name = "oar", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a graph (file or zoo model) as text, JSON or DOT, with optional statistics.
    Inspect(inspect::InspectArgs),
    /// List the model zoo with parameters and MACs.
    Models(models::ModelsArgs),
    /// Compile a model for this CPU: an executable, a shared library, or LLVM IR/asm.
    Compile(compile::CompileArgs),
    /// Write a graph or zoo model, with weights, as an ONNX model (opset 17).
    Export(export::ExportArgs),
    /// Run a graph, ONNX model or zoo model in the reference interpreter.
    Run(run::RunArgs),
    /// Plan data/tensor/pipeline parallel training of a transformer on a cluster.
    Plan(plan::PlanArgs),
    /// Cluster presets and files.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Models(a) => models::run(a),
        Command::Run(a) => run::run(a),
        Command::Export(a) => export::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Cluster(c) => cluster::run(c),
    }
}

/// Writes `text` to `path`, or to stdout when there is none.
pub(crate) fn emit(text: &str, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            use std::io::Write;
            // A closed pipe (`oar … | head`) is the reader's choice, not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    }
}

/// `NAME=1x3x224x224` flags as a map of input shapes.
pub(crate) fn parse_input_shapes(
    specs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u64>>> {
    let mut out = std::collections::BTreeMap::new();
    for s in specs {
        let Some((name, dims)) = s.split_once('=') else {
            anyhow::bail!("--input-shape expects NAME=DxDx.., found `{s}`");
        };
        let dims = dims
            .split(['x', ','])
            .map(|d| d.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                anyhow::anyhow!(
                    "--input-shape {name}: `{dims}` is not a list of sizes like 1x3x224x224"
                )
            })?;
        out.insert(name.to_string(), dims);
    }
    Ok(out)
}
