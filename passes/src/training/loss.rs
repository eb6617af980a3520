//! Loss builders: each appends the ops of one loss to a graph and returns the rank-0 f32
//! loss value. Classes are on the last axis of the logits; every loss is a mean over the
//! other dims (the batch, and the sequence for token-level losses).

use super::emit::Emit;
use super::TrainError;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, Op, UnaryOp};
use oar_ir::{DType, TensorType, ValueRef};
use serde::{Deserialize, Serialize};

/// Softmax cross-entropy of `logits` `f32[..., C]` against integer class ids `labels`
/// `i64[...]` (the logits' shape without the class axis):
/// `mean(−log_softmax(logits)[label])`. With `label_smoothing = ε` the target is
/// `(1−ε)·onehot + ε/C` (PyTorch's `label_smoothing`, Paddle's `label_smooth`), i.e.
/// `(1−ε)·nll + ε·mean(−mean_c log_softmax)`.
pub fn softmax_cross_entropy(
    e: &mut Emit,
    logits: ValueRef,
    labels: ValueRef,
    label_smoothing: f64,
) -> Result<ValueRef, TrainError> {
    let (lt, _) = class_ids(e, logits, labels, "class ids")?;
    let logp = e.op(Op::LogSoftmax { axis: -1 }, vec![logits], "log_softmax")?;
    let last = lt.rank() as i64 - 1;
    let idx = e.op(Op::Unsqueeze { axes: vec![last] }, vec![labels], "labels")?;
    let picked = e.op(Op::GatherElements { axis: -1 }, vec![logp, idx], "picked")?;
    let mean = e.mean_all(picked)?;
    let nll = e.unary(UnaryOp::Neg, mean)?;
    if label_smoothing == 0.0 {
        return Ok(nll);
    }
    // mean over all elements of −logp = mean over rows of −mean_c logp.
    let all = e.mean_all(logp)?;
    let smooth = e.unary(UnaryOp::Neg, all)?;
    let a = e.scale(nll, 1.0 - label_smoothing)?;
    let b = e.scale(smooth, label_smoothing)?;
    e.add(a, b)
}

/// Labels equal to this are not scored by [`masked_cross_entropy`] (PyTorch's and Paddle's
/// `ignore_index` default).
pub const IGNORE_INDEX: i64 = -100;

/// Softmax cross-entropy over the positions whose label is not [`IGNORE_INDEX`]: masked
/// language modelling, where only the masked tokens carry a label. `logits` `f32[..., V]`,
/// `labels` `i64[...]`; the loss is the mean over scored positions (BERT's and PaddleNLP's
/// pre-training criterion), 0 when none is scored. Paddle 3.3's
/// `CrossEntropyLoss(ignore_index=-100)`, which `ErnieForMaskedLM(labels=…)` uses, divides by
/// every position instead: that value times scored/total (`tests/paddle/ernie_paddle.py`).
pub fn masked_cross_entropy(
    e: &mut Emit,
    logits: ValueRef,
    labels: ValueRef,
) -> Result<ValueRef, TrainError> {
    let (lt, yt) = class_ids(e, logits, labels, "token ids")?;
    // Ignored positions gather class 0 (any valid index) and are weighted 0.
    let (skipped, weight) = scored_positions(e, labels, &yt)?;
    let zero_id = e.fill(0.0, TensorType::new(yt.dtype, vec![]))?;
    let ids = e.select(skipped, zero_id, labels)?;
    let one = e.scalar(1.0)?;
    let logp = e.op(Op::LogSoftmax { axis: -1 }, vec![logits], "log_softmax")?;
    let last = lt.rank() as i64 - 1;
    let idx = e.op(Op::Unsqueeze { axes: vec![last] }, vec![ids], "labels")?;
    let picked = e.op(Op::GatherElements { axis: -1 }, vec![logp, idx], "picked")?;
    let picked = e.op(Op::Squeeze { axes: vec![last] }, vec![picked], "picked")?;
    let scored = e.mul(picked, weight)?;
    let total = e.reduce(ReduceOp::Sum, scored, vec![], false)?;
    let count = e.reduce(ReduceOp::Sum, weight, vec![], false)?;
    let count = e.max(count, one)?;
    let mean = e.div(total, count)?;
    e.unary(UnaryOp::Neg, mean)
}

