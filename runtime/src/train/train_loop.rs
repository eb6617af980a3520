//! The loop: batch, learning rate, step, log; evaluation every K steps; checkpoints.
//!
//! The loop is generic over the data stream ([`BatchSource`]): the image [`Loader`] or the
//! masked-LM [`crate::data::MlmLoader`]. Evaluation runs [`StepRunner::evaluate`] —
//! inference semantics (no dropout), `lr = 0`, state updates discarded; with an inference
//! graph attached, that graph — and scores the logits output here: accuracy (argmax) and
//! cross-entropy, over the rows whose label is not negative. An image batch has one row per
//! sample; a masked-LM batch `[N, seq]` one per position, of which only the masked ones carry
//! a label (−100 elsewhere), so the text figures are token accuracy and the validation MLM
//! loss, the mean over every scored position of the validation split — the same quantity as
//! the step's masked-LM loss, without dropout. Scoring the logits in the loop (rather than
//! reading the step graph's loss output) lets a padded last batch count only its real samples
//! and needs no second loss graph. A training-form batch_norm evaluated through the step graph
//! still normalises with the batch's statistics; a model that needs its running statistics
//! is evaluated with its inference graph (`InterpRunner::with_eval_graph`).

use super::metrics::{EvalRecord, Observer, StepRecord, Summary};
use super::{StepRunner, TrainError};
use crate::data::{BatchSource, Loader, StepBatch};
use crate::io::checkpoint::{save_checkpoint, BackgroundSaver, Checkpoint};
use crate::io::weights::Weights;
use crate::tensor::HostTensor;
use std::path::PathBuf;
use std::time::Instant;

/// Where and how often to save checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SavePolicy {
    /// The checkpoint root (`step-*` directories go under it).
    pub dir: PathBuf,
    /// Save every this many steps (and after the last step).
    pub every: u64,
    /// Keep the newest this many checkpoints (0: all).
    pub keep: usize,
    /// Write checkpoints on a background thread while training continues (one save in
    /// flight at most; the loop's end waits for it, and its errors end the run).
    pub background: bool,
    /// Whether this process writes. Every rank of a data-parallel run meets each save point
    /// (the runner's `flush` may be collective, e.g. gathering ZeRO partitions), but only
    /// rank 0 writes the replicated state.
    pub write: bool,
}

/// How long to train and what to do on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// Train until this many steps are done (a resumed run counts the earlier ones).
    pub steps: u64,
    /// Evaluate every this many steps (and after the last step) when there is a validation
    /// split.
    pub eval_every: Option<u64>,
    pub save: Option<SavePolicy>,
    /// The run's seed, recorded in checkpoints.
    pub seed: u64,
    /// The run's settings, recorded in checkpoints (and checked by the CLI on resume).
    pub config: serde_json::Value,
    /// Names of the step's loss parts ([`crate::train::StepOutputs::parts`]) in the step
    /// records, e.g. `teacher_loss`, `student_loss`, `distill_loss`; parts beyond these
    /// names are not reported.
    pub loss_parts: Vec<String>,
}

/// What changes as training goes: a checkpoint holds exactly this (the loader as its
/// position).
#[derive(Debug, Clone)]
pub struct TrainState<L = Loader> {
    /// Steps completed.
    pub step: u64,
    pub loader: L,
    pub weights: Weights,
    pub best_eval_accuracy: Option<f64>,
}

/// A step's inputs: the model inputs, the labels, then `lr` and `step` as f32 scalars.
fn step_inputs(batch: StepBatch, lr: f64, step: u64) -> Vec<HostTensor> {
    let mut v = batch.inputs;
    v.push(batch.labels);
    v.push(HostTensor::f32(vec![], vec![lr as f32]));
    v.push(HostTensor::f32(vec![], vec![step as f32]));
    v
}

