//! The placement problem on an abstract layer chain: per layer and device kind a training
//! time per sample, the bytes per sample that cross the cut after each layer, the dense
//! parameters each layer all-reduces and the sparse table it stores; per kind a price, an
//! availability and its links. A stage (consecutive layers on one kind) with `r` replicas
//! delivers `X(r)` samples/s; a pipeline delivers the least of its stages' `X`.
//!
//! Stage throughput (each replica runs batches of `b` samples):
//!
//! ```text
//! T      = Σ_layers t[l][k] + cut_in/(β·e) + cut_out/(β·e) + (α_in + α_out)/b   per sample
//! X(r)   = r·b / (b·T + sync(r))        sync = all-reduce of the stage's dense gradients
//! eff(r) = b·T / (b·T + sync(r))        the parallel efficiency the report prints
//! ```
//!
//! `β`, `α`: the cluster's network between nodes (stages on different kinds are on
//! different nodes), `e` = `COMM_EFFICIENCY`. A cut costs its bytes once: activations go
//! forward and their gradients come back on the two directions of a full-duplex link.
//! `sync(r)` is the α-β all-reduce of `comm_cost` over the kind's intra-node link when the
//! replicas fit in one node, else over the network. Sparse tables are not all-reduced (each
//! replica pushes the rows it touched to the table's shard) but must fit: a stage storing
//! `S` bytes of tables needs at least `⌈S / device memory⌉` replicas (tables are sharded by
//! key), and each replica must hold the stage's dense parameters.

use crate::comm_cost::{all_reduce, COMM_EFFICIENCY};
use oar_ir::cluster::Link;
use oar_ir::dist::DeviceKind;
use serde::Serialize;

/// One device kind a layer can run on (a node group of the cluster).
#[derive(Debug, Clone, Serialize)]
pub struct Kind {
    /// The node group's name.
    pub name: String,
    pub device_kind: DeviceKind,
    /// The device's product name.
    pub model: String,
    /// USD per device per hour.
    pub price_per_hour: f64,
    /// Devices of this kind the placement may use (all stages on it together).
    pub available: u32,
    /// Device memory, bytes.
    pub memory_bytes: f64,
    pub devices_per_node: u32,
    /// The link between devices of one node (replica all-reduce inside a node).
    pub intra_node: Link,
}

/// One layer of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    /// Training seconds per sample on one device of each kind (forward and backward).
    pub seconds_per_sample: Vec<f64>,
    /// Dense parameter bytes (replicated per replica, gradients all-reduced).
    pub dense_param_bytes: f64,
    /// Sparse table bytes with optimizer state (sharded across replicas).
    pub sparse_table_bytes: f64,
    /// Bytes per sample of the values computed at or before this layer and used after it.
    pub cut_bytes_after: f64,
    /// Whether the layer holds sparse embedding tables (priced as memory-bound).
    pub sparse: bool,
}

/// A chain of layers, the kinds they may run on and the job's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub model: String,
    pub cluster: String,
    pub layers: Vec<Layer>,
    pub kinds: Vec<Kind>,
    /// The network between nodes.
    pub network: Link,
    /// Samples per batch on one replica.
    pub replica_batch: u64,
    /// Samples in one epoch (for the cost per epoch).
    pub epoch_samples: f64,
    /// Required samples/s.
    pub target: f64,
}

/// One stage of a placement: layers `first..end` on `kind` with `replicas` devices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stage {
    pub first: usize,
    pub end: usize,
    pub kind: usize,
    pub replicas: u32,
    /// Samples/s this stage delivers.
    pub throughput: f64,
    /// Parallel efficiency of its replicas (1 = no synchronisation cost).
    pub efficiency: f64,
}

/// A complete placement and what it costs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    pub stages: Vec<Stage>,
    /// Samples/s of the pipeline: its slowest stage.
    pub throughput: f64,
    /// USD per hour of all replicas.
    pub price_per_hour: f64,
    /// USD to train one epoch at `throughput`.
    pub cost_per_epoch: f64,
    /// Hours per epoch.
    pub hours_per_epoch: f64,
}

impl Placement {
    /// Device kind of every layer, in chain order.
    pub fn layer_kinds(&self) -> Vec<usize> {
        self.stages
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.kind, s.end - s.first))
            .collect()
    }
}

impl Problem {
    /// Seconds per sample of one replica of layers `first..end` on `kind`, including the
    /// transfers across the stage's two cuts.
    pub fn stage_seconds_per_sample(&self, first: usize, end: usize, kind: usize) -> f64 {
        let b = self.replica_batch.max(1) as f64;
        let bw = self.network.bandwidth() * COMM_EFFICIENCY;
        let compute: f64 = self.layers[first..end]
            .iter()
            .map(|l| l.seconds_per_sample[kind])
            .sum();
        let mut comm = 0.0;
        if first > 0 {
            comm += self.layers[first - 1].cut_bytes_after / bw + self.network.latency() / b;
        }
        if end < self.layers.len() {
            comm += self.layers[end - 1].cut_bytes_after / bw + self.network.latency() / b;
        }
        compute + comm
    }

