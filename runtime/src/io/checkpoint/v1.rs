//! Version-1 checkpoints (read only): `manifest.json` beside one `weights.safetensors`,
//! checked by size and FNV-1a. Runs saved before version 2 still resume.

use super::{invalid, io_err, Checkpoint, CheckpointError};
use crate::data::LoaderPosition;
use crate::io::weights::decode_safetensors;
use serde::Deserialize;
use std::path::Path;

/// The version-1 manifest's file name.
pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    step: u64,
    loader: LoaderPosition,
    seed: u64,
    config: serde_json::Value,
    best_eval_accuracy: Option<f64>,
    weights: WeightsEntry,
}

#[derive(Debug, Clone, Deserialize)]
struct WeightsEntry {
    file: String,
    bytes: u64,
    fnv1a64: String,
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// Loads and verifies the version-1 checkpoint in `dir`.
pub(crate) fn load_v1(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let mpath = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| invalid(&mpath, format!("the manifest does not parse: {e}")))?;
    if m.format != super::index::FORMAT || m.version != 1 {
        return Err(invalid(
            &mpath,
            format!(
                "format `{}` version {} in a version-1 manifest",
                m.format, m.version
            ),
        ));
    }
    if !super::index::plain_file_name(&m.weights.file) {
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
