//! The compiled training step: a step graph (the contract of `oar_runtime::train`) built by
//! the LLVM backend into one program whose weights, optimizer slots and running statistics
//! live in the executor between steps. The reference interpreter stays the oracle: a
//! non-finite loss is diagnosed by re-running the step there.

use crate::jit::{CompileError, JitModel};
use oar_ir::{Dim, Graph};
use oar_runtime::interp::{first_non_finite, RunOptions};
use oar_runtime::train::{StepContract, StepOutputs, StepRunner, TrainError};
use oar_runtime::{HostTensor, Weights};
use std::collections::BTreeMap;

/// Why a compiled runner could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Contract(#[from] TrainError),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// An inference graph compiled for one input shape, for evaluation.
struct EvalModel {
    shapes: Vec<Vec<usize>>,
    model: JitModel,
}

/// Runs training steps through the LLVM backend ([`StepRunner`]).
///
/// The weights live in the step's executor. After each step the updated state (new
/// parameters, slots, running statistics: only what the step writes) is copied back into
/// the caller's [`Weights`], which the loop saves and evaluates from; with
/// [`CompiledRunner::lazy`] that copy waits for [`StepRunner::flush`] instead, for loops
/// that call it before they read the weights.
pub struct CompiledRunner {
    graph: Graph,
    step: JitModel,
    seed: u64,
    threads: usize,
    eval_graph: Option<Graph>,
    eval: Option<EvalModel>,
    lazy: bool,
    /// Whether the executor holds state newer than the caller's weights (lazy mode).
    dirty: bool,
}

impl CompiledRunner {
    /// Compiles `graph` (a step graph with static shapes) and loads `weights` (the model's
    /// parameters and the optimizer's initial slots) into its executor.
    pub fn new(
        graph: Graph,
        weights: &Weights,
        seed: u64,
        threads: usize,
    ) -> Result<CompiledRunner, RunnerError> {
        StepContract::check(&graph)?;
        let step = JitModel::new(&graph, &BTreeMap::new(), weights, threads)?;
        Ok(CompiledRunner {
            graph,
            step,
            seed,
            threads,
            eval_graph: None,
            eval: None,
            lazy: false,
            dirty: false,
        })
    }

    /// Evaluates with `graph`, the inference model the step was built from (model inputs
    /// in, logits out, the same parameter names), compiled for each evaluation batch shape.
    pub fn with_eval_graph(mut self, graph: Graph) -> CompiledRunner {
        self.eval_graph = Some(graph);
        self
    }

    /// Keeps the updated state in the executor until [`StepRunner::flush`].
    pub fn lazy(mut self, lazy: bool) -> CompiledRunner {
        self.lazy = lazy;
        self
    }

    /// The step's compiled model (its executor: weights by name, profiles).
    pub fn model(&mut self) -> &mut JitModel {
        &mut self.step
    }

    /// Bytes the compiled step holds (its peak, all allocated at once): the storage plan's
    /// buffers — activations kept for the backward, gradients, weights, optimizer slots,
    /// running statistics, dropout masks — plus each thread's scratch.
    pub fn planned_bytes(&mut self) -> usize {
        let threads = self.threads.max(1);
        let p = self.step.executor().program();
        p.storage_bytes().iter().sum::<usize>() + p.scratch_bytes * threads
    }

    /// The weights as the executor holds them now.
    pub fn current_weights(&mut self) -> Weights {
        self.step.executor().weights()
    }

    fn run_err(step: u64, e: impl std::fmt::Display) -> TrainError {
        TrainError::Contract(format!("step {step}: the compiled step failed: {e}"))
    }

