//! The index file, little-endian:
//!
//! ```text
//! magic "OARVIDX\n" · version u32 (= 1) · metric u8 (0 cosine, 1 inner product)
//! · kind u8 (0 brute force, 1 HNSW) · dim u32 · count u64
//! · HNSW only: m u32 · ef_construction u32 · ef_search u32 · seed u64 · entry u64 (u64::MAX: none)
//! · vectors f32[count·dim] · deleted u8[count] · labels (u32 byte length + UTF-8)[count]
//! · meta (u32 byte length + UTF-8)
//! · HNSW only, per node: levels u8, then per level a u32 count and u32 neighbour ids
//! · sha256 of all the bytes before it
//! ```
//!
//! Written through `io::write_atomically` (temp file, fsync, rename), so a crash leaves the
//! old index or the new one, never half of one; the checksum catches later damage.

use super::hnsw::{Hnsw, HnswParams};
use super::{IndexError, IndexKind, Metric, VectorIndex};
use sha2::{Digest, Sha256};
use std::path::Path;

const MAGIC: &[u8; 8] = b"OARVIDX\n";
pub const VERSION: u32 = 1;

impl VectorIndex {
    /// The file's bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.vectors.len() * 4 + self.labels.len() * 16);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.push(match self.metric {
            Metric::Cosine => 0,
            Metric::InnerProduct => 1,
        });
        b.push(u8::from(self.graph.is_some()));
        b.extend_from_slice(&(self.dim as u32).to_le_bytes());
        b.extend_from_slice(&(self.labels.len() as u64).to_le_bytes());
        if let Some(g) = &self.graph {
            let p = g.params;
            for v in [p.m, p.ef_construction, p.ef_search] {
                b.extend_from_slice(&(v as u32).to_le_bytes());
            }
            b.extend_from_slice(&p.seed.to_le_bytes());
            b.extend_from_slice(&g.entry.map_or(u64::MAX, u64::from).to_le_bytes());
        }
        for x in &self.vectors {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend(self.deleted.iter().map(|&d| u8::from(d)));
        for l in &self.labels {
            b.extend_from_slice(&(l.len() as u32).to_le_bytes());
            b.extend_from_slice(l.as_bytes());
        }
        b.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
        b.extend_from_slice(self.meta.as_bytes());
        if let Some(g) = &self.graph {
            for node in &g.links {
                b.push(node.len() as u8);
                for layer in node {
                    b.extend_from_slice(&(layer.len() as u32).to_le_bytes());
                    for n in layer {
                        b.extend_from_slice(&n.to_le_bytes());
                    }
                }
            }
        }
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum);
        b
    }

    /// Writes the index to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        crate::io::write_atomically(path, &self.to_bytes()).map_err(|e| IndexError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Reads an index file.
    pub fn load(path: &Path) -> Result<VectorIndex, IndexError> {
        let bytes = std::fs::read(path).map_err(|source| IndexError::Io {
            path: path.display().to_string(),
            source,
        })?;
        VectorIndex::from_bytes(&bytes, &path.display().to_string())
    }

    /// Reads an index file that must hold `dim`-d features under `metric`: an index built
    /// with another extractor is refused before any search.
    pub fn load_expecting(
        path: &Path,
        dim: usize,
        metric: Metric,
    ) -> Result<VectorIndex, IndexError> {
        let index = VectorIndex::load(path)?;
        if index.dim != dim || index.metric != metric {
            return Err(IndexError::Mismatch {
                path: path.display().to_string(),
                expected: dim,
                expected_metric: metric.name(),
                found: index.dim,
                found_metric: index.metric.name(),
            });
        }
        Ok(index)
    }

    /// Parses the bytes of an index file; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<VectorIndex, IndexError> {
        let bad = |message: String| IndexError::File {
            path: path.to_string(),
            message,
        };
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not an oar vector index (no OARVIDX header)".into()));
        }
        if bytes.len() < MAGIC.len() + 4 + 32 {
            return Err(bad(format!("truncated: {} bytes", bytes.len())));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION {
            return Err(bad(format!(
                "index file version {version}; this oar reads version {VERSION}"
            )));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(bad(
                "checksum mismatch: the file is damaged or truncated; rebuild the index".into(),
            ));
        }
        let mut r = Reader {
            b: body,
            at: 12,
            path,
        };
        let metric = match r.u8("metric")? {
            0 => Metric::Cosine,
            1 => Metric::InnerProduct,
            m => return Err(bad(format!("unknown metric code {m}"))),
        };
        let hnsw = match r.u8("kind")? {
            0 => false,
            1 => true,
            k => return Err(bad(format!("unknown index kind code {k}"))),
        };
        let dim = r.u32("feature size")? as usize;
        let count = r.u64("entry count")? as usize;
        let params = if hnsw {
            let m = r.u32("m")? as usize;
            let ef_construction = r.u32("ef_construction")? as usize;
            let ef_search = r.u32("ef_search")? as usize;
            let seed = r.u64("seed")?;
            let entry = r.u64("entry point")?;
            Some((
                HnswParams {
                    m,
                    ef_construction,
                    ef_search,
                    seed,
                },
                entry,
            ))
        } else {
            None
        };
        let kind = params.map_or(IndexKind::BruteForce, |(p, _)| IndexKind::Hnsw(p));
        let mut index = VectorIndex::new(dim, metric, kind)?;
        let n_values = count
            .checked_mul(dim)
            .filter(|n| n.saturating_mul(4) <= body.len())
            .ok_or_else(|| {
                bad(format!(
                    "{count} entries of {dim} values do not fit the file"
                ))
            })?;
        let raw = r.take(n_values * 4, "vectors")?;
        index.vectors = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        index.deleted = r
            .take(count, "deleted flags")?
            .iter()
            .map(|&d| d != 0)
            .collect();
        index.labels = (0..count)
            .map(|i| {
                let len = r.u32("label length")? as usize;
                let s = r.take(len, "label")?;
                String::from_utf8(s.to_vec())
                    .map_err(|_| bad(format!("label of entry {i} is not UTF-8")))
            })
            .collect::<Result<_, _>>()?;
        let len = r.u32("meta length")? as usize;
        index.meta = String::from_utf8(r.take(len, "meta")?.to_vec())
            .map_err(|_| bad("the meta text is not UTF-8".into()))?;
        if let Some((p, entry)) = params {
            let mut links = Vec::with_capacity(count);
            for node in 0..count {
                let levels = r.u8("levels")? as usize;
                if levels == 0 || levels > 17 {
                    return Err(bad(format!("node {node} has {levels} levels")));
                }
                let mut node_links = Vec::with_capacity(levels);
                for _ in 0..levels {
                    let n = r.u32("link count")? as usize;
                    let ids = r.take(n.saturating_mul(4), "links")?;
                    let ids: Vec<u32> = ids
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if let Some(x) = ids.iter().find(|&&x| x as usize >= count) {
                        return Err(bad(format!(
                            "node {node} links to {x}, past {count} entries"
                        )));
                    }
                    node_links.push(ids);
                }
                links.push(node_links);
            }
            let entry = match entry {
                u64::MAX if count == 0 => None,
                e if (e as usize) < count => Some(e as u32),
                e => return Err(bad(format!("entry point {e} of {count} entries"))),
            };
            index.graph = Some(Hnsw::from_parts(p, links, entry));
        }
        if r.at != body.len() {
            return Err(bad(format!(
                "{} trailing bytes after the index",
                body.len() - r.at
            )));
        }
        Ok(index)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    path: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], IndexError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(IndexError::File {
                path: self.path.to_string(),
                message: format!("truncated while reading {what} at byte {}", self.at),
            });
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, IndexError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, IndexError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, IndexError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
}
