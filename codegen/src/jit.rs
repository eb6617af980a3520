//! Graph → a runnable in-process model: kernels built, JIT-compiled, bound to an executor.

use crate::cpu::{host_cpu, jit, CpuError, JitKernels};
use crate::kernel::{build_kernels, BuildError, CpuModel};
use oar_ir::Graph;
use oar_runtime::comm::Communicator;
use oar_runtime::program::{ExecError, Executor};
use oar_runtime::{HostTensor, Weights};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a graph could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// A graph compiled for this CPU, with its weights loaded.
pub struct JitModel {
    exec: Executor,
    // Declared after `exec`: the kernels' code must outlive the executor that calls it.
    _code: JitKernels,
}

impl JitModel {
    /// Compiles `g` (symbols bound by `bindings`) for this CPU and loads `weights`.
    pub fn new(
        g: &Graph,
        bindings: &BTreeMap<String, u64>,
        weights: &Weights,
        threads: usize,
    ) -> Result<JitModel, CompileError> {
        Self::with_blocking_of(g, bindings, weights, threads, &host_cpu()?)
    }

    /// As [`JitModel::new`], with the GEMM blocking chosen for `cpu` (the code still runs
    /// on this CPU's instruction set): how other CPUs' tilings are tested here.
    pub fn with_blocking_of(
        g: &Graph,
        bindings: &BTreeMap<String, u64>,
        weights: &Weights,
        threads: usize,
        cpu: &CpuModel,
    ) -> Result<JitModel, CompileError> {
        let compiled = build_kernels(g, bindings, cpu)?;
        let code = jit(&compiled)?;
        let exec = Executor::new(compiled.program, code.kernels.clone(), weights, threads)?;
        Ok(JitModel { exec, _code: code })
    }

    /// Compiles one rank's graph (collectives, send/recv) for this CPU; its communicating
    /// steps go through `comm`.
    pub fn on_rank(
        g: &Graph,
        bindings: &BTreeMap<String, u64>,
        weights: &Weights,
        threads: usize,
        comm: Arc<dyn Communicator>,
    ) -> Result<JitModel, CompileError> {
        let compiled = build_kernels(g, bindings, &host_cpu()?)?;
        let code = jit(&compiled)?;
        let exec = Executor::with_communicator(
            compiled.program,
            code.kernels.clone(),
            weights,
            threads,
            comm,
        )?;
        Ok(JitModel { exec, _code: code })
    }

    pub fn run(&mut self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, CompileError> {
        Ok(self.exec.run(inputs)?)
    }

    /// The executor, for runs on inputs bound in place ([`Executor::input_f32_mut`],
    /// [`Executor::run_bound`], [`Executor::output_f32`]).
    pub fn executor(&mut self) -> &mut Executor {
        &mut self.exec
    }
}

impl JitModel {
    /// Per-kernel wall times of one run, slowest first.
    pub fn profile(&mut self, inputs: &[HostTensor]) -> Result<Vec<(String, f64)>, CompileError> {
        let (_, mut t) = self.exec.profile(inputs)?;
        t.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(t)
    }
}
