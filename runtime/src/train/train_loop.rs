//! The loop: batch, learning rate, step, log; evaluation every K steps; checkpoints.
//!
//! Evaluation runs the *step graph* through [`StepRunner::evaluate`] — inference semantics,
//! `lr = 0`, state updates discarded — and scores the logits output (accuracy and
//! cross-entropy computed here, so a padded last batch counts only its real samples). One
//! graph serves both, so there is no second graph to keep in sync with the weights' names.
//! A training-form batch_norm still normalises with the batch's statistics there; a model
//! that needs its running statistics at evaluation is evaluated with an inference graph
//! (`oar run`) on the saved weights.

use super::metrics::{EvalRecord, Observer, StepRecord, Summary};
use super::{StepRunner, TrainError};
use crate::data::{eval_batches, Batch, Dataset, Loader};
use crate::io::checkpoint::{save_checkpoint, Checkpoint};
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
}

/// What changes as training goes: a checkpoint holds exactly this.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    pub loader: Loader,
    pub weights: Weights,
    pub best_eval_accuracy: Option<f64>,
}

/// A step's inputs: the batch, then `lr` and `step` as f32 scalars.
fn step_inputs(batch: Batch, lr: f64, step: u64) -> Vec<HostTensor> {
    vec![
        batch.images,
        batch.labels,
        HostTensor::f32(vec![], vec![lr as f32]),
        HostTensor::f32(vec![], vec![step as f32]),
    ]
}

/// Runs `state` forward to `cfg.steps`. `lr` maps the 1-based step to its learning rate.
pub fn train(
    runner: &mut dyn StepRunner,
    state: &mut TrainState,
    val: Option<&Dataset>,
    lr: &dyn Fn(u64) -> f64,
    cfg: &LoopConfig,
    obs: &mut dyn Observer,
) -> Result<Summary, TrainError> {
    let start = Instant::now();
    let first = state.step;
    let mut final_loss = None;
    let mut last_eval = None;
    let val = val.filter(|v| !v.is_empty() && cfg.eval_every.is_some());
    while state.step < cfg.steps {
        let step = state.step + 1;
        let t0 = Instant::now();
        let batch = state.loader.next_batch();
        let n = batch.labels.numel();
        let rate = lr(step);
        let out = runner.run(&step_inputs(batch, rate, step), &mut state.weights, step)?;
        state.step = step;
        final_loss = Some(out.loss);
        obs.on_step(&StepRecord {
            step,
            epoch: state.loader.position().epoch,
            loss: out.loss,
            skipped: out.skipped,
            lr: rate,
            samples_per_sec: n as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        })?;
        let last = step == cfg.steps;
        if let (Some(v), Some(k)) = (val, cfg.eval_every) {
            if step.is_multiple_of(k.max(1)) || last {
                let batch = state.loader.config().batch;
                let r = evaluate(runner, state, v, batch)?;
                let best = state.best_eval_accuracy.unwrap_or(f64::NEG_INFINITY);
                state.best_eval_accuracy = Some(best.max(r.eval_accuracy));
                obs.on_eval(&r)?;
                last_eval = Some(r);
            }
        }
        if let Some(p) = &cfg.save {
            if step.is_multiple_of(p.every.max(1)) || last {
                let ck = Checkpoint {
                    step,
                    loader: state.loader.position(),
                    seed: cfg.seed,
                    config: cfg.config.clone(),
                    best_eval_accuracy: state.best_eval_accuracy,
                    weights: state.weights.clone(),
                };
                let dir = save_checkpoint(&p.dir, &ck, p.keep)?;
                obs.on_checkpoint(step, &dir)?;
            }
        }
    }
    Ok(Summary {
        steps: state.step,
        steps_run: state.step - first,
        final_loss,
        best_eval_accuracy: state.best_eval_accuracy,
        last_eval,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Accuracy and mean cross-entropy of the step graph's logits on `data`, in batches of
/// `batch`, without changing the weights.
pub fn evaluate(
    runner: &mut dyn StepRunner,
    state: &TrainState,
    data: &Dataset,
    batch: usize,
) -> Result<EvalRecord, TrainError> {
    let augment = &state.loader.config().augment;
    let (mut correct, mut loss_sum, mut count) = (0usize, 0f64, 0usize);
    for (b, real) in eval_batches(data, batch, augment) {
        let labels: Vec<i64> = b.labels.as_i64().unwrap_or_default().to_vec();
        let out = runner.evaluate(&step_inputs(b, 0.0, state.step), &state.weights, state.step)?;
        let logits = out.logits.as_f32().unwrap_or_default();
        let classes = out.logits.shape.get(1).copied().unwrap_or(0);
        if classes == 0 || logits.len() < real * classes {
            return Err(TrainError::Contract(format!(
                "evaluation: logits {} do not hold {real} rows of class scores",
                out.logits.describe()
            )));
        }
        for (row, &label) in logits.chunks_exact(classes).zip(&labels).take(real) {
            let (arg, max) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(ai, am), (i, &v)| {
                        if v > am {
                            (i, v)
                        } else {
                            (ai, am)
                        }
                    });
            correct += usize::from(arg as i64 == label);
            // Cross-entropy via log-sum-exp in f64.
            let lse = row
                .iter()
                .map(|&v| ((v - max) as f64).exp())
                .sum::<f64>()
                .ln()
                + max as f64;
            let picked = row.get(label as usize).copied().unwrap_or(f32::NAN) as f64;
            loss_sum += lse - picked;
        }
        count += real;
    }
    let denom = count.max(1) as f64;
    Ok(EvalRecord {
        step: state.step,
        eval_accuracy: correct as f64 / denom,
        eval_loss: loss_sum / denom,
        samples: count,
    })
}
