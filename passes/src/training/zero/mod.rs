//! ZeRO (Rajbhandari et al., DeepSpeed): data parallelism with the optimizer's work and
//! state sharded across the group, so each rank keeps `1/dp` of the optimizer state (stage
//! 1), of the gradients (stage 2) and of the parameters (stage 3) while every rank still
//! applies exactly the update one process would.
//!
//! **Layout.** The gradients are grouped into buckets as plain data parallelism groups them
//! ([`DataParallel::bucket_bytes`], parameters in graph order). Bucket `b` is the
//! concatenation of its members' flattened (row-major) tensors, zero-padded to `dp · P`
//! elements with `P = ceil(len / dp)`; rank `r` owns elements `[r·P, (r+1)·P)`. Its part of
//! each optimizer slot is the parameter `zero.b<b>.<slot>.part` (`f32[P]`, e.g.
//! `zero.b0.moment1.part`), holding that slice of the concatenated per-parameter slots
//! (`<param>.<slot>` of single-process training); [`ZeroLayout`] records members and offsets.
//!
//! **Step.** Every rank scales its bucket by its loss share (see [`super::data_parallel`])
//! and combines it: stage 1 all-reduces the whole bucket and keeps its slice (as DeepSpeed's
//! stage 1 does: the rank holds every gradient, but optimizer state for its part only);
//! stage 2 reduce-scatters it, so only the rank's slice is ever materialised after the
//! collective. Global-norm clipping needs the norm of the whole gradient: each rank sums the
//! squares of its slice (padding excluded) and one all_reduce adds the partial sums. The
//! update runs per parameter segment of the slice (weight decay is per parameter, and the
//! segment keeps the update formulas of [`super::update`] unchanged), the updated slices are
//! all-gathered and split back into the parameters, which every rank then holds in full.
//!
//! **Stage 3.** The rank keeps only its part of each bucket's parameters, the parameter
//! `zero.b<b>.param.part`, and updates it in place (no gather after the update). The
//! bucket is all-gathered right before its first use in the forward and again before its
//! first use in the backward (`stage3`), so the full parameters exist only while their
//! layers run; the interpreter frees each gathered value after its last use.
//!
//! The rank's slice is a static property of its graph (a `slice` with the rank's offsets),
//! so each rank builds its own step ([`DataParallel::rank`]); the collectives come in the
//! same order on every rank (loss, share, buckets, norm, gathers), only the local
//! arithmetic between them differs.
//!
//! **Checkpoints.** [`gather_full_state`] turns the parts back into the single-process slots
//! and parameters (an all_gather per part) before a checkpoint is written, so the checkpoint
//! loads in one process; [`partition_state`] slices full tensors (fresh or resumed) into
//! this rank's parts.
//!
//! Not supported (refused with an error): gradient accumulation, fp16 loss scaling, LAMB
//! (its trust ratio needs whole-parameter norms), and activation recomputation at stage 3.

use super::data_parallel::{all_reduce, dp_group, DataParallel};
use super::emit::Emit;
use super::optim::{find_param, Scalars, Slot, APPLY_INPUT, LR_INPUT, STEP_INPUT};
use super::{update, OptimConfig, Optimizer, TrainError};
use oar_ir::dist::ReduceOp;
use oar_ir::op::{CommGroup, Op, ReshapeDim, SliceAttrs};
use oar_ir::{DType, Dim, Graph, TensorType, ValueRef};

mod stage3;
mod state;
pub(crate) use stage3::gather_for_use;
pub use state::{gather_full_state, partition_state, ZeroStateError};

/// One parameter inside a bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub dims: Vec<u64>,
    /// First element in the bucket's flat buffer.
    pub offset: u64,
    pub numel: u64,
}

/// One bucket: its members in order, its unpadded length and the per-rank part `P`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub members: Vec<Member>,
    pub len: u64,
    pub part: u64,
}