    /// The fewest replicas a stage needs to hold its tables, or `None` when one device
    /// cannot hold its dense parameters (or the tables need more devices than exist).
    pub fn min_replicas(&self, first: usize, end: usize, kind: usize) -> Option<u32> {
        let k = &self.kinds[kind];
        let dense: f64 = self.layers[first..end]
            .iter()
            .map(|l| l.dense_param_bytes)
            .sum();
        let sparse: f64 = self.layers[first..end]
            .iter()
            .map(|l| l.sparse_table_bytes)
            .sum();
        // Dense parameters, their gradients and optimizer state stay replicated (x4 for
        // Adam: weights, gradients, two moments); the tables fill what is left.
        let free = k.memory_bytes - 4.0 * dense;
        if free <= 0.0 {
            return None;
        }
        let r = (sparse / free).ceil().max(1.0);
        (r <= k.available as f64).then_some(r as u32)
    }

    /// Samples/s of layers `first..end` on `replicas` devices of `kind` (0 if they do not
    /// fit), and the parallel efficiency.
    pub fn stage_throughput(
        &self,
        first: usize,
        end: usize,
        kind: usize,
        replicas: u32,
    ) -> (f64, f64) {
        let Some(min) = self.min_replicas(first, end, kind) else {
            return (0.0, 0.0);
        };
        if replicas < min || replicas == 0 || replicas > self.kinds[kind].available {
            return (0.0, 0.0);
        }
        let k = &self.kinds[kind];
        let b = self.replica_batch.max(1) as f64;
        let work = b * self.stage_seconds_per_sample(first, end, kind);
        let dense: f64 = self.layers[first..end]
            .iter()
            .map(|l| l.dense_param_bytes)
            .sum();
        let link = if replicas <= k.devices_per_node {
            &k.intra_node
        } else {
            &self.network
        };
        let sync = all_reduce(replicas as u64, dense, link, COMM_EFFICIENCY);
        if work + sync <= 0.0 {
            return (0.0, 0.0);
        }
        (replicas as f64 * b / (work + sync), work / (work + sync))
    }

    /// A placement from its stages (layer ranges, kinds and replicas), or `None` when it
    /// is not one: stages must cover the chain in order, neighbours on different kinds,
    /// replicas within each kind's availability, and every stage must fit.
    pub fn place(&self, stages: &[(usize, usize, usize, u32)]) -> Option<Placement> {
        let mut used = vec![0u64; self.kinds.len()];
        let mut next = 0;
        let mut out = Vec::with_capacity(stages.len());
        for (i, &(first, end, kind, replicas)) in stages.iter().enumerate() {
            if first != next || end <= first || kind >= self.kinds.len() {
                return None;
            }
            if i > 0 && stages[i - 1].2 == kind {
                return None;
            }
            used[kind] += replicas as u64;
            let (throughput, efficiency) = self.stage_throughput(first, end, kind, replicas);
            if throughput <= 0.0 {
                return None;
            }
            out.push(Stage {
                first,
                end,
                kind,
                replicas,
                throughput,
                efficiency,
            });
            next = end;
        }
        if next != self.layers.len() || self.layers.is_empty() {
            return None;
        }
        if used
            .iter()
            .zip(&self.kinds)
            .any(|(&u, k)| u > k.available as u64)
        {
            return None;
        }
        let throughput = out
            .iter()
            .map(|s| s.throughput)
            .fold(f64::INFINITY, f64::min);
        let price_per_hour: f64 = out
            .iter()
            .map(|s| s.replicas as f64 * self.kinds[s.kind].price_per_hour)
            .sum();
        let hours_per_epoch = self.epoch_samples / throughput / 3600.0;
        Some(Placement {
            stages: out,
            throughput,
            price_per_hour,
            cost_per_epoch: price_per_hour * hours_per_epoch,
            hours_per_epoch,
        })
    }

    /// Whether a placement meets the throughput target.
    pub fn meets_target(&self, p: &Placement) -> bool {
        p.throughput >= self.target
    }

    /// The stages of a per-layer kind assignment (consecutive equal kinds merged), without
    /// replicas.
    pub fn stages_of(kinds: &[usize]) -> Vec<(usize, usize, usize)> {
        let mut out: Vec<(usize, usize, usize)> = Vec::new();
        for (l, &k) in kinds.iter().enumerate() {
            match out.last_mut() {
                Some(last) if last.2 == k => last.1 = l + 1,
                _ => out.push((l, l + 1, k)),
            }
        }
        out
    }
}
