//! Training checkpoints: one directory per saved step, `ROOT/step-00000100/`, holding one
//! or more shard files `shard-RRRRR-of-NNNNN.safetensors` (parameters, optimizer state,
//! running statistics; whole or in parts) and `index.json` (step, data-loader position, seed,
//! config, RNG state, the writer's layout, every tensor's global shape, dtype and sharding,
//! and a sha256 of every shard and piece). `docs/checkpoints.md` describes the format.
//!
//! Writers ([`write`]): each rank writes its shard into a hidden staging directory; rank 0
//! writes the index last and renames the directory into place, so a checkpoint either has a
//! complete index or does not exist. Readers ([`read`]) verify every shard against the index
//! before decoding, reassemble whole tensors from any layout or cut out a target rank's part,
//! and every refusal names the file (and the tensor, where one is to blame).
//! [`load_latest_good`] walks back to the newest checkpoint that verifies. Version-1
//! checkpoints (`manifest.json` + `weights.safetensors`) still load.

pub mod background;
pub mod index;
pub mod read;
mod slice;
mod v1;
pub mod write;

pub use background::BackgroundSaver;
pub use index::{
    part_range, weights_fingerprint, Index, Layout, MeshAxis, Piece, Region, ShardFile, Sharding,
    TensorEntry, INDEX,
};
pub use read::{load_resharded, read_index, verify_checkpoint, ShardSpec};
pub use v1::{fnv1a64, MANIFEST};
pub use write::{
    balance_by_bytes, commit_index, save_replicated_shard, save_shard, shard_file_name, shard_of,
    staging_dir, CheckpointMeta, ShardPiece,
};

use super::weights::Weights;
use super::IoError;
use crate::data::LoaderPosition;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: not a valid checkpoint: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor {
        path: String,
        tensor: String,
        message: String,
    },
    #[error("{0}: no checkpoint here (expected {INDEX}, or step-* directories holding one)")]
    NotFound(String),
}

/// What a checkpoint holds, whole (one process's view).
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

impl Checkpoint {
    /// The index fields of this checkpoint as written by `layout`.
    pub fn meta(&self, layout: Layout) -> CheckpointMeta {
        CheckpointMeta {
            step: self.step,
            loader: self.loader,
            seed: self.seed,
            config: self.config.clone(),
            best_eval_accuracy: self.best_eval_accuracy,
            rng: None,
            layout,
        }
    }
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| {
        CheckpointError::Io(IoError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The directory name of the checkpoint at `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Saves `ck` from one process as `root/step-NNNNNNNN/` (one shard, then the index)
/// atomically and removes all but the newest `keep` checkpoints under `root` (`keep = 0`
/// keeps all). Returns the checkpoint's directory.
pub fn save_checkpoint(
    root: &Path,
    ck: &Checkpoint,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    let pieces: Vec<ShardPiece<'_>> = ck
        .weights
        .iter()
        .map(|(k, t)| ShardPiece::whole(k, t))
        .collect();
    save_shard(root, ck.step, 0, 1, &pieces)?;
    commit_index(root, &ck.meta(Layout::single()), keep)
}

/// Whether `dir` holds a checkpoint's metadata (a version-2 index or a version-1 manifest).
fn has_index(dir: &Path) -> bool {
    dir.join(INDEX).is_file() || dir.join(MANIFEST).is_file()
}

/// Every `step-*` directory under `root`, oldest first, complete or not.
fn step_dirs(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().is_dir().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The checkpoints under `root` (those with an index), oldest first, as (step, directory).
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    Ok(step_dirs(root)?
        .into_iter()
        .filter(|(_, d)| has_index(d))
        .collect())
}

/// Resolves `path` to one checkpoint directory: itself if it holds an index, else the
/// newest `step-*` under it.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, CheckpointError> {
    if has_index(path) {
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
/// newest checkpoint is taken), whatever layout wrote it; tensors come back whole.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let dir = resolve_checkpoint(path)?;
    if dir.join(INDEX).is_file() {
        read::load_v2(&dir)
    } else {
        v1::load_v1(&dir)
    }
}

/// Loads the newest checkpoint under `root` that verifies, walking back past bad ones; each
/// skipped directory gives a warning naming it and what is wrong (the bad file, the tensor).
/// `root` may also be one checkpoint directory, which then must verify.
pub fn load_latest_good(root: &Path) -> Result<(Checkpoint, Vec<String>), CheckpointError> {
    if has_index(root) {
        return Ok((load_checkpoint(root)?, Vec::new()));
    }
    if !root.is_dir() {
        return Err(CheckpointError::NotFound(root.display().to_string()));
    }
    let mut warnings = Vec::new();
    for (_, dir) in step_dirs(root)?.into_iter().rev() {
        if !has_index(&dir) {
            warnings.push(format!(
                "{}: skipped: no {INDEX} (an incomplete checkpoint)",
                dir.display()
            ));
            continue;
        }
        match load_checkpoint(&dir) {
            Ok(ck) => return Ok((ck, warnings)),
            Err(e) => warnings.push(format!("skipped {}: {e}", dir.display())),
        }
    }
    if warnings.is_empty() {
        return Err(CheckpointError::NotFound(root.display().to_string()));
    }
    Err(invalid(
        root,
        format!("no checkpoint verifies: {}", warnings.join("; ")),
    ))
}