/// Where every parameter's gradient and optimizer state live under ZeRO (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroLayout {
    pub stage: u8,
    pub dp: u64,
    pub rank: u64,
    /// The data-parallel group's global ranks, in order.
    pub group: Vec<u64>,
    pub buckets: Vec<Bucket>,
    /// The optimizer's slots per parameter: name and initial value.
    pub slots: Vec<(String, f64)>,
}

/// Bytes one rank holds for parameters, gradients and optimizer state (f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankBytes {
    pub params: u64,
    pub grads: u64,
    pub optimizer: u64,
}

/// The slot name of a stage-3 rank's part of the parameters themselves.
pub const PARAM_SLOT: &str = "param";

/// The name of bucket `b`'s part of `slot`.
pub fn part_name(bucket: usize, slot: &str) -> String {
    format!("zero.b{bucket}.{slot}.part")
}

impl ZeroLayout {
    /// Elements of every parameter together.
    pub fn numel(&self) -> u64 {
        self.buckets.iter().map(|b| b.len).sum()
    }

    /// Elements of one rank's parts together (padding included).
    pub fn part_numel(&self) -> u64 {
        self.buckets.iter().map(|b| b.part).sum()
    }

    /// What a rank holds between steps and after the step's collectives: full parameters
    /// below stage 3 and its part at stage 3; full gradients at stage 1 and its part from
    /// stage 2; its part of the optimizer state. Transients (the bucket being reduced, a
    /// stage-3 bucket gathered for its layers) are not counted, as the planner does not
    /// count them.
    pub fn bytes_per_rank(&self) -> RankBytes {
        let (full, part) = (4 * self.numel(), 4 * self.part_numel());
        RankBytes {
            params: if self.stage >= 3 { part } else { full },
            grads: if self.stage >= 2 { part } else { full },
            optimizer: self.slots.len() as u64 * part,
        }
    }

    /// One rank's bytes under plain data parallelism (everything replicated), for the same
    /// parameters and optimizer.
    pub fn replicated_bytes(&self) -> RankBytes {
        let full = 4 * self.numel();
        RankBytes {
            params: full,
            grads: full,
            optimizer: self.slots.len() as u64 * full,
        }
    }
}

/// Checks the configuration ZeRO supports (module docs).
pub(crate) fn check_config(cfg: &super::TrainConfig, dp: &DataParallel) -> Result<(), TrainError> {
    let refuse = |what: &str| {
        Err(TrainError::Config {
            message: format!("ZeRO stage {} does not support {what} yet", dp.zero_stage),
        })
    };
    match dp.zero_stage {
        1..=3 => {}
        s => {
            return Err(TrainError::Config {
                message: format!("ZeRO stage {s} does not exist (0 to 3)"),
            })
        }
    }
    if dp.rank >= dp.size {
        return Err(TrainError::Config {
            message: format!("rank {} is outside a group of {}", dp.rank, dp.size),
        });
    }
    if cfg.optim.accumulate > 1 {
        return refuse("gradient accumulation");
    }
    if matches!(cfg.precision, super::Precision::Fp16) {
        return refuse("fp16 loss scaling");
    }
    if let Optimizer::Lamb { .. } = cfg.optim.optimizer {
        return refuse("LAMB (its trust ratio needs whole-parameter norms)");
    }
    if dp.zero_stage == 3 && cfg.recompute.mode != super::Recompute::None {
        return refuse("activation recomputation (the gathers are placed by use)");
    }
    Ok(())
}

/// The rank's part of every bucket's combined gradient, with the layout.
pub(crate) struct Reduced {
    pub layout: ZeroLayout,
    /// Per bucket, the rank's part of the gradient, `f32[P]`.
    pub parts: Vec<ValueRef>,
}

