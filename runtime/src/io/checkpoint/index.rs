//! `index.json`, the one file that makes a checkpoint directory a checkpoint: the run's
//! state (step, loader position, seed, config, best accuracy, RNG), the writer's layout, and
//! for every tensor its global shape, dtype, sharding and the shard file holding each part,
//! with a sha256 of every shard file and of every piece.

use super::{invalid, CheckpointError};
use crate::data::LoaderPosition;
use crate::io::weights::Weights;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// The index's file name.
pub const INDEX: &str = "index.json";
/// The index's `format` field.
pub const FORMAT: &str = "oar-checkpoint";
/// The index's `version` field (version 1 was the single-file `manifest.json`).
pub const VERSION: u32 = 2;

/// How a tensor is cut into parts across a mesh axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sharding {
    /// One part, the whole tensor (data-parallel replicas store it once).
    Replicated,
    /// Cut along `dim` into `parts` contiguous parts (tensor parallelism); part `i` is
    /// [`part_range`]`(shape[dim], parts, i)`.
    Split {
        dim: usize,
        parts: usize,
        axis: String,
    },
    /// The row-major flattening cut into `parts` contiguous ranges (ZeRO-partitioned flat
    /// optimizer state); part `i` is [`part_range`]`(numel, parts, i)`, stored 1-D.
    Flat { parts: usize, axis: String },
}

/// Part `i` of a tensor's elements (flat) or rows (split): where it starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Whole,
    Dim {
        dim: usize,
        start: usize,
        len: usize,
    },
    Flat {
        start: usize,
        len: usize,
    },
}

/// Part `i` of `n` items cut into `parts`: the first `n % parts` parts take one item more, so
/// sizes differ by at most one. Returns (start, len).
pub fn part_range(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let parts = parts.max(1);
    let (q, r) = (n / parts, n % parts);
    (i * q + i.min(r), q + usize::from(i < r))
}

impl Sharding {
    /// How many parts.
    pub fn parts(&self) -> usize {
        match self {
            Sharding::Replicated => 1,
            Sharding::Split { parts, .. } | Sharding::Flat { parts, .. } => *parts,
        }
    }

    /// The mesh axis the parts lie along (none when replicated).
    pub fn axis(&self) -> Option<&str> {
        match self {
            Sharding::Replicated => None,
            Sharding::Split { axis, .. } | Sharding::Flat { axis, .. } => Some(axis),
        }
    }

    /// The region of part `part` of a tensor of `shape`, or why there is none.
    pub fn region(&self, shape: &[usize], part: usize) -> Result<Region, String> {
        if part >= self.parts() || self.parts() == 0 {
            return Err(format!("part {part} of a {self} sharding"));
        }
        Ok(match self {
            Sharding::Replicated => Region::Whole,
            Sharding::Split { dim, parts, .. } => {
                let n = *shape
                    .get(*dim)
                    .ok_or_else(|| format!("{self} on a rank-{} tensor", shape.len()))?;
                let (start, len) = part_range(n, *parts, part);
                Region::Dim {
                    dim: *dim,
                    start,
                    len,
                }
            }
            Sharding::Flat { parts, .. } => {
                let (start, len) = part_range(shape.iter().product(), *parts, part);
                Region::Flat { start, len }
            }
        })
    }
}

impl Region {
    /// The shape of this region of a tensor of `shape`.
    pub fn shape(&self, shape: &[usize]) -> Vec<usize> {
        match *self {
            Region::Whole => shape.to_vec(),
            Region::Dim { dim, len, .. } => {
                let mut s = shape.to_vec();
                s[dim] = len;
                s
            }
            Region::Flat { len, .. } => vec![len],
        }
    }

    /// (start, len) along the cut; the whole tensor is (0, numel).
    pub fn range(&self, shape: &[usize]) -> (usize, usize) {
        match *self {
            Region::Whole => (0, shape.iter().product()),
            Region::Dim { start, len, .. } | Region::Flat { start, len } => (start, len),
        }
    }
}

impl fmt::Display for Sharding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sharding::Replicated => write!(f, "replicated"),
            Sharding::Split { dim, parts, axis } => {
                write!(f, "split(dim {dim}, {parts} over {axis})")
            }
            Sharding::Flat { parts, axis } => write!(f, "flat({parts} over {axis})"),
        }
    }
}

/// One named axis of the writer's device mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshAxis {
    pub name: String,
    pub size: usize,
}

/// How the writer's processes were arranged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Processes that wrote shards (one shard file each).
    pub world: usize,
    /// The mesh, outermost axis first; empty for one process.
    pub mesh: Vec<MeshAxis>,
}

impl Layout {
    /// One process.
    pub fn single() -> Layout {
        Layout {
            world: 1,
            mesh: Vec::new(),
        }
    }

    /// `world` data-parallel processes along axis `dp`.
    pub fn data_parallel(world: usize) -> Layout {
        Layout {
            world,
            mesh: vec![MeshAxis {
                name: "dp".into(),
                size: world,
            }],
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "world {}", self.world)?;
        for (i, a) in self.mesh.iter().enumerate() {
            write!(
                f,
                "{}{}{}",
                if i == 0 { ", mesh " } else { "x" },
                a.name,
                a.size
            )?;
        }
        Ok(())
    }
}

