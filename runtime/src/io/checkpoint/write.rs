//! Writing a checkpoint from one or many processes.
//!
//! Every rank calls [`save_shard`]: it writes `shard-RRRRR-of-NNNNN.safetensors` (synced,
//! under a temporary name, then renamed) into the step's hidden staging directory
//! `ROOT/.step-NNNNNNNN.partial/`, then a small receipt `shard-RRRRR-of-NNNNN.json` saying
//! what the shard holds. After a barrier the caller provides, rank 0 calls [`commit_index`]:
//! it reads the receipts, checks that the parts tile every tensor, writes `index.json`
//! (synced), drops the receipts and renames the staging directory to `ROOT/step-NNNNNNNN/`.
//! The index is written last and the rename publishes it, so a checkpoint directory either
//! holds a complete index or does not exist; a crash leaves only a hidden staging directory,
//! which the next save of that step reuses.

use super::index::{
    fingerprint, hex, Index, Layout, Piece, ShardFile, Sharding, TensorEntry, FORMAT, INDEX,
    VERSION,
};
use super::slice::{as_bytes, extract, to_bytes, Dt};
use super::{invalid, io_err, list_checkpoints, step_dir_name, write_synced, CheckpointError};
use crate::data::LoaderPosition;
use crate::io::weights::Weights;
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a checkpoint records besides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub step: u64,
    pub loader: LoaderPosition,
    pub seed: u64,
    pub config: serde_json::Value,
    pub best_eval_accuracy: Option<f64>,
    /// Further RNG state, if the trainer keeps any beyond the loader's.
    pub rng: Option<serde_json::Value>,
    /// The writers' layout; `layout.world` shards are expected.
    pub layout: Layout,
}

/// One part of one tensor that a rank writes.
#[derive(Debug, Clone)]
pub struct ShardPiece<'a> {
    pub name: &'a str,
    /// This rank's part (its shape is the region's), or the full tensor when replicated.
    pub tensor: &'a HostTensor,
    /// The full tensor's shape.
    pub global_shape: Vec<usize>,
    pub sharding: Sharding,
    /// Which part `tensor` is.
    pub part: usize,
}

impl<'a> ShardPiece<'a> {
    /// A whole tensor stored once.
    pub fn whole(name: &'a str, tensor: &'a HostTensor) -> ShardPiece<'a> {
        ShardPiece {
            name,
            tensor,
            global_shape: tensor.shape.clone(),
            sharding: Sharding::Replicated,
            part: 0,
        }
    }
}

/// A rank's report of what its shard holds, read by [`commit_index`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    shard: ShardFile,
    world: usize,
    tensors: BTreeMap<String, ReceiptEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReceiptEntry {
    shape: Vec<usize>,
    dtype: String,
    sharding: Sharding,
    piece: Piece,
}

/// `shard-RRRRR-of-NNNNN.safetensors`.
pub fn shard_file_name(rank: usize, world: usize) -> String {
    format!("shard-{rank:05}-of-{world:05}.safetensors")
}

fn receipt_name(rank: usize, world: usize) -> String {
    format!("shard-{rank:05}-of-{world:05}.json")
}

/// The hidden directory where step `step`'s shards gather before the commit.
pub fn staging_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!(".{}.partial", step_dir_name(step)))
}

/// Splits `weights` into `world` disjoint sets of names whose byte totals are balanced
/// (largest first onto the lightest set, ties by name, so every rank computes the same
/// split), so `world` data-parallel ranks each write about 1/world of the bytes.
pub fn balance_by_bytes(weights: &Weights, world: usize) -> Vec<Vec<String>> {
    let world = world.max(1);
    let mut by_size: Vec<(usize, &String)> = weights
        .iter()
        .map(|(k, t)| {
            (
                t.shape.iter().product::<usize>() * Dt::of(&t.data).size(),
                k,
            )
        })
        .collect();
    by_size.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut sets = vec![(0usize, Vec::new()); world];
    for (bytes, name) in by_size {
        let (i, _) = sets
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (s.0, *i))
            .unwrap_or((0, &sets[0]));
        sets[i].0 += bytes;
        sets[i].1.push(name.clone());
    }
    sets.into_iter()
        .map(|(_, mut v)| {
            v.sort();
            v
        })
        .collect()
}

