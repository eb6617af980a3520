//! Reading a version-2 checkpoint: verifying every shard against the index, reassembling
//! full tensors from any layout, and cutting the part a target rank needs.

use super::index::{plain_file_name, sha256_hex, Index, Region, Sharding, INDEX};
use super::slice::{as_bytes, extract, from_bytes, place, Dt};
use super::{invalid, io_err, Checkpoint, CheckpointError};
use crate::io::weights::Weights;
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads and checks `dir/index.json` on its own (no shard is read).
pub fn read_index(dir: &Path) -> Result<Index, CheckpointError> {
    let path = dir.join(INDEX);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| {
        invalid(
            &path,
            format!("the index does not parse (partial or damaged): {e}"),
        )
    })?;
    index.validate(&path)?;
    Ok(index)
}

fn tensor_err(path: &Path, tensor: &str, message: String) -> CheckpointError {
    CheckpointError::Tensor {
        path: path.display().to_string(),
        tensor: tensor.to_string(),
        message,
    }
}

/// Reads shard `file` and checks it against the index: present, holding the tensors the
/// index puts there with their shapes and dtypes, of the recorded size and sha256. A
/// checksum failure is traced to the tensor whose bytes changed.
fn read_verified_shard(dir: &Path, index: &Index, file: &str) -> Result<Vec<u8>, CheckpointError> {
    let path = dir.join(file);
    let rec = index
        .shards
        .iter()
        .find(|s| s.file == file)
        .ok_or_else(|| invalid(&path, "not listed in the index"))?;
    let here: Vec<(&String, &super::index::TensorEntry, &super::index::Piece)> = index
        .tensors
        .iter()
        .flat_map(|(k, t)| {
            t.pieces
                .iter()
                .filter(|p| p.file == file)
                .map(move |p| (k, t, p))
        })
        .collect();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let names: Vec<&str> = here.iter().map(|h| h.0.as_str()).take(4).collect();
            return Err(invalid(
                &path,
                format!(
                    "missing shard (it holds {} tensors: {}{})",
                    here.len(),
                    names.join(", "),
                    if here.len() > 4 { ", ..." } else { "" }
                ),
            ));
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    // The header first: an index from another model names tensors the shard lacks.
    if let Some(header) = read_header(&bytes) {
        for (name, t, p) in &here {
            let region = t
                .sharding
                .region(&t.shape, p.part)
                .map_err(|m| tensor_err(&path, name, m))?;
            let want = (t.dtype.as_str(), region.shape(&t.shape));
            match header.get(name.as_str()) {
                Some((d, s)) if (d.as_str(), s.clone()) == want => {}
                Some((d, s)) => {
                    return Err(tensor_err(
                        &path,
                        name,
                        format!(
                            "the shard holds {s:?} {d}, the index expects {:?} {} (the index \
                             belongs to another model or checkpoint)",
                            want.1, want.0
                        ),
                    ))
                }
                None => {
                    return Err(tensor_err(
                        &path,
                        name,
                        "not in the shard (the index belongs to another model or checkpoint)"
                            .into(),
                    ))
                }
            }
        }
    }
    if bytes.len() as u64 != rec.bytes {
        return Err(invalid(
            &path,
            format!(
                "{} bytes, the index records {} (truncated or replaced)",
                bytes.len(),
                rec.bytes
            ),
        ));
    }
    let sum = sha256_hex(&bytes);
    if sum != rec.sha256 {
        let culprit = SafeTensors::deserialize(&bytes).ok().and_then(|st| {
            here.iter()
                .find(|(name, _, p)| {
                    st.tensor(name)
                        .map(|v| sha256_hex(v.data()) != p.sha256)
                        .unwrap_or(true)
                })
                .map(|h| h.0.clone())
        });
        let message = format!(
            "checksum sha256 {} does not match the index's {} (the file is corrupted{})",
            &sum[..16],
            rec.sha256.get(..16).unwrap_or(&rec.sha256),
            if culprit.is_none() {
                ", in its header"
            } else {
                ""
            }
        );
        return Err(match culprit {
            Some(t) => tensor_err(&path, &t, message),
            None => invalid(&path, message),
        });
    }
    Ok(bytes)
}

/// The safetensors header: name -> (dtype, shape); None when it does not parse.
fn read_header(bytes: &[u8]) -> Option<BTreeMap<String, (String, Vec<usize>)>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let json: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let mut out = BTreeMap::new();
    for (k, v) in json.as_object()? {
        if k == "__metadata__" {
            continue;
        }
        let dtype = v.get("dtype")?.as_str()?.to_string();
        let shape = v
            .get("shape")?
            .as_array()?
            .iter()
            .map(|x| x.as_u64().map(|u| u as usize))
            .collect::<Option<Vec<_>>>()?;
        out.insert(k.clone(), (dtype, shape));
    }
    Some(out)
}

