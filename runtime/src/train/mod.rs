//! The training loop, independent of how one step executes.
//!
//! A training step is one graph (mode=training) with the contract of
//! [`contract::StepContract`]: inputs are the model inputs, then `labels` (i64`[N]`), `lr`
//! (f32`[]`) and `step` (f32`[]`, 1-based); outputs are `[loss (f32[]), logits ([N, classes])]`
//! followed by the state updates (new parameters, optimizer moments, running statistics)
//! that a run writes back into the [`Weights`]. A [`StepRunner`] executes it: the reference
//! interpreter ([`InterpRunner`]) here, a compiled runner later.
//!
//! [`train_loop::train`] fetches batches from a [`crate::data::BatchSource`] (images or
//! masked-LM text), asks a schedule for
//! the learning rate, runs the step, evaluates on the validation split every K steps, saves
//! checkpoints, and reports to an [`Observer`] (the library prints nothing).

pub mod contract;
pub mod metrics;
pub mod pipeline;
pub mod pipeline_comm;
pub mod schedule;
pub mod train_loop;

pub use contract::StepContract;
pub use metrics::{EvalRecord, JsonlLog, Observer, StepRecord, Summary};
pub use schedule::{Decay, Schedule, SCHEDULE_NAMES};
pub use train_loop::{evaluate, train, LoopConfig, SavePolicy, TrainState};

use crate::interp::{first_non_finite, run_with_options, InterpError, RunOptions};
use crate::io::checkpoint::CheckpointError;
use crate::io::weights::Weights;
use crate::tensor::HostTensor;
use oar_ir::{ExecMode, Graph};

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the training-step graph does not follow the contract: {0}")]
    Contract(String),
    #[error("step {step}: {source}")]
    Run {
        step: u64,
        #[source]
        source: InterpError,
    },
    #[error("step {step}: the loss is {loss}; the first non-finite value: {origin}")]
    NonFinite {
        step: u64,
        loss: f32,
        origin: String,
    },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Log(String),
}

/// What one step returns to the loop: the scalar loss and the logits `[N, classes]`.
#[derive(Debug, Clone)]
pub struct StepOutputs {
    pub loss: f32,
    pub logits: HostTensor,
    /// The step found a non-finite gradient under dynamic loss scaling and left parameters
    /// and optimizer state unchanged (only the loss scale moved); see [`SKIPPED_STATE`].
    pub skipped: bool,
    /// The step's scalar outputs after the logits, in order: the parts of a joint loss (a
    /// distillation step: teacher loss, student loss, distillation term); the loop names
    /// them with [`LoopConfig::loss_parts`]. Empty for a plain step and for evaluation.
    pub parts: Vec<f32>,
}

/// The state value a step with dynamic loss scaling writes: 1 when it skipped its update
/// (non-finite gradients), 0 otherwise. A step graph without it never skips.
pub const SKIPPED_STATE: &str = "loss_scale.skipped";

/// Whether the state updates of a run say the step was skipped.
fn was_skipped(state: &[(String, HostTensor)]) -> bool {
    state
        .iter()
        .find(|(n, _)| n == SKIPPED_STATE)
        .and_then(|(_, t)| t.as_f32().and_then(|v| v.first().copied()))
        .is_some_and(|v| v != 0.0)
}

