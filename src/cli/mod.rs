//! Subcommands. Each file is one command family.

mod calibrate;
mod checkpoint;
mod cluster;
mod common;
mod compile;
mod export;
mod inspect;
mod launch;
mod models;
mod ocr;
mod plan;
mod plan_cpu;
mod plan_heterps;
mod run;
mod shitu;
mod train;

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
    /// Train a zoo classifier, a model file or a training-step graph on a directory of .npy
    /// shards (interpreter): autodiff, optimizer, evaluation, checkpoints, exact resume.
    Train(Box<train::TrainArgs>),
    /// Plan data/tensor/pipeline parallel training of a transformer on a cluster, the
    /// training step's memory of a zoo model on one CPU device, or (with --throughput) the
    /// least-cost placement of a CTR model's layers on device kinds (HeterPS).
    Plan(Box<plan::PlanArgs>),
    /// Start N ranks of an oar command under OpenMPI's mpirun (`oar launch -n 2 -- train ...`).
    Launch(launch::LaunchArgs),
    /// Inspect a training checkpoint or convert it to one safetensors file.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Read the text in images (PP-OCR: detect, classify direction, recognise), compiled.
    Ocr(ocr::OcrArgs),
    /// Cluster presets and files.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// PP-ShiTu retrieval: build a gallery index, query it with an image, score retrieval.
    #[command(subcommand)]
    Shitu(shitu::ShituCommand),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Models(a) => models::run(a),
        Command::Run(a) => run::run(a),
        Command::Export(a) => export::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Train(a) => train::run(*a),
        Command::Plan(a) => plan::run(*a),
        Command::Cluster(c) => cluster::run(c),
        Command::Checkpoint(c) => checkpoint::run(c),
        Command::Launch(a) => launch::run(a),
        Command::Ocr(a) => ocr::run(a),
        Command::Shitu(c) => shitu::run(c),
    }
}
