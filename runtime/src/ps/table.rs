//! One server's shard of a sparse table: rows by key, created on first pull from their
//! initializer (a pure function of table, key and column, so every layout and the
//! single-process reference start from the same values), each with its optimizer state and
//! update count.

use super::optim::SparseOptim;
use crate::data::criteo::mix64;
use crate::data::criteo_synth::hashed_normal;
use crate::io::checkpoint::fnv1a64;
use crate::tensor::HostTensor;
use std::collections::HashMap;

/// How a new row is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowInit {
    Constant(f32),
    /// `N(0, std²)` from a hash of (seed, table, key, column).
    Normal {
        std: f32,
        seed: u64,
    },
}

/// A sparse table's shape and initializer.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// The model's parameter name (`emb.weight`).
    pub name: String,
    pub dim: usize,
    /// Keys are `< rows` (ids hashed modulo the rows).
    pub rows: u64,
    pub init: RowInit,
}

impl TableSpec {
    /// Fills `out` (`dim` floats) with row `key`'s initial values.
    pub fn init_row(&self, key: u64, out: &mut [f32]) {
        match self.init {
            RowInit::Constant(c) => out.fill(c),
            RowInit::Normal { std, seed } => {
                let salt = mix64(seed ^ fnv1a64(self.name.as_bytes()));
                for (j, x) in out.iter_mut().enumerate() {
                    let h = mix64(salt ^ mix64(key.wrapping_mul(4099).wrapping_add(j as u64)));
                    *x = std * hashed_normal(h) as f32;
                }
            }
        }
    }

    /// The whole table as the single-process model's parameter `[rows, dim]` (small tables
    /// only: this allocates every row).
    pub fn dense_init(&self) -> HostTensor {
        let mut data = vec![0.0f32; self.rows as usize * self.dim];
        for (k, row) in data.chunks_mut(self.dim.max(1)).enumerate() {
            self.init_row(k as u64, row);
        }
        HostTensor::f32(vec![self.rows as usize, self.dim], data)
    }
}

#[derive(Debug, Clone)]
struct Row {
    values: Vec<f32>,
    state: Vec<f32>,
    /// Updates applied (the row's frequency, for eviction; Adam's step).
    step: u64,
}

/// A server's rows of one table.
#[derive(Debug, Clone)]
pub struct Table {
    pub spec: TableSpec,
    optim: SparseOptim,
    rows: HashMap<u64, Row>,
}