/// Combines the gradients (already of the loss whose share is `share`) into this rank's
/// parts: stage 1 all-reduces each bucket and slices, stage 2 reduce-scatters it.
pub(crate) fn reduce(
    g: &mut Graph,
    grads: Vec<(String, ValueRef)>,
    share: ValueRef,
    optimizer: &Optimizer,
    dp: &DataParallel,
) -> Result<Reduced, TrainError> {
    let group = dp_group();
    let mut e = Emit::new(g, "zero");
    let buckets = plan_buckets(&e, &grads, dp)?;
    let mut parts = Vec::with_capacity(buckets.len());
    let mut next = grads.into_iter();
    for b in &buckets {
        let mut flat = Vec::with_capacity(b.members.len() + 1);
        for m in &b.members {
            let (_, v) = next.next().ok_or_else(|| internal("bucket members"))?;
            flat.push(reshape(&mut e, v, &[m.numel])?);
        }
        let padded = b.part * dp.size;
        if padded > b.len {
            flat.push(e.fill(0.0, vector(padded - b.len))?);
        }
        let joined = concat(&mut e, flat)?;
        let scaled = e.mul(joined, share)?;
        let part = match dp.zero_stage {
            1 => {
                let full = all_reduce(&mut e, scaled, &group)?;
                let lo = dp.rank * b.part;
                slice(&mut e, full, lo, lo + b.part)?
            }
            _ => e.op(
                Op::ReduceScatter {
                    op: ReduceOp::Sum,
                    axis: 0,
                    group: group.clone(),
                },
                vec![scaled],
                "reduce_scatter",
            )?,
        };
        parts.push(part);
    }
    let group_ids = if dp.device_ids.is_empty() {
        (0..dp.size).collect()
    } else {
        dp.device_ids.clone()
    };
    let layout = ZeroLayout {
        stage: dp.zero_stage,
        dp: dp.size,
        rank: dp.rank,
        group: group_ids,
        buckets,
        slots: update::slots(optimizer)
            .into_iter()
            .map(|(s, v)| (s.to_string(), v))
            .collect(),
    };
    Ok(Reduced { layout, parts })
}

/// Buckets as [`super::data_parallel`] forms them: consecutive gradients up to
/// `bucket_bytes` together.
fn plan_buckets(
    e: &Emit,
    grads: &[(String, ValueRef)],
    dp: &DataParallel,
) -> Result<Vec<Bucket>, TrainError> {
    let mut out: Vec<Bucket> = Vec::new();
    let mut cur: Vec<Member> = Vec::new();
    let mut len = 0u64;
    let close = |cur: &mut Vec<Member>, len: &mut u64, out: &mut Vec<Bucket>| {
        if !cur.is_empty() {
            out.push(Bucket {
                members: std::mem::take(cur),
                len: *len,
                part: len.div_ceil(dp.size),
            });
            *len = 0;
        }
    };
    for (name, v) in grads {
        let ty = e.ty(*v)?;
        let dims = ty.shape.as_static().ok_or_else(|| TrainError::Symbolic {
            node: name.clone(),
            ty: ty.to_string(),
        })?;
        let numel: u64 = dims.iter().product();
        if len > 0 && (len + numel) * 4 > dp.bucket_bytes as u64 {
            close(&mut cur, &mut len, &mut out);
        }
        cur.push(Member {
            name: name.clone(),
            dims,
            offset: len,
            numel,
        });
        len += numel;
    }
    close(&mut cur, &mut len, &mut out);
    Ok(out)
}

