//! The training-step cost model: time and memory of one step of a `ModelSpec` under a
//! `ParallelPlan` on a `Cluster`. Every formula is listed in passes/README.md with its source.

use super::efficiency::KernelRates;
use super::intra_op::{plan_layer, LayerStrategy, Rates};
use super::scale_effects::{
    choose_all_reduce, contended_link, nodes_spanned, straggler_seconds, AllReduceAlgorithm,
};
use super::spec::{LayerSpec, ModelSpec};
use oar_ir::cluster::{Cluster, Link};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;

/// Activation recomputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    None,
    /// Attention core only (Korthikanti et al. 2022).
    Selective,
    Full,
}

/// Pipeline schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub enum Schedule {
    GPipe,
    OneFOneB,
    /// Interleaved 1F1B with `v` model chunks per device.
    Interleaved(u64),
}

/// Which parallel dimension varies fastest across consecutive ranks (tensor is always
/// innermost, inside a node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// tensor, then data, then pipeline outermost (Megatron's order).
    TpDpPp,
    /// tensor, then pipeline, then data outermost.
    TpPpDp,
}

/// One candidate layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParallelPlan {
    pub dp: u64,
    pub tp: u64,
    pub pp: u64,
    pub micro_batch_size: u64,
    pub micro_batches: u64,
    pub zero_stage: u8,
    pub recompute: Recompute,
    pub sequence_parallel: bool,
    pub schedule: Schedule,
    pub mapping: Mapping,
    /// Layers per pipeline stage, first to last.
    pub stage_layers: Vec<usize>,
}

/// The job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Global batch, sequences per step.
    pub global_batch: u64,
    pub seq: u64,
}

/// Step time broken down, seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepTime {
    pub compute: f64,
    pub recompute: f64,
    pub tensor_parallel_comm: f64,
    pub pipeline_p2p: f64,
    pub data_parallel_comm: f64,
    pub bubble: f64,
    pub optimizer: f64,
    /// The slowest of the job's ranks over the mean (`scale_effects::straggler_seconds`).
    pub straggler: f64,
    /// Exposed gradient communication added by an oversubscribed spine (part of
    /// `data_parallel_comm`).
    pub contention: f64,
    pub total: f64,
}

/// Bytes per device by kind (the most loaded device).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryUse {
    pub parameters: f64,
    pub gradients: f64,
    pub optimizer_states: f64,
    pub activations: f64,
    pub logits: f64,
    pub workspace: f64,
    pub total: f64,
    pub capacity: f64,
}

/// Efficiency and overhead assumptions, documented in passes/README.md.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingCostModel {
    /// Fraction of peak that GEMMs reach on a device without an efficiency table.
    pub gemm_efficiency: f64,
    /// Fraction of a table's kernel efficiency that a training step keeps (launch gaps,
    /// power-limited clocks): calibrated once on Megatron-LM's 18B row.
    pub step_fraction: f64,
    /// Per-device step-time coefficient of variation where the cluster file gives none.
    pub step_time_cv: f64,
    /// Fraction of link bandwidth collectives reach (NCCL bus bandwidth over link rate).
    pub comm_efficiency: f64,
    /// Fraction of the last backward pass that gradient communication can hide behind.
    pub dp_overlap: f64,
    /// Allocator fragmentation margin on activations and buffers.
    pub fragmentation: f64,
    /// Fixed per-device workspace (CUDA context, cuBLAS and NCCL buffers), bytes.
    pub workspace_bytes: f64,
}

impl Default for TrainingCostModel {
    fn default() -> Self {
        TrainingCostModel {
            gemm_efficiency: 0.62,
            step_fraction: 0.85,
            step_time_cv: 0.01,
            comm_efficiency: crate::comm_cost::COMM_EFFICIENCY,
            dp_overlap: 0.8,
            fragmentation: 0.10,
            workspace_bytes: 2.0 * (1u64 << 30) as f64,
        }
    }
}

// The collective models are shared with the graph cost model.
pub use crate::comm_cost::{
    all_reduce, all_to_all, hierarchical_all_reduce, ring_all_reduce, ring_gather, tree_all_reduce,
    Topology,
};

