//! Training checkpoints: one directory per saved step, `ROOT/step-00000100/`, holding
//! `weights.safetensors` (everything in [`Weights`]: parameters, optimizer moments, running
//! statistics) and `manifest.json` (step, data-loader position, seeds, the run's config and a
//! checksum of the safetensors bytes).
//!
//! A checkpoint is written into a hidden temporary directory next to its final name, each
//! file synced, then renamed into place in one step, so a crash leaves either the whole
//! checkpoint or none of it. Loading verifies the format, the size and the checksum before
//! decoding, and every refusal names the file and what is wrong.

use super::weights::{decode_safetensors, encode_safetensors, Weights};
use super::IoError;
use crate::data::LoaderPosition;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: &str = "oar-checkpoint";
const VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const WEIGHTS: &str = "weights.safetensors";

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: not a valid checkpoint: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}: no checkpoint here (expected {MANIFEST}, or step-* directories holding one)")]
    NotFound(String),
}

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Training steps completed.
    pub step: u64,
    /// Where the data loader continues.
    pub loader: LoaderPosition,
    /// The run's seed (initialisation, dropout, data order).
    pub seed: u64,
    /// The run's settings, as the trainer recorded them (checked on resume).
    pub config: serde_json::Value,
    /// The best validation accuracy so far, if there was an evaluation.
    pub best_eval_accuracy: Option<f64>,
    /// Parameters and optimizer state.
    pub weights: Weights,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    step: u64,
    epoch: u64,
    loader: LoaderPosition,
    seed: u64,
    config: serde_json::Value,
    best_eval_accuracy: Option<f64>,
    weights: WeightsEntry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WeightsEntry {
    file: String,
    bytes: u64,
    /// FNV-1a (64 bits) of the file, hex. Any single changed byte changes it: each step of
    /// the hash is a bijection of the running state.
    fnv1a64: String,
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| {
        CheckpointError::Io(IoError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The directory name of the checkpoint at `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Saves `ck` as `root/step-NNNNNNNN/` atomically and removes all but the newest `keep`
/// checkpoints under `root` (`keep = 0` keeps all). Returns the checkpoint's directory.
pub fn save_checkpoint(
    root: &Path,
    ck: &Checkpoint,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let name = step_dir_name(ck.step);
    let fin = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let bytes = encode_safetensors(&ck.weights).map_err(|e| invalid(&tmp, e.to_string()))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        step: ck.step,
        epoch: ck.loader.epoch,
        loader: ck.loader,
        seed: ck.seed,
        config: ck.config.clone(),
        best_eval_accuracy: ck.best_eval_accuracy,
        weights: WeightsEntry {
            file: WEIGHTS.into(),
            bytes: bytes.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
        },
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| invalid(&tmp, e.to_string()))?;
    write_synced(&tmp.join(WEIGHTS), &bytes)?;
    write_synced(&tmp.join(MANIFEST), text.as_bytes())?;
    // A checkpoint of the same step (a resumed run saving again) is replaced whole.
    if fin.exists() {
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(&fin, &old).map_err(io_err(&fin))?;
        std::fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    } else {
        std::fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
    }
    // Make the rename durable before pruning older checkpoints.
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    if keep > 0 {
        let all = list_checkpoints(root)?;
        for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
        }
    }
    Ok(fin)
}

/// The checkpoints under `root`, oldest first, as (step, directory).
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().join(MANIFEST).is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Resolves `path` to one checkpoint directory: itself if it holds a manifest, else the
/// newest `step-*` under it.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join(MANIFEST).is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(CheckpointError::NotFound(path.display().to_string()));
    }
    list_checkpoints(path)?
        .pop()
        .map(|(_, d)| d)
        .ok_or_else(|| CheckpointError::NotFound(path.display().to_string()))
}

/// Loads and verifies the checkpoint at `path` (a checkpoint directory, or a root whose
/// newest checkpoint is taken).
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let dir = resolve_checkpoint(path)?;
    let mpath = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| invalid(&mpath, format!("the manifest does not parse: {e}")))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(invalid(
            &mpath,
            format!(
                "format `{}` version {}, this build reads `{FORMAT}` version {VERSION}",
                m.format, m.version
            ),
        ));
    }
    if m.weights.file.contains(['/', '\\']) || m.weights.file.starts_with('.') {
        return Err(invalid(
            &mpath,
            format!("weights file `{}` is not a plain file name", m.weights.file),
        ));
    }
    let wpath = dir.join(&m.weights.file);
    let bytes = std::fs::read(&wpath).map_err(io_err(&wpath))?;
    if bytes.len() as u64 != m.weights.bytes {
        return Err(invalid(
            &wpath,
            format!(
                "{} bytes, the manifest records {} (truncated or replaced)",
                bytes.len(),
                m.weights.bytes
            ),
        ));
    }
    let sum = format!("{:016x}", fnv1a64(&bytes));
    if sum != m.weights.fnv1a64 {
        return Err(invalid(
            &wpath,
            format!(
                "checksum fnv1a64 {sum} does not match the manifest's {} (the file is corrupted)",
                m.weights.fnv1a64
            ),
        ));
    }
    let weights = decode_safetensors(&bytes, &wpath)?;
    Ok(Checkpoint {
        step: m.step,
        loader: m.loader,
        seed: m.seed,
        config: m.config,
        best_eval_accuracy: m.best_eval_accuracy,
        weights,
    })
}