/// Adds clipping, the sharded update and the parameters' all_gather to `g` (module docs);
/// returns the optimizer state it created (the parts).
pub(crate) fn insert_update(
    g: &mut Graph,
    red: &Reduced,
    cfg: &OptimConfig,
    decays: &dyn Fn(&str, &TensorType) -> bool,
) -> Result<Vec<Slot>, TrainError> {
    let l = &red.layout;
    let group = dp_group();
    g.mode = oar_ir::ExecMode::Training;
    let mut e = Emit::new(g, "zero");
    let scalar = TensorType::new(DType::F32, vec![]);
    if e.graph()
        .inputs()
        .iter()
        .any(|&i| e.graph().node(i).name == APPLY_INPUT)
    {
        return Err(internal("an accumulation input under ZeRO"));
    }
    let sc = Scalars {
        lr: e.input(LR_INPUT, scalar.clone())?,
        step: e.input(STEP_INPUT, scalar)?,
    };
    // Per bucket, the segments of this rank's part: (member, start, end) in bucket offsets.
    let segments: Vec<Vec<(&Member, u64, u64)>> =
        l.buckets.iter().map(|b| segments_of(b, l.rank)).collect();
    let mut grads: Vec<Vec<ValueRef>> = Vec::with_capacity(segments.len());
    for ((b, segs), &part) in l.buckets.iter().zip(&segments).zip(&red.parts) {
        let lo = l.rank * b.part;
        let mut v = Vec::with_capacity(segs.len());
        for &(_, a, z) in segs {
            v.push(slice(&mut e, part, a - lo, z - lo)?);
        }
        grads.push(v);
    }
    if let Some(clip) = cfg.clip_global_norm {
        grads = clip_sharded(&mut e, grads, clip, &group)?;
    }

    let mut slots = Vec::new();
    for (bi, ((b, segs), seg_grads)) in l.buckets.iter().zip(&segments).zip(grads).enumerate() {
        let lo = l.rank * b.part;
        let mut olds = Vec::with_capacity(l.slots.len());
        for (slot, init) in &l.slots {
            let name = part_name(bi, slot);
            let ty = vector(b.part);
            slots.push(Slot {
                name: name.clone(),
                ty: ty.clone(),
                init: *init,
            });
            olds.push(e.param(&name, ty, *init)?);
        }
        // Stage 3: the rank holds its part of the parameters (a parameter of its own).
        let param_part = match l.stage {
            3 => Some(e.param(&part_name(bi, PARAM_SLOT), vector(b.part), 0.0)?),
            _ => None,
        };
        if segs.is_empty() {
            // The rank's part is all padding: no state moves, but the gather still needs
            // the rank's (zero) contribution.
            if param_part.is_none() {
                let zeros = e.fill(0.0, vector(b.part))?;
                gather_params(&mut e, b, zeros, &group, l.dp)?;
            }
            continue;
        }
        let mut new_params = Vec::with_capacity(segs.len() + 1);
        let mut new_slots: Vec<Vec<ValueRef>> = vec![Vec::new(); l.slots.len()];
        for (&(m, a, z), gseg) in segs.iter().zip(seg_grads) {
            let p = find_param(e.graph(), &m.name)?;
            let ty = e.ty(p)?;
            let pseg = match param_part {
                Some(part) => slice(&mut e, part, a - lo, z - lo)?,
                None => {
                    let flat = reshape(&mut e, p, &[m.numel])?;
                    slice(&mut e, flat, a - m.offset, z - m.offset)?
                }
            };
            let mut state = Vec::with_capacity(olds.len());
            for &o in &olds {
                state.push(slice(&mut e, o, a - lo, z - lo)?);
            }
            let up = update::update(
                &mut e,
                &cfg.optimizer,
                &sc,
                pseg,
                gseg,
                &state,
                decays(&m.name, &ty),
            )?;
            new_params.push(up.param);
            for (acc, v) in new_slots.iter_mut().zip(up.slots) {
                acc.push(v);
            }
        }
        // Padding at the part's end (only the last rank's parts have any).
        let used = segs.last().map_or(lo, |s| s.2) - lo;
        if used < b.part {
            new_params.push(e.fill(0.0, vector(b.part - used))?);
            for (acc, &o) in new_slots.iter_mut().zip(&olds) {
                acc.push(slice(&mut e, o, used, b.part)?);
            }
        }
        for ((slot, _), pieces) in l.slots.iter().zip(new_slots) {
            let v = concat(&mut e, pieces)?;
            e.graph_mut().add_state_update(part_name(bi, slot), v);
        }
        let new_part = concat(&mut e, new_params)?;
        match param_part {
            // Gathered where the next step's forward and backward use it.
            Some(_) => e
                .graph_mut()
                .add_state_update(part_name(bi, PARAM_SLOT), new_part),
            None => gather_params(&mut e, b, new_part, &group, l.dp)?,
        }
    }
    Ok(slots)
}

