//! Data parallelism: a rank's training step is the single-device step on its shard of the
//! global batch, with the gradients combined across the data-parallel group before clipping
//! and the update, so every rank applies the update single-process training would.
//!
//! The gradients are all-reduced in buckets (as PyTorch DDP does): consecutive gradients, up
//! to `bucket_bytes` together, are flattened, concatenated, reduced with one `all_reduce`
//! and split back, so a model of many small tensors pays the collective's latency a few
//! times rather than once per parameter.
//!
//! Each rank scales its gradients by its share `w_r` of the global loss and the collective
//! sums them. For a mean over equal shards (cross-entropy, MSE, distillation) `w_r = 1/dp`.
//! The masked-LM loss is a mean over the *scored* tokens, which differ per shard: there
//! `w_r = n_r / Σ n` with `n_r` the rank's scored-token count (itself all-reduced), which
//! makes the sum exactly the global mean's gradient. The step's reported loss is combined
//! the same way, so every rank reports the global batch's loss.
//!
//! batch_norm in training form normalises with the global batch's statistics
//! (SyncBatchNorm, see [`super::sync_bn`]: all-reduced per-channel sums in the forward and
//! the matching gradient sums in the backward), so a model with batch_norm trains as one
//! process would (PP-LCNet to a stated tolerance, `passes/tests/training_sync_bn.rs`).
//!
//! With [`DataParallel::zero_stage`] above 0 the optimizer state (stage 1) and the
//! gradients (stage 2) are sharded across the group ([`super::zero`]).

use super::LABELS_INPUT;
use super::{build_step, loss::IGNORE_INDEX, Emit, LossKind, TrainConfig, TrainError, TrainStep};
use oar_ir::dist::{ProcessMesh, ReduceOp};
use oar_ir::op::{BinaryOp, CommGroup, Op, ReshapeDim};
use oar_ir::{Graph, TensorType, ValueRef};

/// The name of the mesh the data-parallel step's collectives run over.
pub const DP_MESH: &str = "dp";

/// How a step is replicated.
#[derive(Debug, Clone, PartialEq)]
pub struct DataParallel {
    /// Ranks in the data-parallel group (the mesh `dp` is `0..size` unless `device_ids`).
    pub size: u64,
    /// Global device ids of the group, in order; empty means `0..size`.
    pub device_ids: Vec<u64>,
    /// Largest bucket of gradients one all_reduce carries (bytes; a larger single gradient
    /// gets a bucket of its own).
    pub bucket_bytes: usize,
    /// ZeRO stage (see [`super::zero`]): 0 replicates the optimizer state, 1 shards it, 2
    /// shards the gradients too.
    pub zero_stage: u8,
    /// This rank's index in the group: a ZeRO step slices the rank's part statically, so
    /// each rank builds its own (unused at stage 0, where every rank's step is the same).
    pub rank: u64,
}

impl DataParallel {
    /// `size` ranks `0..size`, 4 MiB buckets.
    pub fn new(size: u64) -> DataParallel {
        DataParallel {
            size,
            device_ids: Vec::new(),
            bucket_bytes: 4 << 20,
            zero_stage: 0,
            rank: 0,
        }
    }

    /// Rank `rank` of `size` with ZeRO stage `stage`.
    pub fn zero(size: u64, stage: u8, rank: u64) -> DataParallel {
        DataParallel {
            zero_stage: stage,
            rank,
            ..DataParallel::new(size)
        }
    }

    pub(crate) fn mesh(&self) -> Result<ProcessMesh, TrainError> {
        if self.size == 0 {
            return Err(TrainError::Config {
                message: "data parallelism needs at least one rank".into(),
            });
        }
        let mut m = ProcessMesh::new(vec![self.size], vec![DP_MESH.into()]);
        if !self.device_ids.is_empty() {
            if self.device_ids.len() as u64 != self.size {
                return Err(TrainError::Config {
                    message: format!(
                        "{} device ids for a data-parallel group of {}",
                        self.device_ids.len(),
                        self.size
                    ),
                });
            }
            m.device_ids = self.device_ids.clone();
        }
        Ok(m)
    }
}

/// Builds the step of one data-parallel rank: [`super::build_train_step`] with the gradients
/// combined across the group (see the module docs). Feed each rank its contiguous
/// `1/size` slice of the global batch.
pub fn build_data_parallel_step(
    model: &Graph,
    cfg: &TrainConfig,
    dp: &DataParallel,
) -> Result<TrainStep, TrainError> {
    build_step(model, cfg, Some(dp))
}

/// This rank's share of the global loss (see the module docs), a rank-0 f32 value computed
/// from the labels; adds the `dp` mesh to `g`.
pub(crate) fn loss_share(
    g: &mut Graph,
    kind: &LossKind,
    dp: &DataParallel,
) -> Result<ValueRef, TrainError> {
    g.meshes.insert(DP_MESH.into(), dp.mesh()?);
    let mut e = Emit::new(g, "dp");
    share(&mut e, kind, dp, &dp_group())
}

/// The group's loss: each rank's scaled by its `share`, summed.
pub(crate) fn global_loss(
    g: &mut Graph,
    loss: ValueRef,
    share: ValueRef,
) -> Result<ValueRef, TrainError> {
    let mut e = Emit::new(g, "dp");
    let scaled = e.mul(loss, share)?;
    all_reduce(&mut e, scaled, &dp_group())
}