/// Writes rank `rank`'s shard of checkpoint `step` (of `world` shards) into the step's
/// staging directory, then its receipt. Returns the shard's path.
pub fn save_shard(
    root: &Path,
    step: u64,
    rank: usize,
    world: usize,
    pieces: &[ShardPiece<'_>],
) -> Result<PathBuf, CheckpointError> {
    let dir = staging_dir(root, step);
    if rank >= world {
        return Err(invalid(&dir, format!("rank {rank} of a world of {world}")));
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let file = shard_file_name(rank, world);
    let path = dir.join(&file);
    let mut data: Vec<Item<'_>> = Vec::with_capacity(pieces.len());
    let mut tensors = BTreeMap::new();
    for p in pieces {
        let bad = |m: String| CheckpointError::Tensor {
            path: path.display().to_string(),
            tensor: p.name.to_string(),
            message: m,
        };
        let region = p.sharding.region(&p.global_shape, p.part).map_err(bad)?;
        if region.shape(&p.global_shape) != p.tensor.shape {
            return Err(bad(format!(
                "part {} of {:?} under {} has shape {:?}, given {:?}",
                p.part,
                p.global_shape,
                p.sharding,
                region.shape(&p.global_shape),
                p.tensor.shape
            )));
        }
        let dt = Dt::of(&p.tensor.data);
        let (start, len) = region.range(&p.global_shape);
        let entry = ReceiptEntry {
            shape: p.global_shape.clone(),
            dtype: dt.name().into(),
            sharding: p.sharding.clone(),
            piece: Piece {
                part: p.part,
                file: file.clone(),
                start,
                len,
                sha256: String::new(), // filled in as the bytes are written
            },
        };
        if tensors.insert(p.name.to_string(), entry).is_some() {
            return Err(bad("two parts of one tensor in one shard".into()));
        }
        data.push((p.name, dt, &p.tensor.shape, as_bytes(p.tensor)));
    }
    data.sort_by(|a, b| a.0.cmp(b.0));
    let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
    let (bytes, sha256, sums) = write_safetensors(&tmp, &data)?;
    drop(data);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    for ((_, e), sum) in tensors.iter_mut().zip(sums) {
        e.piece.sha256 = sum;
    }
    let receipt = Receipt {
        shard: ShardFile {
            file: file.clone(),
            rank,
            bytes,
            sha256,
        },
        world,
        tensors,
    };
    let text = serde_json::to_vec(&receipt).map_err(|e| invalid(&path, e.to_string()))?;
    // The receipt is renamed into place after the shard, so a receipt vouches for its shard.
    let rpath = dir.join(receipt_name(rank, world));
    let rtmp = dir.join(format!(
        ".{}.tmp-{}",
        receipt_name(rank, world),
        std::process::id()
    ));
    write_synced(&rtmp, &text)?;
    std::fs::rename(&rtmp, &rpath).map_err(io_err(&rpath))?;
    Ok(path)
}

/// One tensor of a shard being written: name, dtype, shape, little-endian bytes.
type Item<'a> = (&'a str, Dt, &'a [usize], Cow<'a, [u8]>);

/// Writes a safetensors file of `items` (sorted by name) to `path`, synced, hashing as it
/// goes: one pass over each tensor's bytes feeds the file's sha256 and the tensor's, with
/// no serialised copy of the whole shard in memory. Returns (bytes, file sha256, the
/// tensors' sha256 in order).
fn write_safetensors(
    path: &Path,
    items: &[Item<'_>],
) -> Result<(u64, String, Vec<String>), CheckpointError> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dt, shape, b) in items {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dt.name(), "shape": shape, "data_offsets": [off, off + b.len()]}),
        );
        off += b.len();
    }
    let mut h = serde_json::to_vec(&header).map_err(|e| invalid(path, e.to_string()))?;
    // safetensors pads the header with spaces so the data starts 8-aligned.
    while (8 + h.len()) % 8 != 0 {
        h.push(b' ');
    }
    let n = (h.len() as u64).to_le_bytes();
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    let mut file_hash = Sha256::new();
    file_hash.update(n);
    file_hash.update(&h);
    f.write_all(&n).map_err(io_err(path))?;
    f.write_all(&h).map_err(io_err(path))?;
    let mut sums = Vec::with_capacity(items.len());
    for (_, _, _, b) in items {
        let mut piece_hash = Sha256::new();
        // Chunks small enough to stay in cache between the two hashes and the write.
        for chunk in b.chunks(1 << 20) {
            file_hash.update(chunk);
            piece_hash.update(chunk);
            f.write_all(chunk).map_err(io_err(path))?;
        }
        sums.push(hex(&piece_hash.finalize()));
    }
    f.sync_all().map_err(io_err(path))?;
    Ok(((8 + h.len() + off) as u64, hex(&file_hash.finalize()), sums))
}

