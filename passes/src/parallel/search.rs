//! The planner: enumerates data × tensor × pipeline degrees and their mapping onto nodes,
//! ZeRO stage, micro-batching, recompute, sequence parallelism and pipeline schedule;
//! partitions layers into stages by dynamic programming; rejects plans that do not fit.

use super::spec::ModelSpec;
use super::step_cost::*;
use oar_ir::cluster::Cluster;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Why no plan was produced.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no layout of {model} fits {devices} devices of {capacity_gib:.0} GiB: the leanest plan needs {min_gib:.1} GiB per device{more}")]
    DoesNotFit {
        model: String,
        devices: u64,
        capacity_gib: f64,
        min_gib: f64,
        more: String,
    },
    #[error("no valid layout: {0}")]
    NoCandidate(String),
}

/// Contiguous partition of per-layer costs into `k` stages minimising the slowest stage
/// (dynamic programming over layers). `tail` is extra cost on the last stage (the LM head).
pub fn partition_layers(costs: &[f64], k: usize, tail: f64) -> Option<Vec<usize>> {
    partition_layers_weighted(costs, &vec![1.0; k], tail)
}

/// The same partition for stages of different speeds (a mixed cluster): stage `j` takes
/// `cost / speeds[j]` for its layers, so a slower device kind gets proportionally fewer.
pub fn partition_layers_weighted(costs: &[f64], speeds: &[f64], tail: f64) -> Option<Vec<usize>> {
    let n = costs.len();
    let k = speeds.len();
    if k == 0 || k > n || speeds.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return None;
    }
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + costs[i];
    }
    let seg = |a: usize, b: usize| prefix[b] - prefix[a] + if b == n { tail } else { 0.0 };
    // best[j][i]: minimal max stage cost covering layers 0..i with j stages.
    let mut best = vec![vec![f64::INFINITY; n + 1]; k + 1];
    let mut cut = vec![vec![0usize; n + 1]; k + 1];
    best[0][0] = 0.0;
    for j in 1..=k {
        for i in j..=n {
            for s in (j - 1)..i {
                let v = best[j - 1][s].max(seg(s, i) / speeds[j - 1]);
                if v < best[j][i] {
                    best[j][i] = v;
                    cut[j][i] = s;
                }
            }
        }
    }
    let mut sizes = vec![0; k];
    let mut i = n;
    for j in (1..=k).rev() {
        let s = cut[j][i];
        sizes[j - 1] = i - s;
        i = s;
    }
    Some(sizes)
}

fn divisors(n: u64) -> Vec<u64> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}

/// Constraints a user may put on the search (`oar plan --dp 8 --tp 8 --recompute full`).
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    pub dp: Option<u64>,
    pub tp: Option<u64>,
    pub pp: Option<u64>,
    pub zero_stage: Option<u8>,
    pub recompute: Option<Recompute>,
    pub sequence_parallel: Option<bool>,
    pub micro_batch_size: Option<u64>,
    /// Pipeline schedule (weak scaling keeps the chosen one).
    pub schedule: Option<Schedule>,
    /// Rank order (weak scaling keeps the chosen one).
    pub mapping: Option<Mapping>,
}

impl Constraints {
    fn admits(&self, p: &ParallelPlan) -> bool {
        self.dp.is_none_or(|v| v == p.dp)
            && self.tp.is_none_or(|v| v == p.tp)
            && self.pp.is_none_or(|v| v == p.pp)
            && self.zero_stage.is_none_or(|v| v == p.zero_stage)
            && self.recompute.is_none_or(|v| v == p.recompute)
            && self
                .sequence_parallel
                .is_none_or(|v| v == p.sequence_parallel)
            && self
                .micro_batch_size
                .is_none_or(|v| v == p.micro_batch_size)
            && self.schedule.is_none_or(|v| v == p.schedule)
            && self.mapping.is_none_or(|v| v == p.mapping)
    }
}

/// Devices of each node group, in cluster order.
fn group_devices(cluster: &Cluster) -> Vec<u64> {
    cluster
        .node_groups
        .iter()
        .map(|g| g.nodes as u64 * g.devices_per_node as u64)
        .collect()
}

/// Relative speed of each node group's device on this model's layers: peak times the
/// efficiency of a full-width GEMM of one sequence.
fn group_speeds(model: &ModelSpec, job: &Job, cluster: &Cluster) -> Vec<f64> {
    let cost = TrainingCostModel::default();
    let ev = Evaluator::new(model, job, cluster, cost);
    let h = model
        .layers
        .first()
        .map_or(model.embed_hidden, |l| l.hidden);
    (0..cluster.node_groups.len())
        .map(|g| {
            let k = ev.kernels(g);
            k.peak * k.gemm_efficiency(job.seq, h, h)
        })
        .collect()
}