/// (layer, tensor degree, tokens per micro-batch, sequence parallel, micro-batches, node
/// group).
type LayerPlanKey = (LayerSpec, u64, u64, bool, u64, usize);

/// Evaluates plans for one model, job and cluster.
pub struct Evaluator<'a> {
    pub model: &'a ModelSpec,
    pub job: &'a Job,
    pub cluster: &'a Cluster,
    pub cost: TrainingCostModel,
    /// Intra-op plans by (layer, tensor degree, micro-batch size, sequence parallel,
    /// micro-batches): many candidates share them.
    layer_plans: RefCell<HashMap<LayerPlanKey, LayerStrategy>>,
    /// Which link a group spans, and the collective prices on it.
    topology: Topology,
    /// Kernel rates of each node group's device.
    kernels: Vec<KernelRates>,
}

/// The result of evaluating one plan.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub plan: ParallelPlan,
    pub time: StepTime,
    pub memory: MemoryUse,
    pub fits: bool,
    /// Intra-op sharding of a first-stage layer, op by op.
    pub layer_strategy: Vec<String>,
    /// Each layer's intra-op choices with their layouts, in model order (for `annotate`).
    #[serde(skip)]
    pub layer_layouts: Vec<std::sync::Arc<[super::intra_op::OpLayout]>>,
    /// The algorithm of the slowest stage's gradient all-reduce.
    pub dp_all_reduce: AllReduceAlgorithm,
    /// The node group (index into the cluster's) each pipeline stage runs on.
    pub stage_groups: Vec<usize>,
}

const BF16: f64 = 2.0;

impl<'a> Evaluator<'a> {
    /// An evaluator for one model, job and cluster.
    pub fn new(
        model: &'a ModelSpec,
        job: &'a Job,
        cluster: &'a Cluster,
        cost: TrainingCostModel,
    ) -> Self {
        let kernels = cluster
            .node_groups
            .iter()
            .map(|g| KernelRates::of(&g.device, cost.gemm_efficiency, cost.step_fraction))
            .collect();
        Evaluator {
            model,
            job,
            cluster,
            cost,
            layer_plans: RefCell::new(HashMap::new()),
            topology: Topology::of(cluster),
            kernels,
        }
    }

    /// Kernel rates of node group `g`'s device.
    pub fn kernels(&self, g: usize) -> &KernelRates {
        &self.kernels[g.min(self.kernels.len() - 1)]
    }

    /// The node group each pipeline stage runs on: stages are laid out outermost, over the
    /// groups in cluster order, each stage on the group holding its first device.
    pub fn stage_groups(&self, p: &ParallelPlan) -> Vec<usize> {
        let per_stage = match p.mapping {
            Mapping::TpDpPp => p.dp * p.tp,
            // Pipeline inside data parallelism: every group holds every stage (homogeneous
            // clusters only; candidates do not offer this mapping on mixed ones).
            Mapping::TpPpDp => 0,
        };
        let mut bounds = Vec::with_capacity(self.cluster.node_groups.len());
        let mut end = 0;
        for g in &self.cluster.node_groups {
            end += g.nodes as u64 * g.devices_per_node as u64;
            bounds.push(end);
        }
        (0..p.pp)
            .map(|k| {
                let first = k * per_stage;
                bounds.iter().position(|&b| first < b).unwrap_or(0)
            })
            .collect()
    }

    /// The link a group of `size` ranks at `stride` spans: inside one node or across nodes.
    pub fn link(&self, size: u64, stride: u64) -> &Link {
        self.topology.link(size, stride)
    }

    /// All-reduce over a group of `size` ranks at `stride` (see `Topology::group_all_reduce`).
    pub fn group_all_reduce(&self, size: u64, stride: u64, bytes: f64) -> f64 {
        self.topology
            .group_all_reduce(size, stride, bytes, self.cost.comm_efficiency)
    }

    /// Peak dense FLOP/s of one device for training (bf16, else f16, else f32), averaged
    /// over the devices of a mixed cluster.
    pub fn peak(&self) -> f64 {
        let devices = self.cluster.num_devices().max(1) as f64;
        self.cluster
            .node_groups
            .iter()
            .zip(&self.kernels)
            .map(|(g, k)| k.peak * (g.nodes as u64 * g.devices_per_node as u64) as f64)
            .sum::<f64>()
            / devices
    }