/// Rank 0, after every rank's [`save_shard`] returned: checks the shards, writes the index,
/// publishes `ROOT/step-NNNNNNNN/` and keeps the newest `keep` checkpoints (0 keeps all).
/// Returns the checkpoint's directory.
pub fn commit_index(
    root: &Path,
    meta: &CheckpointMeta,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    let dir = staging_dir(root, meta.step);
    let world = meta.layout.world;
    let mut shards = Vec::with_capacity(world);
    let mut tensors: BTreeMap<String, TensorEntry> = BTreeMap::new();
    for rank in 0..world {
        let rpath = dir.join(receipt_name(rank, world));
        let text = std::fs::read(&rpath).map_err(|e| {
            invalid(
                &rpath,
                format!("rank {rank} has not written its shard: {e}"),
            )
        })?;
        let r: Receipt = serde_json::from_slice(&text)
            .map_err(|e| invalid(&rpath, format!("the receipt does not parse: {e}")))?;
        let spath = dir.join(&r.shard.file);
        let on_disk = std::fs::metadata(&spath).map_err(io_err(&spath))?.len();
        if on_disk != r.shard.bytes || r.world != world {
            return Err(invalid(
                &spath,
                format!(
                    "{on_disk} bytes on disk, its receipt says {}",
                    r.shard.bytes
                ),
            ));
        }
        for (name, e) in r.tensors {
            let t = tensors.entry(name.clone()).or_insert_with(|| TensorEntry {
                shape: e.shape.clone(),
                dtype: e.dtype.clone(),
                sharding: e.sharding.clone(),
                pieces: Vec::new(),
            });
            if (&t.shape, &t.dtype, &t.sharding) != (&e.shape, &e.dtype, &e.sharding) {
                return Err(CheckpointError::Tensor {
                    path: spath.display().to_string(),
                    tensor: name,
                    message: format!(
                        "{:?} {} {} here, {:?} {} {} in another shard",
                        e.shape, e.dtype, e.sharding, t.shape, t.dtype, t.sharding
                    ),
                });
            }
            t.pieces.push(e.piece);
        }
        shards.push(r.shard);
    }
    for t in tensors.values_mut() {
        t.pieces.sort_by_key(|p| p.part);
    }
    let index = Index {
        format: FORMAT.into(),
        version: VERSION,
        step: meta.step,
        loader: meta.loader,
        seed: meta.seed,
        config: meta.config.clone(),
        best_eval_accuracy: meta.best_eval_accuracy,
        rng: meta.rng.clone(),
        model: meta
            .config
            .get("model")
            .and_then(|m| m.as_str())
            .map(String::from),
        fingerprint: fingerprint(
            tensors
                .iter()
                .map(|(k, t)| (k.as_str(), t.dtype.as_str(), t.shape.as_slice())),
        ),
        layout: meta.layout.clone(),
        shards,
        tensors,
    };
    // Missing or duplicate parts show here, before anything is published.
    let ipath = dir.join(INDEX);
    index.validate(&ipath)?;
    // Receipts and leftovers of an earlier, crashed attempt (another world size) go first,
    // so the published directory holds exactly the shards and the index.
    for e in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !index.shards.iter().any(|s| s.file == name) {
            let p = e.path();
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    let text = serde_json::to_string_pretty(&index).map_err(|e| invalid(&ipath, e.to_string()))?;
    write_synced(&ipath, text.as_bytes())?;
    sync_dir(&dir);
    let name = step_dir_name(meta.step);
    let fin = root.join(&name);
    // A checkpoint of the same step (a resumed run saving again) is replaced whole.
    if fin.exists() {
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(&fin, &old).map_err(io_err(&fin))?;
        std::fs::rename(&dir, &fin).map_err(io_err(&fin))?;
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    } else {
        std::fs::rename(&dir, &fin).map_err(io_err(&fin))?;
    }
    // Make the rename durable before pruning older checkpoints.
    sync_dir(root);
    if keep > 0 {
        let all = list_checkpoints(root)?;
        for (_, d) in all.iter().take(all.len().saturating_sub(keep)) {
            if d != &fin {
                std::fs::remove_dir_all(d).map_err(io_err(d))?;
            }
        }
    }
    Ok(fin)
}

fn sync_dir(dir: &Path) {
    // Best effort: not every file system syncs directories.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Rank `rank` of `world` data-parallel ranks writes its balanced share
/// ([`balance_by_bytes`]) of weights every rank holds in full.
pub fn save_replicated_shard(
    root: &Path,
    step: u64,
    rank: usize,
    world: usize,
    weights: &Weights,
) -> Result<PathBuf, CheckpointError> {
    let mine = balance_by_bytes(weights, world)
        .into_iter()
        .nth(rank)
        .unwrap_or_default();
    let pieces: Vec<ShardPiece<'_>> = mine
        .iter()
        .filter_map(|k| weights.get_key_value(k))
        .map(|(k, t)| ShardPiece::whole(k, t))
        .collect();
    save_shard(root, step, rank, world, &pieces)
}

/// The part `part` of `t` under `sharding`, as a tensor a rank would hold (for writers and
/// tests that start from full tensors).
pub fn shard_of(t: &HostTensor, sharding: &Sharding, part: usize) -> Result<HostTensor, String> {
    let region = sharding.region(&t.shape, part)?;
    let dt = Dt::of(&t.data);
    let b = extract(&to_bytes(t), &t.shape, dt.size(), region);
    Ok(super::slice::from_bytes(dt, region.shape(&t.shape), &b))
}