/// The parts of bucket `b`'s members rank `rank` owns: `(member, start, end)` in bucket
/// offsets, non-empty, in order.
fn segments_of(b: &Bucket, rank: u64) -> Vec<(&Member, u64, u64)> {
    let (lo, hi) = (rank * b.part, (rank + 1) * b.part);
    b.members
        .iter()
        .filter_map(|m| {
            let a = m.offset.max(lo);
            let z = (m.offset + m.numel).min(hi);
            (a < z).then_some((m, a, z))
        })
        .collect()
}

/// All-gathers the updated parts and writes each member's new value as its state update.
fn gather_params(
    e: &mut Emit,
    b: &Bucket,
    part: ValueRef,
    group: &CommGroup,
    dp: u64,
) -> Result<(), TrainError> {
    let full = e.op(
        Op::AllGather {
            axis: 0,
            group: group.clone(),
        },
        vec![part],
        "all_gather",
    )?;
    let full = if b.part * dp > b.len {
        slice(e, full, 0, b.len)?
    } else {
        full
    };
    let pieces = if b.members.len() == 1 {
        vec![full]
    } else {
        let split = e.op(
            Op::Split {
                axis: 0,
                sizes: b.members.iter().map(|m| m.numel).collect(),
            },
            vec![full],
            "split",
        )?;
        (0u32..b.members.len() as u32)
            .map(|p| ValueRef::new(split.node, p))
            .collect()
    };
    for (m, v) in b.members.iter().zip(pieces) {
        let back = reshape(e, v, &m.dims)?;
        e.graph_mut().add_state_update(m.name.clone(), back);
    }
    Ok(())
}

/// Scales every gradient segment by `clip / max(‖g‖, clip)`, `‖g‖` over the whole
/// gradient: the rank's partial sum of squares, all-reduced.
fn clip_sharded(
    e: &mut Emit,
    grads: Vec<Vec<ValueRef>>,
    clip: f64,
    group: &CommGroup,
) -> Result<Vec<Vec<ValueRef>>, TrainError> {
    let mut local: Option<ValueRef> = None;
    for &g in grads.iter().flatten() {
        let s = e.sum_squares(g)?;
        local = Some(match local {
            Some(t) => e.add(t, s)?,
            None => s,
        });
    }
    let local = match local {
        Some(v) => v,
        None => e.scalar(0.0)?,
    };
    let total = all_reduce(e, local, group)?;
    let norm = e.sqrt(total)?;
    let c = e.scalar(clip)?;
    let denom = e.max(norm, c)?;
    let scale = e.div(c, denom)?;
    grads
        .into_iter()
        .map(|segs| segs.into_iter().map(|g| e.mul(g, scale)).collect())
        .collect()
}

fn vector(n: u64) -> TensorType {
    TensorType::new(DType::F32, vec![Dim::Static(n)])
}

fn reshape_op(dims: &[u64]) -> Op {
    let shape = dims.iter().map(|&d| ReshapeDim::from(d as i64)).collect();
    Op::Reshape { shape }
}

fn reshape(e: &mut Emit, v: ValueRef, dims: &[u64]) -> Result<ValueRef, TrainError> {
    e.op(reshape_op(dims), vec![v], "reshape")
}

fn slice_op(start: u64, end: u64) -> Op {
    Op::Slice(SliceAttrs {
        axes: vec![0],
        starts: vec![start as i64],
        ends: vec![end as i64],
        steps: vec![1],
    })
}

fn slice(e: &mut Emit, v: ValueRef, start: u64, end: u64) -> Result<ValueRef, TrainError> {
    e.op(slice_op(start, end), vec![v], "slice")
}

fn concat(e: &mut Emit, mut parts: Vec<ValueRef>) -> Result<ValueRef, TrainError> {
    match parts.len() {
        0 => Err(internal("an empty concatenation")),
        1 => Ok(parts.remove(0)),
        _ => e.op(Op::Concat { axis: 0 }, parts, "concat"),
    }
}

fn internal(what: &str) -> TrainError {
    TrainError::Verify(format!("internal: ZeRO built {what}"))
}