/// Runs `state` forward to `cfg.steps`. `lr` maps the 1-based step to its learning rate.
pub fn train<L: BatchSource>(
    runner: &mut dyn StepRunner,
    state: &mut TrainState<L>,
    val: Option<&L::Validation>,
    lr: &dyn Fn(u64) -> f64,
    cfg: &LoopConfig,
    obs: &mut dyn Observer,
) -> Result<Summary, TrainError> {
    let start = Instant::now();
    let first = state.step;
    let mut final_loss = None;
    let mut last_eval = None;
    let val = val.filter(|v| L::validation_len(v) > 0 && cfg.eval_every.is_some());
    let mut saver = BackgroundSaver::new();
    while state.step < cfg.steps {
        let step = state.step + 1;
        let t0 = Instant::now();
        let batch = state.loader.next_step_batch();
        let (n, tokens) = (state.loader.batch_size(), batch.tokens);
        let rate = lr(step);
        let out = runner.run(&step_inputs(batch, rate, step), &mut state.weights, step)?;
        state.step = step;
        final_loss = Some(out.loss);
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        obs.on_step(&StepRecord {
            step,
            epoch: state.loader.data_position().epoch,
            loss: out.loss,
            skipped: out.skipped,
            lr: rate,
            samples_per_sec: n as f64 / secs,
            tokens_per_sec: tokens.map(|t| t as f64 / secs),
            losses: cfg.loss_parts.iter().cloned().zip(out.parts).collect(),
        })?;
        let last = step == cfg.steps;
        if let (Some(v), Some(k)) = (val, cfg.eval_every) {
            if step.is_multiple_of(k.max(1)) || last {
                // A lazy runner holds the newest state; evaluation reads `state.weights`.
                runner.flush(&mut state.weights)?;
                let r = evaluate(runner, state, v, state.loader.batch_size())?;
                let best = state.best_eval_accuracy.unwrap_or(f64::NEG_INFINITY);
                state.best_eval_accuracy = Some(best.max(r.eval_accuracy));
                obs.on_eval(&r)?;
                last_eval = Some(r);
            }
        }
        if let Some(p) = &cfg.save {
            if step.is_multiple_of(p.every.max(1)) || last {
                runner.flush(&mut state.weights)?;
                if p.write {
                    let ck = Checkpoint {
                        step,
                        loader: state.loader.data_position(),
                        seed: cfg.seed,
                        config: cfg.config.clone(),
                        best_eval_accuracy: state.best_eval_accuracy,
                        weights: state.weights.clone(),
                    };
                    if p.background {
                        if let Some((s, dir)) = saver.submit(&p.dir, ck, p.keep)? {
                            obs.on_checkpoint(s, &dir)?;
                        }
                    } else {
                        let dir = save_checkpoint(&p.dir, &ck, p.keep)?;
                        obs.on_checkpoint(step, &dir)?;
                    }
                }
                obs.on_save_point(step)?;
            }
        }
    }
    if let Some((s, dir)) = saver.wait()? {
        obs.on_checkpoint(s, &dir)?;
    }
    // The caller reads the final weights (saving them, evaluating both models).
    runner.flush(&mut state.weights)?;
    Ok(Summary {
        steps: state.step,
        steps_run: state.step - first,
        final_loss,
        best_eval_accuracy: state.best_eval_accuracy,
        last_eval,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Accuracy and mean cross-entropy of the logits on `data` over the scored rows (see the
/// module docs), in batches of `batch`, without changing the weights.
pub fn evaluate<L: BatchSource>(
    runner: &mut dyn StepRunner,
    state: &TrainState<L>,
    data: &L::Validation,
    batch: usize,
) -> Result<EvalRecord, TrainError> {
    let (mut correct, mut loss_sum, mut scored, mut count) = (0usize, 0f64, 0usize, 0usize);
    let mut text = false;
    for (b, real) in state.loader.validation_batches(data, batch) {
        text |= b.tokens.is_some();
        let labels: Vec<i64> = b.labels.as_i64().unwrap_or_default().to_vec();
        let rows_per_sample = labels.len() / b.labels.shape.first().copied().unwrap_or(1).max(1);
        let out = runner.evaluate(&step_inputs(b, 0.0, state.step), &state.weights, state.step)?;
        let logits = out.logits.as_f32().unwrap_or_default();
        let classes = out.logits.shape.last().copied().unwrap_or(0);
        let rows = real * rows_per_sample;
        if classes == 0 || logits.len() < rows * classes {
            return Err(TrainError::Contract(format!(
                "evaluation: logits {} do not hold {rows} rows of class scores",
                out.logits.describe()
            )));
        }
        for (row, &label) in logits.chunks_exact(classes).zip(&labels).take(rows) {
            if label < 0 {
                continue; // not scored (−100: an unmasked position)
            }
            let (c, l) = score_row(row, label);
            correct += usize::from(c);
            loss_sum += l;
            scored += 1;
        }
        count += real;
    }
    let denom = scored.max(1) as f64;
    Ok(EvalRecord {
        step: state.step,
        eval_accuracy: correct as f64 / denom,
        eval_loss: loss_sum / denom,
        samples: count,
        tokens: text.then_some(scored),
    })
}

/// Whether `label` is the row's argmax, and the row's cross-entropy at `label`
/// (log-sum-exp in f64).
fn score_row(row: &[f32], label: i64) -> (bool, f64) {
    let (arg, max) = row
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(ai, am), (i, &v)| {
            if v > am {
                (i, v)
            } else {
                (ai, am)
            }
        });
    let lse = row
        .iter()
        .map(|&v| ((v - max) as f64).exp())
        .sum::<f64>()
        .ln()
        + max as f64;
    let picked = row.get(label as usize).copied().unwrap_or(f32::NAN) as f64;
    (arg as i64 == label, lse - picked)
}