/// Verifies every shard of the checkpoint in `dir` (sizes, tensors, sha256) and returns its
/// index; the error names the file, and the tensor where one is to blame.
pub fn verify_checkpoint(dir: &Path) -> Result<Index, CheckpointError> {
    let index = read_index(dir)?;
    for s in &index.shards {
        read_verified_shard(dir, &index, &s.file)?;
    }
    Ok(index)
}

/// Every tensor of the verified checkpoint in `dir`, whole. A tensor stored whole is
/// decoded straight from its shard's bytes; a split one is put together in a byte buffer.
fn assemble(dir: &Path, index: &Index) -> Result<Weights, CheckpointError> {
    let mut parts: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut out = Weights::new();
    for s in &index.shards {
        if !plain_file_name(&s.file) {
            return Err(invalid(&dir.join(INDEX), format!("shard `{}`", s.file)));
        }
        let bytes = read_verified_shard(dir, index, &s.file)?;
        let path = dir.join(&s.file);
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| invalid(&path, format!("not a safetensors file: {e}")))?;
        for (name, t) in &index.tensors {
            let dt = Dt::parse(&t.dtype)
                .ok_or_else(|| tensor_err(&dir.join(INDEX), name, format!("dtype {}", t.dtype)))?;
            for p in t.pieces.iter().filter(|p| p.file == s.file) {
                let view = st
                    .tensor(name)
                    .map_err(|e| tensor_err(&path, name, e.to_string()))?;
                let region = t
                    .sharding
                    .region(&t.shape, p.part)
                    .map_err(|m| tensor_err(&path, name, m))?;
                if region == Region::Whole {
                    out.insert(name.clone(), from_bytes(dt, t.shape.clone(), view.data()));
                    continue;
                }
                let buf = parts
                    .entry(name.as_str())
                    .or_insert_with(|| vec![0u8; t.shape.iter().product::<usize>() * dt.size()]);
                place(buf, &t.shape, dt.size(), region, view.data());
            }
        }
    }
    for (name, buf) in parts {
        let t = &index.tensors[name];
        let dt = Dt::parse(&t.dtype).unwrap_or(Dt::F32); // checked above
        out.insert(name.to_string(), from_bytes(dt, t.shape.clone(), &buf));
    }
    Ok(out)
}

/// Loads the version-2 checkpoint in `dir`: verified, every tensor reassembled whole.
pub(crate) fn load_v2(dir: &Path) -> Result<Checkpoint, CheckpointError> {
    let index = read_index(dir)?;
    let weights = assemble(dir, &index)?;
    Ok(Checkpoint {
        step: index.step,
        loader: index.loader,
        seed: index.seed,
        config: index.config,
        best_eval_accuracy: index.best_eval_accuracy,
        weights,
    })
}

/// The part of every tensor a target rank holds: each tensor's sharding in the target layout
/// (tensors not listed are whole) and the rank's coordinate on each mesh axis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardSpec {
    pub tensors: BTreeMap<String, Sharding>,
    pub coords: BTreeMap<String, usize>,
}

impl ShardSpec {
    /// Every tensor of `names` under `sharding`, at `coord` on its axis.
    pub fn uniform<'a>(
        names: impl IntoIterator<Item = &'a String>,
        sharding: Sharding,
        coord: usize,
    ) -> ShardSpec {
        let coords = sharding
            .axis()
            .map(|a| BTreeMap::from([(a.to_string(), coord)]))
            .unwrap_or_default();
        ShardSpec {
            tensors: names
                .into_iter()
                .map(|n| (n.clone(), sharding.clone()))
                .collect(),
            coords,
        }
    }

    fn region(&self, name: &str, shape: &[usize]) -> Result<Region, String> {
        let Some(s) = self.tensors.get(name) else {
            return Ok(Region::Whole);
        };
        let part = match s.axis() {
            None => 0,
            Some(a) => *self
                .coords
                .get(a)
                .ok_or_else(|| format!("the target gives no coordinate on axis `{a}`"))?,
        };
        s.region(shape, part)
    }
}

/// Loads the checkpoint at `path` (a checkpoint directory or a root, whose newest is taken),
/// whatever layout wrote it, and returns the parts `target` holds. Version-1 checkpoints
/// (one whole file) reshard too.
pub fn load_resharded(path: &Path, target: &ShardSpec) -> Result<Weights, CheckpointError> {
    let dir = super::resolve_checkpoint(path)?;
    let full = if dir.join(INDEX).is_file() {
        assemble(&dir, &read_index(&dir)?)?
    } else {
        super::v1::load_v1(&dir)?.weights
    };
    let mut out = Weights::new();
    for (name, t) in full {
        let region = target
            .region(&name, &t.shape)
            .map_err(|m| tensor_err(&dir, &name, m))?;
        if region == Region::Whole {
            out.insert(name, t);
            continue;
        }
        let dt = Dt::of(&t.data);
        let part = extract(&as_bytes(&t), &t.shape, dt.size(), region);
        out.insert(name, from_bytes(dt, region.shape(&t.shape), &part));
    }
    Ok(out)
}
