//! A worker rank: pulls the rows its batch touches, runs the dense part of the model (the
//! reference interpreter on a step graph with the rows as inputs), all-reduces the dense
//! gradients with the other workers and pushes the rows' gradients.

use super::table::TableSpec;
use super::wire::{self, Request, Response, TableRequest};
use super::{server_of, Mode, PsError, SparseOptim};
use crate::comm::Communicator;
use crate::data::criteo::CtrBatch;
use crate::interp;
use crate::io::weights::Weights;
use crate::tensor::HostTensor;
use oar_ir::dist::ReduceOp;
use oar_ir::Graph;
use std::time::{Duration, Instant};

/// The graphs a worker runs (built by the caller: `passes` differentiates them).
#[derive(Debug, Clone)]
pub struct StepGraph {
    /// Inputs by name: `dense_x`, one rows input per table (`emb_rows`: `[N, ids, dim]`),
    /// `label`. Outputs: loss, prob, the gradient of each of `dense_params`, then of each
    /// rows input.
    pub train: Graph,
    /// The same model forward only: outputs loss, prob.
    pub eval: Graph,
    pub dense_params: Vec<String>,
    /// The rows input of each table, in table order.
    pub rows_inputs: Vec<String>,
}

/// What a worker runs with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub mode: Mode,
    pub servers: Vec<u64>,
    pub workers: Vec<u64>,
    pub tables: Vec<TableSpec>,
    /// The optimizer of the dense parameters (applied after the all-reduce).
    pub dense_optim: SparseOptim,
}

/// Talks to the servers: one request to every server per call (servers count rounds).
pub struct PsClient<'a> {
    comm: &'a dyn Communicator,
    servers: Vec<u64>,
    dims: Vec<usize>,
    /// Rows pulled and pushed, and the time spent in requests.
    pub pulled: u64,
    pub pushed: u64,
    pub wait: Duration,
}

/// Per table: unique keys and, for pushes, their gradients `[keys, dim]`.
pub type TableRows = Vec<(Vec<u64>, Vec<f32>)>;

impl<'a> PsClient<'a> {
    pub fn new(comm: &'a dyn Communicator, servers: Vec<u64>, dims: Vec<usize>) -> PsClient<'a> {
        PsClient {
            comm,
            servers,
            dims,
            pulled: 0,
            pushed: 0,
            wait: Duration::ZERO,
        }
    }

    /// Pushes `push` (per table) and pulls the rows of `pull` (per table, unique keys), in one
    /// request to every server; returns the pulled rows per table in `pull` order.
    pub fn request(
        &mut self,
        pull: &[Vec<u64>],
        push: Option<&TableRows>,
        create: bool,
        flags: (bool, Option<u64>),
    ) -> Result<Vec<Vec<f32>>, PsError> {
        let t0 = Instant::now();
        let n = self.servers.len();
        let tables = self.dims.len();
        let mut reqs: Vec<Request> = (0..n)
            .map(|_| Request {
                create,
                stop: flags.0,
                save_step: flags.1,
                tables: vec![TableRequest::default(); tables],
            })
            .collect();
        // Where each pulled key's row comes from: (server, index in that server's list).
        let mut origin: Vec<Vec<(usize, usize)>> = Vec::with_capacity(tables);
        for (t, keys) in pull.iter().enumerate() {
            let mut o = Vec::with_capacity(keys.len());
            for &k in keys {
                let s = server_of(k, n as u64) as usize;
                o.push((s, reqs[s].tables[t].pull.len()));
                reqs[s].tables[t].pull.push(k);
            }
            origin.push(o);
            self.pulled += keys.len() as u64;
        }
        if let Some(push) = push {
            for (t, (keys, grads)) in push.iter().enumerate() {
                let dim = self.dims[t];
                for (i, &k) in keys.iter().enumerate() {
                    let tr = &mut reqs[server_of(k, n as u64) as usize].tables[t];
                    tr.push_keys.push(k);
                    tr.push_grads
                        .extend_from_slice(&grads[i * dim..(i + 1) * dim]);
                }
                self.pushed += keys.len() as u64;
            }
        }
        for (s, r) in self.servers.iter().zip(&reqs) {
            wire::send(self.comm, *s, &r.encode())?;
        }
        let mut replies = Vec::with_capacity(n);
        for &s in &self.servers {
            let r = Response::decode(&wire::recv(self.comm, s)?, s)?;
            if r.rows.len() != tables {
                return Err(PsError::Wire {
                    rank: s,
                    message: format!("{} tables in the reply, expected {tables}", r.rows.len()),
                });
            }
            replies.push(r);
        }
        let mut out = Vec::with_capacity(tables);
        for (t, o) in origin.iter().enumerate() {
            let dim = self.dims[t];
            let mut rows = Vec::with_capacity(o.len() * dim);
            for &(s, i) in o {
                let src = replies[s].rows[t]
                    .get(i * dim..(i + 1) * dim)
                    .ok_or_else(|| PsError::Wire {
                        rank: self.servers[s],
                        message: format!("reply too short for row {i} of table {t}"),
                    })?;
                rows.extend_from_slice(src);
            }
            out.push(rows);
        }
        self.wait += t0.elapsed();
        Ok(out)
    }
}

/// A batch's ids per table: the unique keys and, for every position, its key's index.
struct Lookup {
    unique: Vec<u64>,
    slot: Vec<usize>,
}

fn lookup(batch: &CtrBatch, rows: u64) -> Lookup {
    let ids: Vec<u64> = batch.keys.iter().map(|k| k % rows.max(1)).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    let slot = ids
        .iter()
        .map(|k| unique.binary_search(k).unwrap_or(0))
        .collect();
    Lookup { unique, slot }
}

/// The model inputs of a rows-form graph, by input name.
fn rows_inputs(
    g: &Graph,
    batch: &CtrBatch,
    rows_inputs: &[String],
    gathered: &[HostTensor],
) -> Result<Vec<HostTensor>, PsError> {
    let b = batch.len();
    let dense = batch.dense.len() / b.max(1);
    g.inputs()
        .iter()
        .map(|&id| {
            let name = &g.node(id).name;
            if name == "dense_x" {
                Ok(HostTensor::f32(vec![b, dense], batch.dense.clone()))
            } else if name == "label" {
                Ok(HostTensor::f32(vec![b, 1], batch.labels.clone()))
            } else if let Some(t) = rows_inputs.iter().position(|r| r == name) {
                Ok(gathered[t].clone())
            } else {
                Err(PsError::Config(format!(
                    "the step graph has an input `{name}`; expected dense_x, label and {}",
                    rows_inputs.join(", ")
                )))
            }
        })
        .collect()
}

/// One worker's training state.
pub struct Worker<'a> {
    pub client: PsClient<'a>,
    comm: &'a dyn Communicator,
    cfg: WorkerConfig,
    graphs: StepGraph,
    /// Dense parameters (replicated on every worker).
    pub weights: Weights,
    dense_state: Vec<(Vec<f32>, u64)>,
    /// Async mode: the previous step's push, sent with the next pull.
    pending: Option<TableRows>,
    pub steps: u64,
    /// Time in the step graph.
    pub compute: Duration,
}

