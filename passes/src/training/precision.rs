//! Mixed precision for training steps: low-precision compute with f32 master weights, and
//! dynamic loss scaling for fp16.
//!
//! **Which ops run in low precision.** Only the compute-heavy contractions: `matmul`,
//! `conv2d`, `conv_transpose2d` and their fused forms (`fused_matmul`, `fused_conv2d`, whose
//! bias and activation epilogue then also run in the low type, as a fused AMP kernel does).
//! These are AMP "O1"'s white list (PyTorch autocast's and Paddle's `white_list`: matmul,
//! conv2d, mul): they are where the time goes and they accumulate in f32 inside the kernel,
//! so rounding their operands costs little accuracy. Everything else stays f32, the black
//! list's reasoning: norms, softmax, losses and reductions sum many terms or exponentiate,
//! where bf16's 8-bit mantissa or fp16's range lose the result. Every float operand of a
//! white-listed op is cast to the low type (one cast per value, shared by its users) and each
//! result is cast back to f32, so the rest of the graph is unchanged. Autodiff's rule for
//! `cast` casts the gradient back, so the gradients of the master weights arrive in f32 and
//! the optimizer updates f32 parameters.
//!
//! **Dynamic loss scaling** (fp16, whose largest value is 65504 and whose gradients
//! underflow): the loss is multiplied by a scale before differentiation and the gradients
//! divided by it before clipping. A step whose gradients hold an inf or NaN is skipped: the
//! gradients are replaced by zeros and every parameter and optimizer state keeps its old
//! value through the same `new·ok + old·(1 − ok)` blend that gradient accumulation's `apply`
//! uses. The scale follows `paddle.amp.GradScaler` (`_update` in `paddle/amp/grad_scaler.py`):
//! after `incr_every` consecutive finite steps it is multiplied by `incr_ratio`, after
//! `decr_every` consecutive non-finite steps by `decr_ratio`. The scale, both counters and
//! whether the last step was skipped are training state ([`SCALE_STATE`] and the names
//! next to it), saved in checkpoints with the weights; [`SKIPPED_STATE`] tells the runner.
//!
//! The finite check needs no new op: `Σ g·0` is 0 when every element of `g` is finite and
//! NaN otherwise (`inf·0` and `NaN·0` are NaN), and `NaN == 0` is false.
//!
//! The optimizer's step under loss scaling is the count of applied updates (state
//! [`UPDATES_STATE`]), not the `step` input, so a skip does not advance Adam's bias
//! correction, as Paddle's `beta^t` accumulators stop on a skipped step; the `step` input
//! still drives the schedule and dropout. Loss scaling with gradient accumulation is
//! refused.

use super::emit::Emit;
use super::optim::{Gate, Slot};
use super::TrainError;
use oar_ir::op::{BinaryOp, Op};
use oar_ir::{DType, Graph, TensorType, ValueRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

pub use oar_runtime::train::SKIPPED_STATE;

/// The loss scale (rank-0 f32 state).
pub const SCALE_STATE: &str = "loss_scale";
/// Consecutive finite steps since the scale last changed.
pub const GOOD_STEPS_STATE: &str = "loss_scale.good_steps";
/// Consecutive non-finite steps since the scale last changed.
pub const BAD_STEPS_STATE: &str = "loss_scale.bad_steps";
/// Updates applied so far (skipped steps excluded): the optimizer's step.
pub const UPDATES_STATE: &str = "loss_scale.updates";

/// The precision a training step computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// Contractions in bf16, f32 master weights; no loss scaling (bf16 has f32's range).
    Bf16,
    /// Contractions in fp16, f32 master weights, dynamic loss scaling.
    Fp16,
}

/// Names [`Precision::from_str`] knows.
pub const PRECISION_NAMES: [&str; 3] = ["fp32", "bf16", "fp16"];

impl FromStr for Precision {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Precision, TrainError> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" | "f16" => Ok(Precision::Fp16),
            _ => Err(TrainError::Config {
                message: format!(
                    "unknown precision `{s}`; known: {}",
                    PRECISION_NAMES.join(", ")
                ),
            }),
        }
    }
}

impl Precision {
    /// The dtype the contractions run in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::Fp16 => DType::F16,
        }
    }
}

/// Dynamic loss scaling's parameters; the defaults are `paddle.amp.GradScaler`'s (Paddle 3.x:
/// `init_loss_scaling = 2^16`, `incr_every_n_steps = 2000`, `decr_every_n_nan_or_inf = 1`;
/// the older `AmpScaler` starts at 2^15 and grows every 1000 steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaling {
    #[serde(default = "default_init")]
    pub init: f64,
    #[serde(default = "default_incr_ratio")]
    pub incr_ratio: f64,
    #[serde(default = "default_decr_ratio")]
    pub decr_ratio: f64,
    #[serde(default = "default_incr_every")]
    pub incr_every: u32,
    #[serde(default = "default_decr_every")]
    pub decr_every: u32,
}