/// Executes training steps of one graph. Implementations write the step's state updates
/// into `weights`; `evaluate` must leave them untouched.
pub trait StepRunner {
    /// Runs training step `step` (1-based) on `inputs` (model inputs, labels, lr, step) and
    /// writes the updated state into `weights`. A non-finite loss is an error, and then
    /// `weights` is unchanged, except on a step loss scaling skipped
    /// ([`StepOutputs::skipped`]).
    fn run(
        &mut self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError>;

    /// Runs the same graph for evaluation: inference semantics (no dropout), state updates
    /// discarded, `weights` unchanged.
    fn evaluate(
        &mut self,
        inputs: &[HostTensor],
        weights: &Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError>;

    /// Writes state the runner still holds (a compiled runner keeping its weights in its
    /// executor) into `weights`; a loop calls it before it reads them (checkpoints,
    /// evaluation, the end of training). Runners that write every step have nothing to do.
    fn flush(&mut self, weights: &mut Weights) -> Result<(), TrainError> {
        let _ = weights;
        Ok(())
    }
}

/// The reference interpreter as a step runner: `run_with_options` with
/// `RunOptions::training(seed, step)`, so dropout masks are a function of (seed, step, node).
pub struct InterpRunner {
    graph: Graph,
    seed: u64,
    /// An inference graph (model inputs → logits) evaluation runs instead of the step graph.
    eval_graph: Option<Graph>,
}

impl InterpRunner {
    /// A runner for `graph`, which must follow the step contract.
    pub fn new(graph: Graph, seed: u64) -> Result<InterpRunner, TrainError> {
        StepContract::check(&graph)?;
        Ok(InterpRunner {
            graph,
            seed,
            eval_graph: None,
        })
    }

    /// Evaluates with `graph` — the inference model the step was built from: the model
    /// inputs in, the logits as its first output, the same parameter names — so batch_norm
    /// normalises with its running statistics, as a deployed model does.
    pub fn with_eval_graph(mut self, graph: Graph) -> InterpRunner {
        self.eval_graph = Some(graph);
        self
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The seed of the run's dropout stream.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl StepOutputs {
    /// A step's outputs 0 and 1 as (loss, logits), then its leading f32 scalar outputs as
    /// [`StepOutputs::parts`], not skipped; a graph without loss and logits is a contract
    /// error naming `step`. Every runner reads its outputs through this.
    pub fn from_outputs(step: u64, outputs: Vec<HostTensor>) -> Result<StepOutputs, TrainError> {
        let found = outputs.len();
        let scalar = |t: &HostTensor| match t.as_f32() {
            Some(&[v]) => Some(v),
            _ => None,
        };
        let mut it = outputs.into_iter();
        let loss = it
            .next()
            .as_ref()
            .and_then(|t| t.as_f32()?.first().copied());
        match (loss, it.next()) {
            (Some(loss), Some(logits)) => Ok(StepOutputs {
                loss,
                logits,
                skipped: false,
                parts: it.map_while(|t| scalar(&t)).collect(),
            }),
            _ => Err(TrainError::Contract(format!(
                "step {step}: expected outputs (loss f32[], logits), found {found} output(s)"
            ))),
        }
    }

    /// An evaluation's outputs: the logits alone (the loop scores them; no loss).
    pub fn logits_only(logits: HostTensor) -> StepOutputs {
        StepOutputs {
            loss: f32::NAN,
            logits,
            skipped: false,
            parts: Vec::new(),
        }
    }
}

impl StepRunner for InterpRunner {
    fn run(
        &mut self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let opts = RunOptions::training(self.seed, step);
        let r = run_with_options(&self.graph, inputs, weights, opts)
            .map_err(|source| TrainError::Run { step, source })?;
        let mut out = StepOutputs::from_outputs(step, r.outputs)?;
        // A skipped step is what loss scaling does with an overflow, not an error: the
        // graph kept the parameters and lowered the scale.
        out.skipped = was_skipped(&r.state);
        if !out.loss.is_finite() && !out.skipped {
            // Re-run keeping every value to name where the first NaN or inf appeared.
            let origin = match first_non_finite(&self.graph, inputs, weights, opts) {
                Ok(Some(nf)) => nf.to_string(),
                Ok(None) => "none found on a re-run (the step is not deterministic)".into(),
                Err(e) => format!("the diagnostic re-run failed: {e}"),
            };
            return Err(TrainError::NonFinite {
                step,
                loss: out.loss,
                origin,
            });
        }
        for (name, value) in r.state {
            weights.insert(name, value);
        }
        Ok(out)
    }

    fn evaluate(
        &mut self,
        inputs: &[HostTensor],
        weights: &Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let opts = RunOptions {
            mode: ExecMode::Inference,
            seed: self.seed,
            step,
            batch_shard: 0,
        };
        let Some(eval) = &self.eval_graph else {
            let r = run_with_options(&self.graph, inputs, weights, opts)
                .map_err(|source| TrainError::Run { step, source })?;
            return StepOutputs::from_outputs(step, r.outputs);
        };
        let n = eval.inputs().len().min(inputs.len());
        let r = run_with_options(eval, &inputs[..n], weights, opts)
            .map_err(|source| TrainError::Run { step, source })?;
        match r.outputs.into_iter().next() {
            // The loop scores the logits itself; the inference graph has no loss.
            Some(logits) => Ok(StepOutputs::logits_only(logits)),
            None => Err(TrainError::Contract(
                "the evaluation graph has no output".into(),
            )),
        }
    }
}
