//! `oar export MODEL -o model.onnx`: a graph with its weights as ONNX (opset 17).

use anyhow::Context;
use clap::Args;
use oar::runtime::init::init_weights;
use oar::runtime::io::weights::load_safetensors;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A graph file (text IR, JSON or .onnx) or a zoo model name.
    model: String,
    /// The .onnx file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Weights (safetensors). Without it, parameters are initialised from --seed.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Seed for initialising parameters when no weights are given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let loaded = oar::load_model(&a.model, &Default::default())?;
    let weights = match (&a.weights, loaded.weights) {
        (Some(p), _) => load_safetensors(p)?,
        (None, Some(w)) => w,
        (None, None) => {
            eprintln!(
                "note: parameters initialised from seed {} (pass --weights FILE.safetensors)",
                a.seed
            );
            init_weights(&loaded.graph, a.seed).map_err(anyhow::Error::msg)?
        }
    };
    let bytes = oar::onnx_io::export_with_weights(&loaded.graph, &weights)?;
    oar::runtime::io::write_atomically(&a.output, &bytes)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({:.1} MB, opset {})",
        a.output.display(),
        bytes.len() as f64 / 1e6,
        oar::frontend::onnx::EXPORT_OPSET
    );
    Ok(())
}