fn default_init() -> f64 {
    65536.0
}
fn default_incr_ratio() -> f64 {
    2.0
}
fn default_decr_ratio() -> f64 {
    0.5
}
fn default_incr_every() -> u32 {
    2000
}
fn default_decr_every() -> u32 {
    1
}

impl Default for LossScaling {
    fn default() -> LossScaling {
        LossScaling {
            init: default_init(),
            incr_ratio: default_incr_ratio(),
            decr_ratio: default_decr_ratio(),
            incr_every: default_incr_every(),
            decr_every: default_decr_every(),
        }
    }
}

impl LossScaling {
    fn validate(&self) -> Result<(), TrainError> {
        let bad = |what: &str, v: f64| TrainError::Config {
            message: format!("loss scaling: {what} = {v} is out of range"),
        };
        if !(self.init.is_finite() && self.init > 0.0) {
            return Err(bad("init", self.init));
        }
        if !(self.incr_ratio.is_finite() && self.incr_ratio >= 1.0) {
            return Err(bad("incr_ratio", self.incr_ratio));
        }
        if !(self.decr_ratio > 0.0 && self.decr_ratio <= 1.0) {
            return Err(bad("decr_ratio", self.decr_ratio));
        }
        if self.incr_every == 0 || self.decr_every == 0 {
            return Err(bad(
                "incr_every/decr_every",
                f64::from(self.incr_every.min(self.decr_every)),
            ));
        }
        Ok(())
    }
}

/// Casts the operands of every white-listed op (see the module docs) to `to` and its float
/// results back to f32. Returns the new graph and `values` (of `g`) mapped into it. `to =
/// F32` leaves the graph as it is.
pub fn cast_compute(
    g: &Graph,
    to: DType,
    values: &[ValueRef],
) -> Result<(Graph, Vec<ValueRef>), TrainError> {
    if to == DType::F32 {
        return Ok((g.clone(), values.to_vec()));
    }
    let mut r = crate::rebuild::Rebuilder::new(g);
    // One cast per (old value), shared by every white-listed user.
    let mut low: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    for (id, n) in g.iter() {
        if matches!(n.op, Op::Input) {
            continue;
        }
        let f32_operands = n
            .inputs
            .iter()
            .all(|v| g.value_type(*v).map(|t| t.dtype) == Some(DType::F32));
        if !(white_listed(&n.op) && f32_operands) {
            r.copy(id)?;
            continue;
        }
        let mut ins = Vec::with_capacity(n.inputs.len());
        for v in &n.inputs {
            let cast = match low.get(v) {
                Some(c) => *c,
                None => {
                    let like = format!("{}.{}", g.node(v.node).name, to);
                    let c: ValueRef = r
                        .add(Op::Cast { to }, vec![r.value(*v)], Some(&like))?
                        .into();
                    low.insert(*v, c);
                    c
                }
            };
            ins.push(cast);
        }
        let node = r.add(n.op.clone(), ins, Some(&n.name))?;
        let mut outs = Vec::with_capacity(n.outputs.len());
        for port in 0..n.outputs.len() as u32 {
            let like = format!("{}.f32", n.name);
            let back = r.add(
                Op::Cast { to: DType::F32 },
                vec![ValueRef::new(node, port)],
                Some(&like),
            )?;
            outs.push(back.into());
        }
        r.alias(id, outs);
    }
    let mapped = values.iter().map(|v| r.value(*v)).collect();
    Ok((r.finish(), mapped))
}

/// The ops that run in the low precision (module docs): the contractions, plain and fused
/// (`Op::is_contraction`, an exhaustive per-op fact).
fn white_listed(op: &Op) -> bool {
    op.is_contraction()
}

/// Loss scaling between `append_loss` and the optimizer: [`Scaler::scale_loss`] before
/// differentiation, [`Scaler::unscale`] on the gradients after it.
pub struct Scaler {
    cfg: LossScaling,
    scale: ValueRef,
    good: ValueRef,
    bad: ValueRef,
    updates: ValueRef,
}

impl Scaler {
    /// Adds the scaling state to `g` and returns `loss · scale`, the value to differentiate.
    /// The state is marked as updated (by placeholders [`Scaler::unscale`] replaces) so
    /// autodiff does not take the scale for a trainable parameter.
    pub fn scale_loss(
        g: &mut Graph,
        loss: ValueRef,
        cfg: &LossScaling,
    ) -> Result<(Scaler, ValueRef), TrainError> {
        cfg.validate()?;
        let scalar = TensorType::new(DType::F32, vec![]);
        let mut e = Emit::new(g, "loss_scale");
        let scale = e.param(SCALE_STATE, scalar.clone(), cfg.init)?;
        let good = e.param(GOOD_STEPS_STATE, scalar.clone(), 0.0)?;
        let bad = e.param(BAD_STEPS_STATE, scalar.clone(), 0.0)?;
        let skipped = e.param(SKIPPED_STATE, scalar.clone(), 0.0)?;
        let updates = e.param(UPDATES_STATE, scalar, 0.0)?;
        let scaled = e.mul(loss, scale)?;
        for (name, v) in Self::names()
            .into_iter()
            .zip([scale, good, bad, skipped, updates])
        {
            g.add_state_update(name, v);
        }
        let s = Scaler {
            cfg: cfg.clone(),
            scale,
            good,
            bad,
            updates,
        };
        Ok((s, scaled))
    }