impl<'a> Worker<'a> {
    /// A worker with the dense parameters `weights` (the same on every worker).
    pub fn new(
        comm: &'a dyn Communicator,
        cfg: WorkerConfig,
        graphs: StepGraph,
        weights: Weights,
    ) -> Result<Worker<'a>, PsError> {
        if graphs.rows_inputs.len() != cfg.tables.len() {
            return Err(PsError::Config(format!(
                "{} rows inputs for {} tables",
                graphs.rows_inputs.len(),
                cfg.tables.len()
            )));
        }
        let mut dense_state = Vec::new();
        for p in &graphs.dense_params {
            let w = weights
                .get(p)
                .ok_or_else(|| PsError::Config(format!("no initial value for `{p}`")))?;
            dense_state.push((cfg.dense_optim.init_state(w.numel()), 0));
        }
        let dims = cfg.tables.iter().map(|t| t.dim).collect();
        Ok(Worker {
            client: PsClient::new(comm, cfg.servers.clone(), dims),
            comm,
            cfg,
            graphs,
            weights,
            dense_state,
            pending: None,
            steps: 0,
            compute: Duration::ZERO,
        })
    }

    fn lookups(&self, batch: &CtrBatch) -> Vec<Lookup> {
        self.cfg
            .tables
            .iter()
            .map(|t| lookup(batch, t.rows))
            .collect()
    }

    /// `[n, ids, dim]` per table from the pulled unique rows.
    fn gather(&self, batch: &CtrBatch, lk: &[Lookup], pulled: &[Vec<f32>]) -> Vec<HostTensor> {
        let b = batch.len();
        let per = batch.keys.len() / b.max(1);
        self.cfg
            .tables
            .iter()
            .zip(lk.iter().zip(pulled))
            .map(|(t, (l, rows))| {
                let mut data = Vec::with_capacity(l.slot.len() * t.dim);
                for &s in &l.slot {
                    data.extend_from_slice(&rows[s * t.dim..(s + 1) * t.dim]);
                }
                HostTensor::f32(vec![b, per, t.dim], data)
            })
            .collect()
    }

    /// One training step on this worker's part of the global batch; returns the loss over
    /// the global batch (the mean of the workers' losses).
    pub fn step(&mut self, batch: &CtrBatch) -> Result<f32, PsError> {
        let lk = self.lookups(batch);
        let keys: Vec<Vec<u64>> = lk.iter().map(|l| l.unique.clone()).collect();
        let pending = self.pending.take();
        let pulled = self
            .client
            .request(&keys, pending.as_ref(), true, (false, None))?;
        let inputs = rows_inputs(
            &self.graphs.train,
            batch,
            &self.graphs.rows_inputs,
            &self.gather(batch, &lk, &pulled),
        )?;
        let t0 = Instant::now();
        let out = interp::run(&self.graphs.train, &inputs, &self.weights)
            .map_err(|e| PsError::Step(e.to_string()))?;
        self.compute += t0.elapsed();
        let nd = self.graphs.dense_params.len();
        if out.len() != 2 + nd + self.cfg.tables.len() {
            return Err(PsError::Step(format!(
                "the step graph has {} outputs, expected loss, prob, {nd} dense gradients and {} \
                 row gradients",
                out.len(),
                self.cfg.tables.len()
            )));
        }
        let f = |t: &HostTensor| -> Result<Vec<f32>, PsError> {
            t.as_f32()
                .map(<[f32]>::to_vec)
                .ok_or_else(|| PsError::Step("a gradient is not f32".into()))
        };
        // One all-reduce for the loss and every dense gradient.
        let mut flat = f(&out[0])?;
        for g in &out[2..2 + nd] {
            flat.extend(f(g)?);
        }
        let w = self.cfg.workers.len() as f32;
        if self.cfg.workers.len() > 1 {
            self.comm
                .all_reduce(&self.cfg.workers, ReduceOp::Sum, &mut flat)?;
        }
        let loss = flat[0] / w;
        let mut at = 1;
        for (k, p) in self.graphs.dense_params.iter().enumerate() {
            let Some(t) = self.weights.get_mut(p) else {
                continue;
            };
            let n = t.numel();
            let g: Vec<f32> = flat[at..at + n].iter().map(|x| x / w).collect();
            at += n;
            if let crate::tensor::TensorData::F32(v) = &mut t.data {
                let (state, step) = &mut self.dense_state[k];
                self.cfg.dense_optim.apply(v, state, step, &g);
            }
        }
        // Row gradients: every position's gradient added into its key's row, scaled to this
        // worker's share of the global mean.
        let mut push: TableRows = Vec::with_capacity(self.cfg.tables.len());
        for (t, (spec, l)) in self.cfg.tables.iter().zip(&lk).enumerate() {
            let g = f(&out[2 + nd + t])?;
            let dim = spec.dim;
            let mut acc = vec![0.0f32; l.unique.len() * dim];
            for (pos, &s) in l.slot.iter().enumerate() {
                for j in 0..dim {
                    acc[s * dim + j] += g[pos * dim + j];
                }
            }
            for x in &mut acc {
                *x /= w;
            }
            push.push((l.unique.clone(), acc));
        }
        match self.cfg.mode {
            Mode::Sync => {
                let none: Vec<Vec<u64>> = vec![Vec::new(); self.cfg.tables.len()];
                self.client
                    .request(&none, Some(&push), true, (false, None))?;
            }
            Mode::Async => self.pending = Some(push),
        }
        self.steps += 1;
        Ok(loss)
    }

    /// Predicted probabilities and labels over `batches` (every worker evaluates all of
    /// them, so the servers see the same number of requests from each).
    pub fn evaluate(&mut self, batches: &[CtrBatch]) -> Result<(Vec<f32>, Vec<f32>), PsError> {
        let (mut probs, mut labels) = (Vec::new(), Vec::new());
        for b in batches {
            let lk = self.lookups(b);
            let keys: Vec<Vec<u64>> = lk.iter().map(|l| l.unique.clone()).collect();
            let pulled = self.client.request(&keys, None, false, (false, None))?;
            let inputs = rows_inputs(
                &self.graphs.eval,
                b,
                &self.graphs.rows_inputs,
                &self.gather(b, &lk, &pulled),
            )?;
            let out = interp::run(&self.graphs.eval, &inputs, &self.weights)
                .map_err(|e| PsError::Step(e.to_string()))?;
            let p = out
                .get(1)
                .and_then(HostTensor::as_f32)
                .ok_or_else(|| PsError::Step("the eval graph's output 1 is not f32".into()))?;
            probs.extend_from_slice(p);
            labels.extend_from_slice(&b.labels);
        }
        Ok((probs, labels))
    }

    /// Sends the last pending push (async), asks for a save of the tables as checkpoint
    /// `save` if given, and stops the servers' loop for this worker.
    pub fn finish(mut self, save: Option<u64>) -> Result<Weights, PsError> {
        let none: Vec<Vec<u64>> = vec![Vec::new(); self.cfg.tables.len()];
        if let Some(p) = self.pending.take() {
            self.client.request(&none, Some(&p), true, (false, None))?;
        }
        self.client.request(&none, None, false, (true, save))?;
        Ok(self.weights)
    }
}

/// Batches of this worker: its contiguous share of each global batch.
pub trait CtrData {
    /// Worker `w` of `n`'s part of a global batch (equal parts; the global batch size must be
    /// a multiple of `n`).
    fn part(&self, w: usize, n: usize) -> CtrBatch;
}

impl CtrData for CtrBatch {
    fn part(&self, w: usize, n: usize) -> CtrBatch {
        let per = self.len() / n.max(1);
        self.slice(w * per..(w + 1) * per)
    }
}