impl Table {
    pub fn new(spec: TableSpec, optim: SparseOptim) -> Table {
        Table {
            spec,
            optim,
            rows: HashMap::new(),
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn new_row(&self, key: u64) -> Row {
        let mut values = vec![0.0; self.spec.dim];
        self.spec.init_row(key, &mut values);
        Row {
            values,
            state: self.optim.init_state(self.spec.dim),
            step: 0,
        }
    }

    /// Appends the rows of `keys` to `out`; a missing row is created when `create` (training)
    /// or read as its initial value without being stored (evaluation).
    pub fn pull(&mut self, keys: &[u64], create: bool, out: &mut Vec<f32>) {
        for &k in keys {
            if let Some(r) = self.rows.get(&k) {
                out.extend_from_slice(&r.values);
            } else if create {
                let r = self.new_row(k);
                out.extend_from_slice(&r.values);
                self.rows.insert(k, r);
            } else {
                let start = out.len();
                out.resize(start + self.spec.dim, 0.0);
                self.spec.init_row(k, &mut out[start..]);
            }
        }
    }

    /// Applies one gradient row per key (`grads` is `[keys.len(), dim]`).
    pub fn push(&mut self, keys: &[u64], grads: &[f32]) {
        let dim = self.spec.dim;
        for (i, &k) in keys.iter().enumerate() {
            if !self.rows.contains_key(&k) {
                let r = self.new_row(k);
                self.rows.insert(k, r);
            }
            if let Some(r) = self.rows.get_mut(&k) {
                let g = &grads[i * dim..(i + 1) * dim];
                self.optim
                    .apply(&mut r.values, &mut r.state, &mut r.step, g);
            }
        }
    }

    /// Drops rows updated fewer than `min_updates` times; returns how many.
    pub fn evict_below(&mut self, min_updates: u64) -> usize {
        let before = self.rows.len();
        self.rows.retain(|_, r| r.step >= min_updates);
        before - self.rows.len()
    }

    /// The rows as tensors (sorted by key): `keys` i64 `[n]`, `values` `[n, dim]`, `state`
    /// `[n, state_len]`, `steps` i64 `[n]`.
    pub fn to_tensors(&self) -> [HostTensor; 4] {
        let mut keys: Vec<u64> = self.rows.keys().copied().collect();
        keys.sort_unstable();
        let (dim, sl) = (self.spec.dim, self.optim.state_len(self.spec.dim));
        let (mut values, mut state, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        for k in &keys {
            let r = &self.rows[k];
            values.extend_from_slice(&r.values);
            state.extend_from_slice(&r.state);
            steps.push(r.step as i64);
        }
        let n = keys.len();
        [
            HostTensor::i64(vec![n], keys.iter().map(|&k| k as i64).collect()),
            HostTensor::f32(vec![n, dim], values),
            HostTensor::f32(vec![n, sl], state),
            HostTensor::i64(vec![n], steps),
        ]
    }

    /// Adds the rows of [`Table::to_tensors`] output whose key `keep` accepts.
    pub fn load_tensors(
        &mut self,
        [keys, values, state, steps]: [&HostTensor; 4],
        keep: impl Fn(u64) -> bool,
    ) -> Result<usize, String> {
        let (dim, sl) = (self.spec.dim, self.optim.state_len(self.spec.dim));
        let keys = keys.as_i64().ok_or("keys are not i64")?;
        let steps = steps.as_i64().ok_or("steps are not i64")?;
        let values = values.as_f32().ok_or("values are not f32")?;
        let state = state.as_f32().ok_or("optimizer state is not f32")?;
        let n = keys.len();
        if values.len() != n * dim || state.len() != n * sl || steps.len() != n {
            return Err(format!(
                "{n} keys but {} values (width {dim}), {} state floats (width {sl}; was the \
                 table saved with another optimizer?), {} steps",
                values.len(),
                state.len(),
                steps.len()
            ));
        }
        let mut loaded = 0;
        for i in 0..n {
            let k = keys[i] as u64;
            if !keep(k) {
                continue;
            }
            self.rows.insert(
                k,
                Row {
                    values: values[i * dim..(i + 1) * dim].to_vec(),
                    state: state[i * sl..(i + 1) * sl].to_vec(),
                    step: steps[i] as u64,
                },
            );
            loaded += 1;
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            name: "emb.weight".into(),
            dim: 3,
            rows: 100,
            init: RowInit::Normal { std: 0.1, seed: 5 },
        }
    }

    #[test]
    fn pull_creates_rows_from_their_initializer_and_push_updates_only_them() {
        let mut t = Table::new(spec(), SparseOptim::Sgd { lr: 1.0 });
        let mut out = Vec::new();
        t.pull(&[7, 9], false, &mut out);
        assert!(t.is_empty(), "an evaluation pull stores nothing");
        let dense = spec().dense_init();
        assert_eq!(&out[..3], &dense.as_f32().unwrap()[21..24]);
        out.clear();
        t.pull(&[7, 9], true, &mut out);
        assert_eq!(t.len(), 2);
        t.push(&[9], &[1.0, 2.0, 3.0]);
        let mut after = Vec::new();
        t.pull(&[7, 9], true, &mut after);
        assert_eq!(&after[..3], &out[..3]);
        assert_eq!(after[3], out[3] - 1.0);
        assert_eq!(t.evict_below(1), 1);
        let tensors = t.to_tensors();
        let mut u = Table::new(spec(), SparseOptim::Sgd { lr: 1.0 });
        let [a, b, c, d] = &tensors;
        assert_eq!(u.load_tensors([a, b, c, d], |_| true), Ok(1));
        let mut again = Vec::new();
        u.pull(&[9], false, &mut again);
        assert_eq!(again, &after[3..]);
    }
}