/// `(labels == IGNORE_INDEX, weight)`: which positions are not scored, and an f32 weight
/// that is 1 where a position is scored and 0 elsewhere. `yt` is the labels' type.
fn scored_positions(
    e: &mut Emit,
    labels: ValueRef,
    yt: &TensorType,
) -> Result<(ValueRef, ValueRef), TrainError> {
    let ignore = e.fill(IGNORE_INDEX as f64, TensorType::new(yt.dtype, vec![]))?;
    let skipped = e.binary(BinaryOp::Equal, labels, ignore)?;
    let zero = e.scalar(0.0)?;
    let one = e.scalar(1.0)?;
    let weight = e.select(skipped, zero, one)?;
    Ok((skipped, weight))
}

/// The mean of `rows` (`f32` of the labels' shape) over the positions whose label is not
/// [`IGNORE_INDEX`], 0 when none is: the masked-LM reduction, for terms other than the
/// cross-entropy (the soft loss of distillation over the scored positions).
pub fn masked_mean(e: &mut Emit, rows: ValueRef, labels: ValueRef) -> Result<ValueRef, TrainError> {
    let yt = e.ty(labels)?;
    let rt = e.ty(rows)?;
    if !yt.dtype.is_int() || rt.shape != yt.shape {
        return Err(TrainError::LossOperand {
            what: "labels".into(),
            want: format!("token ids of shape {}", rt.shape),
            found: yt.to_string(),
        });
    }
    let (_, weight) = scored_positions(e, labels, &yt)?;
    let one = e.scalar(1.0)?;
    let scored = e.mul(rows, weight)?;
    let total = e.reduce(ReduceOp::Sum, scored, vec![], false)?;
    let count = e.reduce(ReduceOp::Sum, weight, vec![], false)?;
    let count = e.max(count, one)?;
    e.div(total, count)
}

/// Mean squared error `mean((a − b)²)` of two values of one float type (regression, and
/// the hidden-state distillation loss between student and teacher activations).
pub fn mean_squared_error(e: &mut Emit, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
    let at = float_of(e, a)?;
    let bt = e.ty(b)?;
    if at != bt {
        return Err(TrainError::LossOperand {
            what: "target".into(),
            want: at.to_string(),
            found: bt.to_string(),
        });
    }
    let d = e.sub(a, b)?;
    let sq = e.mul(d, d)?;
    e.mean_all(sq)
}

/// How soft targets from a teacher are compared with the student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftLoss {
    /// `KL(p_t ‖ p_s) = Σ p_t·(log p_t − log p_s)` (Hinton et al.; PyTorch's `kl_div` with
    /// `reduction="batchmean"`).
    Kl,
    /// Soft cross-entropy `−Σ p_t·log p_s`: the KL plus the teacher's entropy, which has no
    /// gradient with respect to the student.
    SoftCrossEntropy,
    /// Jensen–Shannon divergence `½·KL(p_t ‖ m) + ½·KL(p_s ‖ m)`, `m = (p_t + p_s)/2`:
    /// symmetric and bounded by ln 2, the soft loss of SSLD (PaddleClas's `JSDivLoss`).
    Js,
}

/// Distillation loss between `student` and `teacher` logits of one type `f32[..., C]` at
/// temperature `t`: the softmaxes of `logits / t` compared by `kind`, summed over classes,
/// averaged over the other dims and scaled by `t²` so its gradient keeps the magnitude of
/// the hard loss as `t` changes.
pub fn distillation(
    e: &mut Emit,
    student: ValueRef,
    teacher: ValueRef,
    temperature: f64,
    kind: SoftLoss,
) -> Result<ValueRef, TrainError> {
    let per_row = distillation_rows(e, student, teacher, temperature, kind)?;
    let mean = e.mean_all(per_row)?;
    e.scale(mean, temperature * temperature)
}