    /// The compiled eval model for inputs of these shapes (recompiled when they change:
    /// the last, smaller validation batch), loaded with `weights`.
    fn eval_model(
        &mut self,
        inputs: &[HostTensor],
        weights: &Weights,
        step: u64,
    ) -> Result<Option<&mut JitModel>, TrainError> {
        let Some(g) = &self.eval_graph else {
            return Ok(None);
        };
        let n = g.inputs().len().min(inputs.len());
        let shapes: Vec<Vec<usize>> = inputs[..n].iter().map(|t| t.shape.clone()).collect();
        if self.eval.as_ref().is_some_and(|e| e.shapes == shapes) {
            if let Some(e) = self.eval.as_mut() {
                e.model
                    .executor()
                    .set_weights(weights)
                    .map_err(|e| Self::run_err(step, e))?;
            }
        } else {
            let mut bindings = BTreeMap::new();
            for (k, &id) in g.inputs().iter().enumerate().take(n) {
                for (d, dim) in g.node(id).outputs[0].shape.0.iter().enumerate() {
                    // A plain symbol (`N`) binds to the input's size there.
                    let syms = dim.symbols();
                    if let ([name], Some(&v)) = (syms.as_slice(), shapes[k].get(d)) {
                        if *dim == Dim::sym(name) {
                            bindings.insert(name.to_string(), v as u64);
                        }
                    }
                }
            }
            let model = JitModel::new(g, &bindings, weights, self.threads)
                .map_err(|e| Self::run_err(step, e))?;
            self.eval = Some(EvalModel { shapes, model });
        }
        Ok(self.eval.as_mut().map(|e| &mut e.model))
    }
}

impl StepRunner for CompiledRunner {
    fn run(
        &mut self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let exec = self.step.executor();
        exec.set_dropout(Some((self.seed, step)));
        // Every output before the state: loss, logits and any parts of a joint loss.
        let outs = exec
            .run_first(inputs, self.graph.model_outputs().len())
            .map_err(|e| Self::run_err(step, e))?;
        // Loss-scaled (fp16) steps do not compile (no f16 kernels), so none is skipped here.
        let out = StepOutputs::from_outputs(step, outs)?;
        let loss = out.loss;
        if !loss.is_finite() {
            // The state is not committed: the executor and `weights` keep the last step's.
            let current = if self.dirty {
                self.step.executor().weights()
            } else {
                weights.clone()
            };
            let opts = RunOptions::training(self.seed, step);
            let origin = match first_non_finite(&self.graph, inputs, &current, opts) {
                Ok(Some(nf)) => nf.to_string(),
                Ok(None) => "none found by the interpreter on a re-run (the compiled step \
                             and the interpreter disagree)"
                    .into(),
                Err(e) => format!("the diagnostic re-run failed: {e}"),
            };
            return Err(TrainError::NonFinite { step, loss, origin });
        }
        let exec = self.step.executor();
        exec.commit_state();
        if self.lazy {
            self.dirty = true;
        } else {
            for (name, value) in exec.state_values() {
                weights.insert(name, value);
            }
        }
        Ok(out)
    }

    fn evaluate(
        &mut self,
        inputs: &[HostTensor],
        weights: &Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let current = if self.dirty {
            self.step.executor().weights()
        } else {
            weights.clone()
        };
        // The loop passes the step's inputs; the inference graph takes the model's.
        let n = self
            .eval_graph
            .as_ref()
            .map_or(0, |g| g.inputs().len())
            .min(inputs.len());
        if let Some(model) = self.eval_model(inputs, &current, step)? {
            let ins = &inputs[..n];
            let out = model
                .executor()
                .run_first(ins, 1)
                .map_err(|e| Self::run_err(step, e))?;
            return match out.into_iter().next() {
                // The loop scores the logits itself; the inference graph has no loss.
                Some(logits) => Ok(StepOutputs::logits_only(logits)),
                None => Err(TrainError::Contract(
                    "the evaluation graph has no output".into(),
                )),
            };
        }
        // The step graph itself at inference: dropout scales, batch_norm's training form
        // still normalises with batch statistics (as the interpreter), no state committed.
        let exec = self.step.executor();
        exec.set_dropout(None);
        let outs = exec
            .run_first(inputs, 2)
            .map_err(|e| Self::run_err(step, e))?;
        StepOutputs::from_outputs(step, outs)
    }

    fn flush(&mut self, weights: &mut Weights) -> Result<(), TrainError> {
        if self.dirty {
            for (name, value) in self.step.executor().state_values() {
                weights.insert(name, value);
            }
            self.dirty = false;
        }
        Ok(())
    }
}
