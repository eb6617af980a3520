//! Vector index for retrieval (PP-ShiTu's gallery): labelled feature vectors searched by
//! cosine similarity or inner product, exactly (brute force, for small galleries) or through
//! an HNSW graph ([`hnsw`]). Add, delete (the entry stops being returned), search, and a
//! versioned, checksummed file written atomically ([`file`]). See docs/shitu.md.

pub mod file;
pub mod hnsw;

pub use hnsw::HnswParams;

use thiserror::Error;

/// How two vectors are compared; scores are similarities (higher is nearer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `a·b / (‖a‖‖b‖)`; vectors are stored normalised.
    Cosine,
    /// `a·b` as given.
    InnerProduct,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::InnerProduct => "inner_product",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Metric, IndexError> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "ip" | "inner_product" => Ok(Metric::InnerProduct),
            _ => Err(IndexError::Parameter(format!(
                "unknown metric `{s}`; known: cosine, ip"
            ))),
        }
    }
}

/// Exact search or an HNSW graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    BruteForce,
    Hnsw(HnswParams),
}

#[derive(Debug, Error)]
pub enum IndexError {
    #[error("a vector of {found} values where the index holds {expected}-d features")]
    Dimension { expected: usize, found: usize },
    #[error("the vector has a non-finite value at position {0}")]
    NonFinite(usize),
    #[error("no entry {0} in the index")]
    NoEntry(usize),
    #[error("{0}")]
    Parameter(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: the index holds {found}-d {found_metric} features; expected {expected}-d {expected_metric} (an index built with another model?)")]
    Mismatch {
        path: String,
        expected: usize,
        expected_metric: &'static str,
        found: usize,
        found_metric: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The entry's id: its insertion order.
    pub id: usize,
    pub label: String,
    /// Similarity under the index's metric.
    pub score: f32,
}

/// Labelled vectors and, for [`IndexKind::Hnsw`], their graph.
#[derive(Debug, Clone)]
pub struct VectorIndex {
    dim: usize,
    metric: Metric,
    /// Row-major `[len, dim]`, normalised under [`Metric::Cosine`].
    vectors: Vec<f32>,
    labels: Vec<String>,
    deleted: Vec<bool>,
    graph: Option<hnsw::Hnsw>,
    /// Free text saved with the index (the CLI records the extractor that made it).
    meta: String,
}

/// `a·b`, in 16 lanes so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl VectorIndex {
    pub fn new(dim: usize, metric: Metric, kind: IndexKind) -> Result<VectorIndex, IndexError> {
        if dim == 0 {
            return Err(IndexError::Parameter(
                "the feature size must be positive".into(),
            ));
        }
        if let IndexKind::Hnsw(p) = kind {
            if p.m < 2 || p.ef_construction == 0 || p.ef_search == 0 {
                return Err(IndexError::Parameter(format!(
                    "HNSW needs m ≥ 2 and positive ef values; got m={}, ef_construction={}, ef_search={}",
                    p.m, p.ef_construction, p.ef_search
                )));
            }
        }
        Ok(VectorIndex {
            dim,
            metric,
            vectors: Vec::new(),
            labels: Vec::new(),
            deleted: Vec::new(),
            graph: match kind {
                IndexKind::BruteForce => None,
                IndexKind::Hnsw(p) => Some(hnsw::Hnsw::new(p)),
            },
            meta: String::new(),
        })
    }

    pub fn meta(&self) -> &str {
        &self.meta
    }

    pub fn set_meta(&mut self, meta: &str) {
        self.meta = meta.to_string();
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn kind(&self) -> IndexKind {
        match &self.graph {
            None => IndexKind::BruteForce,
            Some(g) => IndexKind::Hnsw(g.params),
        }
    }

    /// Entries ever added (deleted ones included: ids are never reused).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live() == 0
    }

    /// Entries not deleted.
    pub fn live(&self) -> usize {
        self.deleted.iter().filter(|d| !**d).count()
    }

    pub fn label(&self, id: usize) -> Option<&str> {
        self.labels.get(id).map(String::as_str)
    }

    pub fn is_deleted(&self, id: usize) -> bool {
        self.deleted.get(id).copied().unwrap_or(true)
    }

    /// Sets the search beam of an HNSW index (recall against speed); no effect on brute force.
    pub fn set_ef_search(&mut self, ef: usize) {
        if let Some(g) = &mut self.graph {
            g.params.ef_search = ef.max(1);
        }
    }

    /// The query or vector as stored: checked, and normalised for cosine.
    fn prepare(&self, v: &[f32]) -> Result<Vec<f32>, IndexError> {
        if v.len() != self.dim {
            return Err(IndexError::Dimension {
                expected: self.dim,
                found: v.len(),
            });
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite(i));
        }
        let mut v = v.to_vec();
        if self.metric == Metric::Cosine {
            let norm = dot(&v, &v).sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(v)
    }

    fn row(&self, id: usize) -> &[f32] {
        &self.vectors[id * self.dim..(id + 1) * self.dim]
    }

    /// Adds a labelled vector; returns its id.
    pub fn add(&mut self, v: &[f32], label: &str) -> Result<usize, IndexError> {
        let v = self.prepare(v)?;
        let id = self.labels.len();
        self.vectors.extend_from_slice(&v);
        self.labels.push(label.to_string());
        self.deleted.push(false);
        if let Some(mut g) = self.graph.take() {
            let vectors = &self.vectors;
            let dim = self.dim;
            let dist = |a: u32, b: u32| {
                let (a, b) = (a as usize, b as usize);
                1.0 - dot(
                    &vectors[a * dim..(a + 1) * dim],
                    &vectors[b * dim..(b + 1) * dim],
                )
            };
            g.insert(&dist);
            self.graph = Some(g);
        }
        Ok(id)
    }

    /// Deletes entry `id`: searches stop returning it.
    pub fn delete(&mut self, id: usize) -> Result<(), IndexError> {
        match self.deleted.get_mut(id) {
            Some(d) if !*d => {
                *d = true;
                Ok(())
            }
            _ => Err(IndexError::NoEntry(id)),
        }
    }

    /// The `k` live entries most similar to `query`, most similar first.
    pub fn search(&mut self, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        let q = self.prepare(query)?;
        let k = k.min(self.live());
        if k == 0 {
            return Ok(Vec::new());
        }
        let found: Vec<(usize, f32)> = match self.graph.take() {
            None => self.exact(&q, k),
            Some(mut g) => {
                let deleted = &self.deleted;
                let to = |n: u32| 1.0 - dot(&q, self.row(n as usize));
                let keep = |n: u32| !deleted[n as usize];
                // Deleted nodes take places in the beam; widen it until k live ones come back.
                let base = g.params.ef_search;
                let mut hits = g.search(k, &to, &keep);
                while hits.len() < k && g.params.ef_search < self.labels.len() {
                    g.params.ef_search = (g.params.ef_search * 2).min(self.labels.len());
                    hits = g.search(k, &to, &keep);
                }
                g.params.ef_search = base;
                self.graph = Some(g);
                hits.into_iter()
                    .map(|(n, d)| (n as usize, 1.0 - d))
                    .collect()
            }
        };
        Ok(found
            .into_iter()
            .map(|(id, score)| Hit {
                id,
                label: self.labels[id].clone(),
                score,
            })
            .collect())
    }

    /// The exact top `k` (brute force) whatever the index's kind: the reference HNSW
    /// results are measured against.
    pub fn search_exact(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        let q = self.prepare(query)?;
        Ok(self
            .exact(&q, k)
            .into_iter()
            .map(|(id, score)| Hit {
                id,
                label: self.labels[id].clone(),
                score,
            })
            .collect())
    }

    /// Brute force: every live entry scored, the top `k` by a partial sort.
    fn exact(&self, q: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = (0..self.labels.len())
            .filter(|&i| !self.deleted[i])
            .map(|i| (i, dot(q, self.row(i))))
            .collect();
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < all.len() {
            all.select_nth_unstable_by(k, by_score);
            all.truncate(k);
        }
        all.sort_by(by_score);
        all
    }
}

#[cfg(test)]
mod tests;