/// The data-parallel group's collectives' group.
pub(crate) fn dp_group() -> CommGroup {
    CommGroup {
        mesh: DP_MESH.into(),
        axis: 0,
    }
}

/// Rewrites `g` (forward + backward) so the gradients are the group's, each scaled by
/// `share` ([`global_loss`]) and summed; returns them in the order given.
pub(crate) fn combine_gradients(
    g: &mut Graph,
    grads: Vec<(String, ValueRef)>,
    share: ValueRef,
    dp: &DataParallel,
) -> Result<Vec<(String, ValueRef)>, TrainError> {
    let group = dp_group();
    let mut e = Emit::new(g, "dp");

    let mut out = Vec::with_capacity(grads.len());
    let mut bucket: Vec<(String, ValueRef, TensorType)> = Vec::new();
    let mut bytes = 0usize;
    for (name, v) in grads {
        let ty = e.ty(v)?;
        let size = ty
            .shape
            .numel()
            .as_static()
            .map_or(0, |n| n * ty.dtype.size_bytes()) as usize;
        if !bucket.is_empty() && bytes + size > dp.bucket_bytes {
            out.extend(reduce_bucket(
                &mut e,
                std::mem::take(&mut bucket),
                share,
                &group,
            )?);
            bytes = 0;
        }
        bytes += size;
        bucket.push((name, v, ty));
    }
    if !bucket.is_empty() {
        out.extend(reduce_bucket(&mut e, bucket, share, &group)?);
    }
    Ok(out)
}

/// This rank's share of the global loss, a rank-0 f32 value (see the module docs).
fn share(
    e: &mut Emit,
    kind: &LossKind,
    dp: &DataParallel,
    group: &CommGroup,
) -> Result<ValueRef, TrainError> {
    match kind {
        LossKind::MaskedLm => {
            let labels = e
                .graph()
                .inputs()
                .iter()
                .copied()
                .find(|&id| e.graph().node(id).name == LABELS_INPUT)
                .ok_or_else(|| TrainError::Config {
                    message: "the masked-LM step has no labels input".into(),
                })?;
            let labels = ValueRef::new(labels, 0);
            let yt = e.ty(labels)?;
            // Scored tokens, counted as the loss counts them (never below one locally).
            let ignore = e.fill(IGNORE_INDEX as f64, TensorType::new(yt.dtype, vec![]))?;
            let skipped = e.binary(BinaryOp::Equal, labels, ignore)?;
            let zero = e.scalar(0.0)?;
            let one = e.scalar(1.0)?;
            let weight = e.select(skipped, zero, one)?;
            let mine = e.reduce(ReduceOp::Sum, weight, vec![], false)?;
            let total = all_reduce(e, mine, group)?;
            let mine = e.max(mine, one)?;
            let total = e.max(total, one)?;
            e.div(mine, total)
        }
        LossKind::CrossEntropy { .. }
        | LossKind::Mse
        | LossKind::Distill { .. }
        | LossKind::ArcMargin { .. } => e.scalar(1.0 / dp.size as f64),
    }
}

pub(crate) fn all_reduce(
    e: &mut Emit,
    v: ValueRef,
    group: &CommGroup,
) -> Result<ValueRef, TrainError> {
    e.op(
        Op::AllReduce {
            op: ReduceOp::Sum,
            group: group.clone(),
        },
        vec![v],
        "all_reduce",
    )
}

/// One bucket: flatten, concatenate, scale by `share`, all-reduce, split, reshape back.
fn reduce_bucket(
    e: &mut Emit,
    bucket: Vec<(String, ValueRef, TensorType)>,
    share: ValueRef,
    group: &CommGroup,
) -> Result<Vec<(String, ValueRef)>, TrainError> {
    if let [(name, v, _)] = &bucket[..] {
        let scaled = e.mul(*v, share)?;
        return Ok(vec![(name.clone(), all_reduce(e, scaled, group)?)]);
    }
    let mut flat = Vec::with_capacity(bucket.len());
    let mut sizes = Vec::with_capacity(bucket.len());
    for (_, v, ty) in &bucket {
        let n = ty
            .shape
            .numel()
            .as_static()
            .ok_or_else(|| TrainError::Symbolic {
                node: e.graph().node(v.node).name.clone(),
                ty: ty.to_string(),
            })?;
        sizes.push(n);
        flat.push(e.op(
            Op::Reshape {
                shape: vec![ReshapeDim::from(n as i64)],
            },
            vec![*v],
            "flat",
        )?);
    }
    let joined = e.op(Op::Concat { axis: 0 }, flat, "bucket")?;
    let scaled = e.mul(joined, share)?;
    let reduced = all_reduce(e, scaled, group)?;
    let name = format!("dp_split_{}", bucket[0].0);
    let split = e.graph_mut().add_node(
        Op::Split {
            axis: 0,
            sizes: sizes.clone(),
        },
        vec![reduced],
        Some(name),
    )?;
    let mut out = Vec::with_capacity(bucket.len());
    for (port, (name, _, ty)) in (0u32..).zip(bucket) {
        let dims = ty
            .shape
            .as_static()
            .unwrap_or_default()
            .into_iter()
            .map(|d| ReshapeDim::from(d as i64))
            .collect();
        let back = e.op(
            Op::Reshape { shape: dims },
            vec![ValueRef::new(split, port)],
            "unflat",
        )?;
        out.push((name, back));
    }
    Ok(out)
}
