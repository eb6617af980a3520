//! `oar checkpoint`: look inside a training checkpoint (its index, every tensor's shape,
//! dtype, sharding and shard files, verified against the shards) and convert one, whatever
//! layout wrote it, to a single safetensors file that `oar run --weights` reads.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use oar::runtime::io::checkpoint::{
    load_checkpoint, read_index, resolve_checkpoint, verify_checkpoint, Index, INDEX,
};
use oar::runtime::io::weights::save_safetensors;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// Print a checkpoint's index (step, layout, every tensor's shape, dtype, sharding,
    /// bytes and shard files, totals) and verify every shard against it.
    Inspect(InspectArgs),
    /// Reassemble a checkpoint (any layout) into one safetensors file of whole tensors.
    Convert(ConvertArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A checkpoint directory, or a --save root (its newest checkpoint).
    dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A checkpoint directory, or a --save root (its newest checkpoint).
    dir: PathBuf,
    /// The safetensors file to write (parameters and optimizer state, whole).
    #[arg(long, value_name = "OUT.safetensors")]
    to_single: PathBuf,
}

pub fn run(c: CheckpointCommand) -> anyhow::Result<()> {
    match c {
        CheckpointCommand::Inspect(a) => inspect(&a.dir),
        CheckpointCommand::Convert(a) => {
            let dir = resolve_checkpoint(&a.dir)?;
            let ck = load_checkpoint(&dir).context("cannot convert")?;
            save_safetensors(&a.to_single, &ck.weights)?;
            println!(
                "wrote {} ({} tensors, step {})",
                a.to_single.display(),
                ck.weights.len(),
                ck.step
            );
            Ok(())
        }
    }
}

fn inspect(path: &Path) -> anyhow::Result<()> {
    let dir = resolve_checkpoint(path)?;
    if !dir.join(INDEX).is_file() {
        // Version 1: one whole file; loading it verifies it.
        let ck = load_checkpoint(&dir)?;
        println!(
            "checkpoint {} (format oar-checkpoint v1, one file)\nstep {} · seed {} · {} tensors\nverified: yes",
            name(&dir),
            ck.step,
            ck.seed,
            ck.weights.len()
        );
        return Ok(());
    }
    let index = read_index(&dir)?;
    print!("{}", render(&dir, &index));
    match verify_checkpoint(&dir) {
        Ok(_) => {
            println!("verified: yes (every shard's size, tensors and sha256 match the index)");
            Ok(())
        }
        Err(e) => {
            println!("verified: no: {e}");
            bail!("the checkpoint does not verify: {e}")
        }
    }
}

fn name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn dtype_size(d: &str) -> usize {
    match d {
        "F64" | "I64" => 8,
        "BOOL" => 1,
        _ => 4,
    }
}

/// The index as a table (everything but the verification line).
fn render(dir: &Path, ix: &Index) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "checkpoint {} (format {} v{})",
        name(dir),
        ix.format,
        ix.version
    );
    let _ = write!(
        o,
        "step {} · seed {} · loader epoch {}, next sample {}",
        ix.step, ix.seed, ix.loader.epoch, ix.loader.index
    );
    if let Some(a) = ix.best_eval_accuracy {
        let _ = write!(o, " · best eval accuracy {a:.4}");
    }
    let _ = writeln!(
        o,
        "\nmodel {} · fingerprint {}\nlayout {}{}",
        ix.model.as_deref().unwrap_or("(unnamed)"),
        ix.fingerprint,
        ix.layout,
        if ix.rng.is_some() {
            " · rng state saved"
        } else {
            ""
        }
    );
    let rows: Vec<[String; 6]> = ix
        .tensors
        .iter()
        .map(|(k, t)| {
            let n: usize = t.shape.iter().product();
            let pieces = t
                .pieces
                .iter()
                .map(|p| {
                    let f = p.file.trim_end_matches(".safetensors");
                    if t.pieces.len() == 1 {
                        f.to_string()
                    } else {
                        format!("{f}[{}+{}]", p.start, p.len)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            [
                k.clone(),
                format!("{:?}", t.shape),
                t.dtype.clone(),
                t.sharding.to_string(),
                (n * dtype_size(&t.dtype)).to_string(),
                pieces,
            ]
        })
        .collect();
    let head = ["tensor", "shape", "dtype", "sharding", "bytes", "stored in"].map(String::from);
    let mut w = [0usize; 6];
    for r in std::iter::once(&head).chain(&rows) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&rows) {
        let line = format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
        let _ = writeln!(o, "{}", line.trim_end());
    }
    let _ = writeln!(o, "shards");
    for s in &ix.shards {
        let _ = writeln!(
            o,
            "  {}  rank {}  {} bytes  sha256 {}",
            s.file,
            s.rank,
            s.bytes,
            s.sha256.get(..16).unwrap_or(&s.sha256)
        );
    }
    let elements: usize = ix
        .tensors
        .values()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    let data: usize = ix
        .tensors
        .values()
        .map(|t| t.shape.iter().product::<usize>() * dtype_size(&t.dtype))
        .sum();
    let disk: u64 = ix.shards.iter().map(|s| s.bytes).sum();
    let _ = writeln!(
        o,
        "total {} tensors, {elements} elements, {data} bytes of tensor data in {} shards ({disk} bytes on disk)",
        ix.tensors.len(),
        ix.shards.len()
    );
    o
}