/// One stored part of a tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Which part (see [`Sharding::region`]).
    pub part: usize,
    /// The shard file holding it, under the tensor's own name.
    pub file: String,
    /// Where the part starts along the cut (rows of `dim`, or flat elements).
    pub start: usize,
    /// Its length along the cut.
    pub len: usize,
    /// sha256 of the part's bytes, hex: names the tensor when a shard's checksum fails.
    pub sha256: String,
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// The full tensor's shape.
    pub shape: Vec<usize>,
    /// `F32`, `F64`, `I64` or `BOOL` (safetensors' names).
    pub dtype: String,
    pub sharding: Sharding,
    /// One per part, in part order.
    pub pieces: Vec<Piece>,
}

/// One shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFile {
    pub file: String,
    /// The rank that wrote it.
    pub rank: usize,
    pub bytes: u64,
    pub sha256: String,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub format: String,
    pub version: u32,
    /// Training steps completed.
    pub step: u64,
    /// Where the data loader continues.
    pub loader: LoaderPosition,
    pub seed: u64,
    /// The run's settings as the trainer recorded them.
    pub config: serde_json::Value,
    pub best_eval_accuracy: Option<f64>,
    /// Any further RNG state the trainer keeps (the loader's is in `loader`).
    #[serde(default)]
    pub rng: Option<serde_json::Value>,
    /// The model's name, when the trainer's config records one (`config.model`).
    #[serde(default)]
    pub model: Option<String>,
    /// [`fingerprint`] of the tensors below: a hand-edited or partial index, or one from
    /// another model's parameter set, does not match.
    pub fingerprint: String,
    /// The writer's layout.
    pub layout: Layout,
    pub shards: Vec<ShardFile>,
    pub tensors: BTreeMap<String, TensorEntry>,
}

/// Hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The parameter-set fingerprint: sha256 (first 16 hex digits) over every tensor's name,
/// dtype and global shape, in name order. Two models with the same fingerprint take each
/// other's weights.
pub fn fingerprint<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a str, &'a [usize])>,
) -> String {
    let mut h = Sha256::new();
    for (name, dtype, shape) in tensors {
        h.update(format!("{name}\t{dtype}\t{shape:?}\n").as_bytes());
    }
    hex(&h.finalize())[..16].to_string()
}

/// The fingerprint of in-memory weights (compare with [`Index::fingerprint`]).
pub fn weights_fingerprint(weights: &Weights) -> String {
    let dts: Vec<&str> = weights
        .values()
        .map(|t| super::slice::Dt::of(&t.data).name())
        .collect();
    fingerprint(
        weights
            .iter()
            .zip(&dts)
            .map(|((k, t), d)| (k.as_str(), *d, t.shape.as_slice())),
    )
}

pub(crate) fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && !name.starts_with('.')
}

impl Index {
    /// The fingerprint the tensors in this index give.
    pub fn computed_fingerprint(&self) -> String {
        fingerprint(
            self.tensors
                .iter()
                .map(|(k, t)| (k.as_str(), t.dtype.as_str(), t.shape.as_slice())),
        )
    }

    /// Checks the index on its own: format, fingerprint, every tensor's pieces tile it as its
    /// sharding says, and every piece's file is a listed shard. `path` names the index file.
    pub fn validate(&self, path: &Path) -> Result<(), CheckpointError> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(invalid(
                path,
                format!(
                    "format `{}` version {}, this build reads `{FORMAT}` version {VERSION}",
                    self.format, self.version
                ),
            ));
        }
        let fp = self.computed_fingerprint();
        if fp != self.fingerprint {
            return Err(invalid(
                path,
                format!(
                    "its tensors give fingerprint {fp}, it records {} (edited or incomplete index)",
                    self.fingerprint
                ),
            ));
        }
        let files: BTreeSet<&str> = self.shards.iter().map(|s| s.file.as_str()).collect();
        if let Some(s) = self.shards.iter().find(|s| !plain_file_name(&s.file)) {
            return Err(invalid(
                path,
                format!("shard `{}` is not a plain file name", s.file),
            ));
        }
        for (name, t) in &self.tensors {
            let bad = |m: String| CheckpointError::Tensor {
                path: path.display().to_string(),
                tensor: name.clone(),
                message: m,
            };
            if super::slice::Dt::parse(&t.dtype).is_none() {
                return Err(bad(format!("unknown dtype `{}`", t.dtype)));
            }
            if t.pieces.len() != t.sharding.parts() {
                return Err(bad(format!(
                    "{} pieces for a {} sharding",
                    t.pieces.len(),
                    t.sharding
                )));
            }
            for (i, p) in t.pieces.iter().enumerate() {
                let region = t.sharding.region(&t.shape, i).map_err(bad)?;
                if p.part != i || region.range(&t.shape) != (p.start, p.len) {
                    return Err(bad(format!(
                        "piece {i} covers part {} at {}+{}, the sharding puts part {i} at {:?}",
                        p.part,
                        p.start,
                        p.len,
                        region.range(&t.shape)
                    )));
                }
                if !files.contains(p.file.as_str()) {
                    return Err(bad(format!(
                        "piece {i} is in `{}`, not a listed shard",
                        p.file
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_and_differ_by_at_most_one() {
        for n in 0..40 {
            for k in 1..9 {
                let mut next = 0;
                for i in 0..k {
                    let (s, l) = part_range(n, k, i);
                    assert_eq!(s, next);
                    assert!(l == n / k || l == n / k + 1);
                    next = s + l;
                }
                assert_eq!(next, n);
            }
        }
    }
}