    fn strides(&self, p: &ParallelPlan) -> (u64, u64) {
        // (data-parallel stride, pipeline stride)
        match p.mapping {
            Mapping::TpDpPp => (p.tp, p.tp * p.dp),
            Mapping::TpPpDp => (p.tp * p.pp, p.tp),
        }
    }

    /// Layer index ranges of each stage.
    fn stage_ranges(&self, p: &ParallelPlan) -> Vec<std::ops::Range<usize>> {
        let mut start = 0;
        p.stage_layers
            .iter()
            .map(|&n| {
                let r = start..start + n;
                start += n;
                r
            })
            .collect()
    }

    /// Parameters held by stage `k` (tied embeddings live on the first and the last stage).
    pub fn stage_params(&self, p: &ParallelPlan, k: usize, range: &std::ops::Range<usize>) -> f64 {
        let m = self.model;
        let mut params: f64 = m.layers[range.clone()]
            .iter()
            .map(|l| l.params() as f64)
            .sum();
        if k == 0 || k + 1 == p.stage_layers.len() {
            params += m.embedding_params() as f64;
        }
        params
    }

    /// Activation bytes of one layer for one micro-batch (Korthikanti et al. 2022, Table 2).
    pub fn layer_activation_bytes(&self, p: &ParallelPlan, l: &super::spec::LayerSpec) -> f64 {
        self.activation_bytes(
            l,
            p.micro_batch_size,
            p.tp,
            p.recompute,
            p.sequence_parallel,
        )
    }

    fn activation_bytes(
        &self,
        l: &LayerSpec,
        micro_batch: u64,
        tp: u64,
        recompute: Recompute,
        seq_par: bool,
    ) -> f64 {
        let (s, b, h, a, t) = (
            self.job.seq as f64,
            micro_batch as f64,
            l.hidden as f64,
            l.heads as f64,
            tp as f64,
        );
        let sbh = s * b * h;
        let attn = 5.0 * a * s / (h * t);
        match (recompute, seq_par) {
            (Recompute::None, false) => sbh * (10.0 + 24.0 / t + attn),
            (Recompute::None, true) => sbh * (34.0 / t + attn),
            (Recompute::Selective, false) => sbh * (10.0 + 24.0 / t),
            (Recompute::Selective, true) => sbh * 34.0 / t,
            (Recompute::Full, false) => 2.0 * sbh,
            (Recompute::Full, true) => 2.0 * sbh / t,
        }
    }