/// [`distillation`] before the mean and the `t²`: the soft loss of each row (summed over
/// the classes), `f32[...]` — for losses that weight the rows (masked LM: scored positions).
pub fn distillation_rows(
    e: &mut Emit,
    student: ValueRef,
    teacher: ValueRef,
    temperature: f64,
    kind: SoftLoss,
) -> Result<ValueRef, TrainError> {
    let st = float_of(e, student)?;
    let tt = e.ty(teacher)?;
    if st != tt {
        return Err(TrainError::LossOperand {
            what: "teacher logits".into(),
            want: st.to_string(),
            found: tt.to_string(),
        });
    }
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(TrainError::Config {
            message: format!("distillation temperature = {temperature} must be positive"),
        });
    }
    let inv = 1.0 / temperature;
    let s = e.scale(student, inv)?;
    let t = e.scale(teacher, inv)?;
    let log_ps = e.op(Op::LogSoftmax { axis: -1 }, vec![s], "student_logp")?;
    let log_pt = e.op(Op::LogSoftmax { axis: -1 }, vec![t], "teacher_logp")?;
    let pt = e.unary(UnaryOp::Exp, log_pt)?;
    let per_class = match kind {
        SoftLoss::Kl => {
            let d = e.sub(log_pt, log_ps)?;
            e.mul(pt, d)?
        }
        SoftLoss::SoftCrossEntropy => {
            let m = e.mul(pt, log_ps)?;
            e.unary(UnaryOp::Neg, m)?
        }
        SoftLoss::Js => {
            // log m = logaddexp(log p_t, log p_s) − ln 2, from the log-probabilities so a
            // class whose probability underflows in one model still has a finite log m.
            let hi = e.max(log_pt, log_ps)?;
            let (dt, ds) = (e.sub(log_pt, hi)?, e.sub(log_ps, hi)?);
            let (et, es) = (e.unary(UnaryOp::Exp, dt)?, e.unary(UnaryOp::Exp, ds)?);
            let sum = e.add(et, es)?;
            let log_sum = e.unary(UnaryOp::Log, sum)?;
            let log_m = e.add(hi, log_sum)?;
            let log_m = e.offset(log_m, -std::f64::consts::LN_2)?;
            let ps = e.unary(UnaryOp::Exp, log_ps)?;
            let kt = e.sub(log_pt, log_m)?;
            let ks = e.sub(log_ps, log_m)?;
            let (kt, ks) = (e.mul(pt, kt)?, e.mul(ps, ks)?);
            let both = e.add(kt, ks)?;
            e.scale(both, 0.5)?
        }
    };
    e.reduce(ReduceOp::Sum, per_class, vec![-1], false)
}

/// The types of `logits` (f32 of rank ≥ 1) and `labels` (integer ids of the logits' shape
/// without the class axis; `what` names them in the error).
fn class_ids(
    e: &Emit,
    logits: ValueRef,
    labels: ValueRef,
    what: &str,
) -> Result<(TensorType, TensorType), TrainError> {
    let lt = float_of(e, logits)?;
    let yt = e.ty(labels)?;
    let mut want = lt.shape.0.clone();
    want.pop();
    if !yt.dtype.is_int() || yt.shape.0 != want {
        return Err(TrainError::LossOperand {
            what: "labels".into(),
            want: format!("{what} {}", TensorType::new(DType::I64, want)),
            found: yt.to_string(),
        });
    }
    Ok((lt, yt))
}

/// The type of `v`, which must be f32 with at least one dim.
fn float_of(e: &Emit, v: ValueRef) -> Result<TensorType, TrainError> {
    let t = e.ty(v)?;
    if t.dtype != DType::F32 || t.rank() == 0 {
        return Err(TrainError::LossOperand {
            what: "prediction".into(),
            want: "f32 of rank ≥ 1".into(),
            found: t.to_string(),
        });
    }
    Ok(t)
}