/// Every candidate layout for `devices` devices.
pub fn candidates(model: &ModelSpec, job: &Job, cluster: &Cluster) -> Vec<ParallelPlan> {
    candidates_with(model, job, cluster, None)
}

/// Every candidate layout, with interleaved 1F1B of `interleave` chunks offered besides the
/// free search's 2 (a published layout that fixes the depth, e.g. Megatron's 3).
pub fn candidates_with(
    model: &ModelSpec,
    job: &Job,
    cluster: &Cluster,
    interleave: Option<u64>,
) -> Vec<ParallelPlan> {
    let devices = cluster.num_devices();
    let per_node = cluster.node_groups[0].devices_per_node as u64;
    let layers = model.layers.len();
    let costs: Vec<f64> = model
        .layers
        .iter()
        .map(|l| l.forward_flops(job.seq, job.seq))
        .collect();
    let tail = model.head_flops(job.seq);
    // A mixed cluster runs whole pipeline stages on each device kind: a stage (dp × tp
    // devices) must not straddle two node groups, and layers are split by group speed.
    let mixed = cluster.node_groups.len() > 1;
    let sizes = group_devices(cluster);
    let speeds = group_speeds(model, job, cluster);
    let mut partitions: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
    let mut out = Vec::new();
    for tp in divisors(per_node.min(devices)) {
        if !devices.is_multiple_of(tp)
            || model
                .layers
                .iter()
                .any(|l| l.heads % tp != 0 || l.hidden % tp != 0)
        {
            continue;
        }
        for pp in divisors(devices / tp)
            .into_iter()
            .filter(|&pp| pp as usize <= layers)
        {
            let dp = devices / (tp * pp);
            if !job.global_batch.is_multiple_of(dp)
                || (mixed && sizes.iter().any(|s| !s.is_multiple_of(dp * tp)))
            {
                continue;
            }
            let stage_layers = partitions
                .entry((pp, if mixed { dp * tp } else { 0 }))
                .or_insert_with(|| {
                    // Stage k sits on the group holding device k·dp·tp.
                    let stage_speeds: Vec<f64> = (0..pp)
                        .map(|k| {
                            let first = k * dp * tp;
                            let mut end = 0;
                            let g = sizes
                                .iter()
                                .position(|s| {
                                    end += s;
                                    first < end
                                })
                                .unwrap_or(0);
                            speeds.get(g).copied().unwrap_or(1.0)
                        })
                        .collect();
                    partition_layers_weighted(&costs, &stage_speeds, tail).unwrap_or_default()
                })
                .clone();
            if stage_layers.is_empty() {
                continue;
            }
            let per_replica = job.global_batch / dp;
            for mbs in [1u64, 2, 4, 8]
                .into_iter()
                .filter(|m| per_replica.is_multiple_of(*m))
            {
                let micro_batches = per_replica / mbs;
                let zeros: &[u8] = if dp > 1 { &[0, 1, 2, 3] } else { &[0] };
                let sps: &[bool] = if tp > 1 { &[false, true] } else { &[false] };
                let mut schedules = vec![Schedule::OneFOneB];
                if pp > 1 {
                    schedules.push(Schedule::GPipe);
                    // Interleaving needs v chunks of at least one layer per stage and
                    // whole rounds of pp micro-batches (Narayanan et al. 2021, section 2.2).
                    for v in std::iter::once(2).chain(interleave.filter(|&v| v > 2)) {
                        if layers as u64 >= v * pp && micro_batches.is_multiple_of(pp) {
                            schedules.push(Schedule::Interleaved(v));
                        }
                    }
                }
                let mappings: &[Mapping] = if dp > 1 && pp > 1 && !mixed {
                    &[Mapping::TpDpPp, Mapping::TpPpDp]
                } else {
                    &[Mapping::TpDpPp]
                };
                for &zero_stage in zeros {
                    for recompute in [Recompute::None, Recompute::Selective, Recompute::Full] {
                        for &sequence_parallel in sps {
                            for &schedule in &schedules {
                                for &mapping in mappings {
                                    out.push(ParallelPlan {
                                        dp,
                                        tp,
                                        pp,
                                        micro_batch_size: mbs,
                                        micro_batches,
                                        zero_stage,
                                        recompute,
                                        sequence_parallel,
                                        schedule,
                                        mapping,
                                        stage_layers: stage_layers.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// One alternative and why it lost.
#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    pub evaluation: Evaluation,
    pub why: String,
}

/// The planner's answer.
#[derive(Debug, Clone, Serialize)]
pub struct PlanOutcome {
    pub best: Evaluation,
    pub alternatives: Vec<Alternative>,
    pub considered: usize,
    pub fitting: usize,
    pub planning_seconds: f64,
}

/// Why `alt` lost to `best`: the step-time component that grew most, or its memory.
pub fn why(best: &Evaluation, alt: &Evaluation) -> String {
    if !alt.fits {
        return format!(
            "does not fit: needs {:.1} GiB of {:.0} GiB",
            alt.memory.total / (1u64 << 30) as f64,
            alt.memory.capacity / (1u64 << 30) as f64
        );
    }
    let (b, a) = (&best.time, &alt.time);
    let parts = [
        ("compute", a.compute - b.compute),
        ("recompute", a.recompute - b.recompute),
        (
            "tensor-parallel communication",
            a.tensor_parallel_comm - b.tensor_parallel_comm,
        ),
        ("pipeline send/recv", a.pipeline_p2p - b.pipeline_p2p),
        (
            "exposed gradient communication",
            a.data_parallel_comm - b.data_parallel_comm,
        ),
        ("pipeline bubble", a.bubble - b.bubble),
        ("optimizer step", a.optimizer - b.optimizer),
        ("straggler wait", a.straggler - b.straggler),
    ];
    let (what, delta) =
        parts
            .iter()
            .copied()
            .fold(("", f64::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
    format!(
        "{:.1}% slower: more {what} (+{:.1} ms per step)",
        (a.total / b.total - 1.0) * 100.0,
        delta * 1e3
    )
}

/// Plans `model` for `job` on `cluster`.
pub fn plan(
    model: &ModelSpec,
    job: &Job,
    cluster: &Cluster,
    cost: &TrainingCostModel,
) -> Result<PlanOutcome, PlanError> {
    plan_with(model, job, cluster, cost, &Constraints::default())
}

/// Plans with some choices fixed by the user.
pub fn plan_with(
    model: &ModelSpec,
    job: &Job,
    cluster: &Cluster,
    cost: &TrainingCostModel,
    fixed: &Constraints,
) -> Result<PlanOutcome, PlanError> {
    let start = Instant::now();
    let per_node = cluster.node_groups[0].devices_per_node;
    if cluster
        .node_groups
        .iter()
        .any(|g| g.devices_per_node != per_node)
    {
        return Err(PlanError::NoCandidate(format!(
            "the node groups of {} differ in devices per node; the planner needs one node size",
            cluster.name
        )));
    }
    let ev = Evaluator::new(model, job, cluster, cost.clone());
    let interleave = match fixed.schedule {
        Some(Schedule::Interleaved(v)) => Some(v),
        _ => None,
    };
    let cands: Vec<ParallelPlan> = candidates_with(model, job, cluster, interleave)
        .into_iter()
        .filter(|p| fixed.admits(p))
        .collect();
    if cands.is_empty() {
        return Err(PlanError::NoCandidate(format!(
            "{} devices cannot split a global batch of {} over the {}-layer model with heads divisible by the tensor degree",
            cluster.num_devices(),
            job.global_batch,
            model.layers.len()
        )));
    }
    let evals: Vec<Evaluation> = cands.iter().map(|p| ev.evaluate(p)).collect();
    let fitting: Vec<&Evaluation> = evals.iter().filter(|e| e.fits).collect();
    let Some(best) = fitting
        .iter()
        .min_by(|a, b| a.time.total.total_cmp(&b.time.total))
        .map(|e| (*e).clone())
    else {
        let lean = evals
            .iter()
            .map(|e| e.memory.total)
            .fold(f64::INFINITY, f64::min);
        let more = min_devices(model, job, cluster, cost)
            .map(|n| format!(", or at least {n} devices"))
            .unwrap_or_default();
        return Err(PlanError::DoesNotFit {
            model: model.name.clone(),
            devices: cluster.num_devices(),
            capacity_gib: cluster.node_groups[0].device.memory_gib,
            min_gib: lean / (1u64 << 30) as f64,
            more,
        });
    };
    // The best plan of each other (dp, tp, pp), fastest first, then the best non-fitting one.
    let mut by_degrees: BTreeMap<(u64, u64, u64), &Evaluation> = BTreeMap::new();
    for e in &fitting {
        let key = (e.plan.dp, e.plan.tp, e.plan.pp);
        if key != (best.plan.dp, best.plan.tp, best.plan.pp)
            && by_degrees
                .get(&key)
                .is_none_or(|o| e.time.total < o.time.total)
        {
            by_degrees.insert(key, e);
        }
    }
    let mut alts: Vec<&Evaluation> = by_degrees.into_values().collect();
    alts.sort_by(|a, b| a.time.total.total_cmp(&b.time.total));
    alts.truncate(4);
    // Among same degrees, the best variant without recompute shows what recompute buys.
    if let Some(no_rc) = fitting
        .iter()
        .filter(|e| {
            e.plan.recompute != best.plan.recompute
                && e.plan.dp == best.plan.dp
                && e.plan.tp == best.plan.tp
                && e.plan.pp == best.plan.pp
        })
        .min_by(|a, b| a.time.total.total_cmp(&b.time.total))
    {
        alts.push(no_rc);
    }
    if let Some(nf) = evals
        .iter()
        .filter(|e| !e.fits)
        .min_by(|a, b| a.time.total.total_cmp(&b.time.total))
    {
        if nf.time.total < best.time.total {
            alts.push(nf);
        }
    }
    let alternatives = alts
        .into_iter()
        .map(|e| Alternative {
            evaluation: e.clone(),
            why: why(&best, e),
        })
        .collect();
    Ok(PlanOutcome {
        best,
        alternatives,
        considered: evals.len(),
        fitting: fitting.len(),
        planning_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The smallest multiple of the node count (up to 64×) at which some plan fits.
fn min_devices(
    model: &ModelSpec,
    job: &Job,
    cluster: &Cluster,
    cost: &TrainingCostModel,
) -> Option<u64> {
    let nodes = cluster.num_nodes().max(1) as u32;
    (1..=6).map(|k| nodes << k).find_map(|n| {
        let c = cluster.clone().with_nodes(n);
        let ev = Evaluator::new(model, job, &c, cost.clone());
        candidates(model, job, &c)
            .iter()
            .any(|p| ev.evaluate(p).fits)
            .then(|| c.num_devices())
    })
}

/// One row of the weak-scaling table.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRow {
    pub devices: u64,
    pub global_batch: u64,
    pub plan: Option<(u64, u64, u64)>,
    pub tokens_per_s: Option<f64>,
    /// Per-device throughput relative to the smallest device count that fits.
    pub efficiency: Option<f64>,
    /// Share of the step spent waiting for the slowest rank.
    pub straggler_fraction: Option<f64>,
    /// Share of the step in exposed gradient communication (contention included).
    pub dp_comm_fraction: Option<f64>,
}

/// Same per-device batch and the same layout per replica (the chosen plan's tensor and
/// pipeline degrees, ZeRO stage, recompute, sequence parallelism, micro-batch size,
/// schedule and rank order):
/// device counts from one node (8, 16, 32, …) up to the cluster, only the data-parallel
/// degree growing, as weak-scaling runs are measured. Counts the layout does not fit or
/// divide are reported without a plan.
pub fn weak_scaling(
    model: &ModelSpec,
    job: &Job,
    cluster: &Cluster,
    cost: &TrainingCostModel,
    layout: &ParallelPlan,
) -> Vec<ScalingRow> {
    let total = cluster.num_devices();
    let per_node = cluster.node_groups[0].devices_per_node as u64;
    let per_device = job.global_batch as f64 / total as f64;
    let mut counts = Vec::new();
    let mut n = per_node;
    while n < total {
        counts.push(n);
        n *= 2;
    }
    counts.push(total);
    let fixed = Constraints {
        dp: None,
        tp: Some(layout.tp),
        pp: Some(layout.pp),
        zero_stage: Some(layout.zero_stage),
        recompute: Some(layout.recompute),
        sequence_parallel: Some(layout.sequence_parallel),
        micro_batch_size: Some(layout.micro_batch_size),
        schedule: Some(layout.schedule),
        mapping: Some(layout.mapping),
    };
    let mut base: Option<f64> = None;
    counts
        .into_iter()
        .map(|n| {
            let c = cluster.clone().with_nodes((n / per_node).max(1) as u32);
            let batch = ((per_device * n as f64).round() as u64).max(1);
            let j = Job {
                global_batch: batch,
                seq: job.seq,
            };
            let out = plan_with(model, &j, &c, cost, &fixed).ok();
            let tps = out
                .as_ref()
                .map(|o| (batch * job.seq) as f64 / o.best.time.total);
            if base.is_none() {
                base = tps.map(|t| t / n as f64);
            }
            ScalingRow {
                devices: n,
                global_batch: batch,
                plan: out
                    .as_ref()
                    .map(|o| (o.best.plan.dp, o.best.plan.tp, o.best.plan.pp)),
                tokens_per_s: tps,
                efficiency: tps.zip(base).map(|(t, b)| t / n as f64 / b),
                straggler_fraction: out
                    .as_ref()
                    .map(|o| o.best.time.straggler / o.best.time.total),
                dp_comm_fraction: out
                    .as_ref()
                    .map(|o| o.best.time.data_parallel_comm / o.best.time.total),
            }
        })
        .collect()
}