    /// The state names, in the order of [`Scaler`]'s values.
    pub fn names() -> [&'static str; 5] {
        [
            SCALE_STATE,
            GOOD_STEPS_STATE,
            BAD_STEPS_STATE,
            SKIPPED_STATE,
            UPDATES_STATE,
        ]
    }

    /// The optimizer state this scaler added (for [`super::TrainStep::init_state`]).
    pub fn slots(&self) -> Vec<Slot> {
        let ty = TensorType::new(DType::F32, vec![]);
        Self::names()
            .into_iter()
            .zip([self.cfg.init, 0.0, 0.0, 0.0, 0.0])
            .map(|(name, init)| Slot {
                name: name.to_string(),
                ty: ty.clone(),
                init,
            })
            .collect()
    }

    /// Divides the gradients (of the scaled loss) by the scale, replaces them by zeros when
    /// any is non-finite, and adds the new scaling state to `g` as state updates. Returns
    /// the gradients and the optimizer's [`Gate`]: skip or apply, and the count of applied
    /// updates as its step. The placeholder state updates of [`Scaler::scale_loss`] must have
    /// been dropped from `g`.
    pub fn unscale(
        &self,
        g: &mut Graph,
        grads: &[(String, ValueRef)],
    ) -> Result<(Vec<(String, ValueRef)>, Gate), TrainError> {
        let mut e = Emit::new(g, "loss_scale");
        let one = e.scalar(1.0)?;
        let inv = e.div(one, self.scale)?;
        let mut unscaled = Vec::with_capacity(grads.len());
        let mut probe: Option<ValueRef> = None;
        for (name, grad) in grads {
            let u = e.mul(*grad, inv)?;
            // Σ u·0: 0 when u is finite, NaN otherwise.
            let z = e.scale(u, 0.0)?;
            let z = e.reduce(oar_ir::dist::ReduceOp::Sum, z, vec![], false)?;
            probe = Some(match probe {
                Some(p) => e.add(p, z)?,
                None => z,
            });
            unscaled.push((name.clone(), u));
        }
        let zero = e.scalar(0.0)?;
        let finite = match probe {
            Some(p) => e.binary(BinaryOp::Equal, p, zero)?,
            None => e.op(Op::Cast { to: DType::Bool }, vec![one], "finite")?,
        };
        let ok = e.select(finite, one, zero)?;
        let mut out = Vec::with_capacity(unscaled.len());
        for (name, u) in unscaled {
            // Zeros on a skipped step keep the discarded update finite, so the blend with
            // the old values (`new·0 + old·1`) is exact.
            out.push((name, e.select(finite, u, zero)?));
        }

        // GradScaler._update, branch-free on `ok` ∈ {0, 1}.
        let not_ok = e.rsub(1.0, ok)?;
        let good1 = e.offset(self.good, 1.0)?;
        let good1 = e.mul(good1, ok)?;
        let half = 0.5;
        let incr = e.offset(good1, -(f64::from(self.cfg.incr_every) - half))?;
        let incr = e.binary(BinaryOp::Greater, incr, zero)?;
        let good_new = e.select(incr, zero, good1)?;
        let bad1 = e.offset(self.bad, 1.0)?;
        let bad1 = e.mul(bad1, not_ok)?;
        let decr = e.offset(bad1, -(f64::from(self.cfg.decr_every) - half))?;
        let decr = e.binary(BinaryOp::Greater, decr, zero)?;
        let bad_new = e.select(decr, zero, bad1)?;
        let up = e.scale(self.scale, self.cfg.incr_ratio)?;
        let down = e.scale(self.scale, self.cfg.decr_ratio)?;
        let kept = e.select(decr, down, self.scale)?;
        let scale_new = e.select(incr, up, kept)?;
        let updates_new = e.add(self.updates, ok)?;
        // This update's 1-based number were it applied; never 0, so a discarded update's
        // bias correction `1 − β^step` stays non-zero and the update finite.
        let this_update = e.offset(self.updates, 1.0)?;
        for (name, v) in
            Self::names()
                .into_iter()
                .zip([scale_new, good_new, bad_new, not_ok, updates_new])
        {
            e.graph_mut().add_state_update(name, v);
        }
        let gate = Gate {
            apply: ok,
            step: this_update,
        };
        Ok((out, gate))
    }
}