    /// Time and memory of one training step.
    pub fn evaluate(&self, p: &ParallelPlan) -> Evaluation {
        let m = self.model;
        let c = &self.cost;
        let tokens_mb = p.micro_batch_size * self.job.seq;
        let (dp_stride, pp_stride) = self.strides(p);
        let tp_link = self.link(p.tp, 1);
        let pp_link = self.link(p.pp, pp_stride);
        let ranges = self.stage_ranges(p);
        let groups = self.stage_groups(p);
        let last = ranges.len() - 1;
        let mut worst = StepTime::default();
        let mut layer_strategy = Vec::new();
        let mut layer_layouts = Vec::with_capacity(m.layers.len());
        let micro = p.micro_batches.max(1) as f64;
        // bf16 weight gradients all-reduced once per step, spread over the micro-batches.
        let weight_sync_per_element = all_reduce(p.tp, BF16, tp_link, c.comm_efficiency) / micro;
        // Gradient all-reduces crossing an oversubscribed spine share its links.
        let scale = &self.cluster.scale_effects;
        let per_node = self.topology.devices_per_node;
        let spanned = nodes_spanned(p.dp, dp_stride, per_node);
        let contended = Topology {
            inter_node: contended_link(
                &self.topology.inter_node,
                spanned,
                scale.nodes_per_leaf,
                scale.oversubscription,
            ),
            ..self.topology.clone()
        };
        let mut worst_stage = 0.0f64;
        let mut worst_fill = -1.0f64;
        let mut mem = MemoryUse::default();
        let mut fits = true;
        let mut dp_all_reduce = AllReduceAlgorithm::None;
        let v = match p.schedule {
            Schedule::Interleaved(v) => v,
            _ => 1,
        };
        for (k, range) in ranges.iter().enumerate() {
            let g = groups.get(k).copied().unwrap_or(0);
            let kernels = self.kernels(g);
            let device =
                &self.cluster.node_groups[g.min(self.cluster.node_groups.len() - 1)].device;
            let bw = device.memory_bandwidth();
            // Tensor-parallel groups inside a node use that node group's own links.
            let tp_link = if p.tp <= per_node {
                &self.cluster.node_groups[g.min(self.cluster.node_groups.len() - 1)].intra_node
            } else {
                tp_link
            };
            let rates = Rates {
                kernels,
                bandwidth: bw,
                seq: self.job.seq as f64,
                weight_sync_per_element,
            };
            let layers = &m.layers[range.clone()];
            // Intra-op sharding of each layer, by dynamic programming over its op chain;
            // plans are cached, since candidates and identical layers share them.
            let mut fwd = 0.0;
            let mut per_layer_comm = 0.0;
            for l in layers {
                let key = (
                    l.clone(),
                    p.tp,
                    tokens_mb,
                    p.sequence_parallel,
                    p.micro_batches,
                    g,
                );
                let mut cache = self.layer_plans.borrow_mut();
                let st = cache.entry(key).or_insert_with(|| {
                    plan_layer(
                        l,
                        p.tp,
                        tokens_mb,
                        &rates,
                        tp_link,
                        c.comm_efficiency,
                        p.sequence_parallel,
                    )
                });
                fwd += st.forward_compute;
                // Backward moves the same volume as forward.
                per_layer_comm += 2.0 * st.forward_comm;
                layer_layouts.push(st.layouts.clone());
                if k == 0 && layer_strategy.is_empty() {
                    layer_strategy = st.ops.clone();
                }
            }
            if k == last {
                // The LM head: [tokens, hidden] × [hidden, vocab / tp].
                fwd += kernels.gemm_seconds(tokens_mb, m.vocab / p.tp.max(1), m.embed_hidden);
            }
            // Memory-bound ops (layer norms, softmax, dropout, GELU, residual adds): each
            // stored activation is written and read once forward and twice backward.
            let elementwise: f64 = layers
                .iter()
                .map(|l| self.activation_bytes(l, p.micro_batch_size, p.tp, Recompute::None, false))
                .sum::<f64>()
                / bw;
            fwd += elementwise;
            let bwd = 2.0 * fwd;
            let recompute = match p.recompute {
                Recompute::None => 0.0,
                Recompute::Full => fwd,
                // The attention core: 4·s·h FLOPs per token per layer.
                Recompute::Selective => {
                    layers
                        .iter()
                        .map(|l| {
                            kernels.attention_seconds(
                                4.0 * (tokens_mb * self.job.seq * l.hidden) as f64,
                                self.job.seq,
                                l.hidden / l.heads.max(1),
                            )
                        })
                        .sum::<f64>()
                        / p.tp as f64
                }
            };
            let tp_comm = per_layer_comm
                * if p.recompute == Recompute::Full {
                    1.5
                } else {
                    1.0
                };
            let stage = fwd + bwd + recompute + tp_comm;
            if stage > worst_stage {
                worst_stage = stage;
                worst.compute = fwd + bwd;
                worst.recompute = recompute;
                worst.tensor_parallel_comm = tp_comm;
            }
            // Memory of this stage's devices.
            let params = self.stage_params(p, k, range) / p.tp as f64;
            let dp = p.dp as f64;
            let (pb, gb, ob) = match p.zero_stage {
                0 => (2.0, 2.0, 12.0),
                1 => (2.0, 2.0, 12.0 / dp),
                2 => (2.0, 2.0 / dp, 12.0 / dp),
                _ => (2.0 / dp, 2.0 / dp, 12.0 / dp),
            };
            let in_flight = match p.schedule {
                Schedule::GPipe => p.micro_batches as f64,
                Schedule::OneFOneB => (p.pp - k as u64).min(p.micro_batches) as f64,
                Schedule::Interleaved(v) => {
                    (p.pp - k as u64).min(p.micro_batches) as f64
                        * (1.0 + (p.pp as f64 - 1.0) / (p.pp as f64 * v as f64))
                }
            };
            let act: f64 = layers
                .iter()
                .map(|l| self.layer_activation_bytes(p, l))
                .sum::<f64>()
                * in_flight;
            let logits = if k == last {
                2.0 * 4.0 * tokens_mb as f64 * m.vocab as f64 / p.tp as f64
            } else {
                0.0
            };
            let total = params * (pb + gb + ob)
                + (act + logits) * (1.0 + c.fragmentation)
                + c.workspace_bytes;
            // The stage nearest its device's capacity is the one reported (stages of a mixed
            // cluster have different capacities).
            let capacity = device.memory_bytes() as f64;
            fits &= total <= capacity;
            if total / capacity > worst_fill {
                worst_fill = total / capacity;
                mem = MemoryUse {
                    parameters: params * pb,
                    gradients: params * gb,
                    optimizer_states: params * ob,
                    activations: act,
                    logits,
                    workspace: c.workspace_bytes + (act + logits) * c.fragmentation,
                    total,
                    capacity,
                };
            }
            // Data-parallel gradient synchronisation of this stage, partly hidden behind the
            // last backward pass.
            let grad_bytes = params * BF16;
            let exposed_on = |topo: &Topology| {
                let (algo, mut t) =
                    choose_all_reduce(topo, p.dp, dp_stride, grad_bytes, c.comm_efficiency);
                if p.zero_stage == 3 {
                    let link = topo.link(p.dp, dp_stride);
                    t += 2.0 * ring_gather(p.dp, grad_bytes, link, c.comm_efficiency);
                }
                (algo, (t - c.dp_overlap * bwd).max(0.0))
            };
            let (_, free) = exposed_on(&self.topology);
            let (algo, exposed) = exposed_on(&contended);
            if exposed >= worst.data_parallel_comm {
                worst.data_parallel_comm = exposed;
                worst.contention = exposed - free;
                dp_all_reduce = algo;
            }
            worst.optimizer = worst.optimizer.max(2.0 * params * (pb + gb + ob) / bw);
        }
        let mb_count = p.micro_batches as f64;
        let p2p = if p.pp > 1 {
            // Each tensor-parallel rank sends only its 1/t of the boundary activation to its
            // peer on the next stage (Megatron-LM's scatter/gather optimisation, Narayanan et
            // al. 2021, section 4.1); without sequence parallelism the receiver then
            // all-gathers the full activation over its tensor-parallel link (with it, the
            // activation stays sequence-sharded).
            let full = tokens_mb as f64 * m.embed_hidden as f64 * BF16;
            let send = crate::comm_cost::p2p(full / p.tp as f64, pp_link, c.comm_efficiency);
            let gather = if p.sequence_parallel {
                0.0
            } else {
                ring_gather(p.tp, full, tp_link, c.comm_efficiency)
            };
            2.0 * v as f64 * (send + gather)
        } else {
            0.0
        };
        let per_micro = worst_stage + p2p;
        worst.compute *= mb_count;
        worst.recompute *= mb_count;
        worst.tensor_parallel_comm *= mb_count;
        worst.pipeline_p2p = p2p * mb_count;
        worst.bubble = (p.pp as f64 - 1.0) / v as f64 * per_micro;
        let synchronised =
            mb_count * per_micro + worst.bubble + worst.data_parallel_comm + worst.optimizer;
        // Every rank waits for the slowest at the gradient all-reduce each step.
        let cv = scale.step_time_cv.unwrap_or(c.step_time_cv);
        worst.straggler = straggler_seconds(synchronised, p.dp * p.tp * p.pp, cv);
        worst.total = synchronised + worst.straggler;
        Evaluation {
            plan: p.clone(),
            time: worst,
            memory: mem,
            fits,
            layer_strategy,
            layer_layouts,
            dp_all_reduce,
            stage_groups: groups,
        }
    }
}
