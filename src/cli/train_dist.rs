//! The distributed part of `oar train`: `--dp N` under `mpirun -n N` (or `oar launch`).
//!
//! Every rank loads the same data and draws the same global batches; its `DpRunner` takes
//! the rank's contiguous `1/N` slice of each batch, runs the data-parallel step
//! (`oar_passes::training::data_parallel`: gradients combined across ranks before clipping
//! and the update) in the interpreter over `MpiComm`; the step's loss is the global batch's,
//! and evaluation runs the single-process inference graph, so the loop's metrics are what
//! one process would report. Rank 0
//! alone draws the progress bar and prints the summary; `--log run.jsonl` is rank 0's file,
//! rank r > 0 writes `run.rank<r>.jsonl` beside it.
//!
//! Checkpoints under `--dp`: every rank holds the same weights, so rank 0 alone writes them
//! and every rank meets at a barrier after each save step ([`SyncObserver`]): no rank starts
//! the next step before the checkpoint exists, so a job killed at any moment restarts from a
//! checkpoint no rank has run more than one save interval past. Under `oar launch
//! --max-restarts`, each rank also writes a heartbeat file per step ([`HEARTBEAT_ENV`]).

use super::TrainArgs;
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::Graph;
use oar::passes::training::data_parallel::{build_data_parallel_step, DataParallel};
use oar::passes::training::zero::{gather_full_state, partition_state, ZeroLayout};
use oar::passes::training::TrainConfig;
use oar::runtime::comm::{launched_by_mpi, Communicator, MpiComm};
use oar::runtime::interp::{run_with_options_on_rank, RunOptions};
use oar::runtime::train::{
    EvalRecord, InterpRunner, Observer, StepOutputs, StepRecord, StepRunner, TrainError,
};
use oar::runtime::{HostTensor, Weights};
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug, Clone, Default)]
pub struct DistArgs {
    /// Data-parallel ranks: run N processes under `mpirun -n N` (`oar launch -n N -- train
    /// MODEL ... --dp N`); each takes 1/N of every --batch (which N must divide).
    #[arg(long, value_name = "N")]
    pub dp: Option<u64>,
    /// ZeRO stage under --dp: 1 shards the optimizer state across the ranks, 2 the
    /// gradients too, 3 the parameters too (each rank keeps 1/N; checkpoints still hold the
    /// full state).
    #[arg(long, value_name = "STAGE", requires = "dp", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub zero: Option<u8>,
    /// Tensor-parallel ranks (Megatron splits of a zoo ERNIE's attention and feed-forward
    /// weights, see docs/distributed.md): run N processes under `mpirun -n N`, or N·M with
    /// `--dp M` (a dp × tp mesh, tensor ranks innermost); with `--pp P`, each pipeline
    /// stage split over N ranks (a dp × pp × tp grid, tensor ranks innermost).
    #[arg(long, value_name = "N")]
    pub tp: Option<u64>,
    /// Pipeline-parallel ranks (a zoo ERNIE's layers cut into N stages, see
    /// docs/distributed.md): run N processes under `mpirun -n N`, or N·M with `--dp M`
    /// (a dp × pp grid, pipeline ranks innermost).
    #[arg(long, value_name = "N")]
    pub pp: Option<u64>,
    /// Micro-batches per step under --pp (default: the pp degree); they must divide each
    /// rank's share of --batch.
    #[arg(long, value_name = "M", requires = "pp")]
    pub micro_batches: Option<u64>,
    /// Pipeline schedule under --pp: gpipe, 1f1b or interleaved (with --chunks).
    #[arg(long, value_name = "NAME", default_value = "1f1b")]
    pub pp_schedule: String,
    /// Model chunks per pipeline rank under --pp-schedule interleaved (virtual stages).
    #[arg(long, value_name = "V", requires = "pp")]
    pub chunks: Option<u64>,
    /// The model for one rank's share of the batch and the step's configuration, from the
    /// model's front end ([`prepare`]); each rank builds its step from them ([`runner`]).
    #[arg(skip)]
    pub(super) step: OnceCell<(Graph, TrainConfig)>,
}

impl DistArgs {
    /// The data-parallel degree when above one.
    pub fn degree(&self) -> Option<u64> {
        self.dp.filter(|&d| d > 1)
    }

    /// The tensor-parallel degree when above one.
    pub fn tp_degree(&self) -> Option<u64> {
        self.tp.filter(|&t| t > 1)
    }

    /// The pipeline-parallel degree when above one.
    pub fn pp_degree(&self) -> Option<u64> {
        self.pp.filter(|&p| p > 1)
    }

    /// Micro-batches per step under --pp.
    pub fn micro(&self) -> u64 {
        self.micro_batches.or(self.pp).unwrap_or(1).max(1)
    }

    /// Whether the run has more than one rank.
    pub fn distributed(&self) -> bool {
        self.degree().is_some() || self.tp_degree().is_some() || self.pp_degree().is_some()
    }
}

/// This process's place in a data- and/or tensor-parallel run.
pub struct Dist {
    pub comm: Arc<MpiComm>,
    pub rank: u64,
    pub dp: u64,
    /// Tensor-parallel degree (1 without --tp).
    pub tp: u64,
    /// Pipeline-parallel degree (1 without --pp).
    pub pp: u64,
}

impl Dist {
    /// Joins the MPI job when `--dp N > 1` or `--tp N > 1`, checking the world has dp·tp
    /// ranks.
    pub fn init(a: &DistArgs, batch: usize) -> anyhow::Result<Option<Dist>> {
        if !a.distributed() {
            return Ok(None);
        }
        let (dp, tp) = (a.dp.unwrap_or(1).max(1), a.tp.unwrap_or(1).max(1));
        let pp = a.pp.unwrap_or(1).max(1);
        let n = dp * tp * pp;
        let flags = match (a.degree(), a.tp_degree(), a.pp_degree()) {
            (Some(_), Some(_), Some(_)) => format!("--dp {dp} --tp {tp} --pp {pp}"),
            (None, Some(_), Some(_)) => format!("--tp {tp} --pp {pp}"),
            (Some(_), None, Some(_)) => format!("--dp {dp} --pp {pp}"),
            (None, None, Some(_)) => format!("--pp {pp}"),
            (Some(_), Some(_), None) => format!("--dp {dp} --tp {tp}"),
            (None, Some(_), None) => format!("--tp {tp}"),
            _ => format!("--dp {dp}"),
        };
        if !launched_by_mpi() {
            bail!(
                "{flags} runs one process per rank under MPI: \
                 `oar launch -n {n} -- train ... {flags}` (or `mpirun -n {n} oar train ...`)"
            );
        }
        if !(batch as u64).is_multiple_of(dp) {
            bail!("--batch {batch} does not split into {dp} equal shards");
        }
        if tp > 1 && a.zero.is_some_and(|z| z > 0) {
            bail!("--zero with --tp is not supported yet: drop one of them");
        }
        if pp > 1 && a.zero.is_some_and(|z| z > 0) {
            bail!("--zero with --pp is not supported yet: drop one of them");
        }
        let m = a.micro();
        if pp > 1 && !(batch as u64).is_multiple_of(dp * m) {
            bail!(
                "--batch {batch} does not split into {m} micro-batches on each of {dp} \
                 data-parallel ranks (--micro-batches {m}: dp × micro-batches must divide it)"
            );
        }
        let comm = MpiComm::init().context("cannot initialise MPI")?;
        if comm.world_size() != n {
            let needs = match (tp, pp) {
                (1, 1) => String::new(),
                (_, 1) => format!(" needs {n} ranks (dp {dp} × tp {tp})"),
                (1, _) => format!(" needs {n} ranks (dp {dp} × pp {pp})"),
                _ => format!(" needs {n} ranks (dp {dp} × pp {pp} × tp {tp})"),
            };
            bail!(
                "{flags}{needs}, but mpirun started {} ranks: they must agree",
                comm.world_size()
            );
        }
        Ok(Some(Dist {
            rank: comm.rank(),
            comm: Arc::new(comm),
            dp,
            tp,
            pp,
        }))
    }

    pub fn is_rank0(d: Option<&Dist>) -> bool {
        !matches!(d, Some(d) if d.rank != 0)
    }

    /// Ends the whole job after this rank failed (others may wait in a collective).
    pub fn fail(&self, e: &anyhow::Error) -> ! {
        eprintln!("rank {}: {e:#}", self.rank);
        self.comm.abort(1)
    }
}

/// The environment variable naming the folder where each rank writes its heartbeat
/// (`rank-<r>.json`: rank, pid, steps completed), set by `oar launch --max-restarts`.
pub const HEARTBEAT_ENV: &str = "OAR_HEARTBEAT_DIR";

/// Writes `{"rank", "pid", "step"}` to `dir/rank-<rank>.json` through a temporary name and a
/// rename, so the launcher never reads half a file.
pub fn write_heartbeat(dir: &Path, rank: u64, step: u64) -> std::io::Result<()> {
    let body = format!(
        "{{\"rank\":{rank},\"pid\":{},\"step\":{step}}}\n",
        std::process::id()
    );
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".rank-{rank}.json.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, dir.join(format!("rank-{rank}.json")))
}

/// Wraps the loop's observer with what a supervised or data-parallel run adds: the heartbeat
/// after every step, and under `--dp` a barrier at every save point, once rank 0 has written
/// the checkpoint (the loop brings every rank there, flushing a lazy or ZeRO runner on all).
pub struct SyncObserver<'o> {
    pub inner: &'o mut dyn Observer,
    /// The heartbeat folder and this process's rank.
    pub heartbeat: Option<(PathBuf, u64)>,
    pub dist: Option<&'o Dist>,
}

impl SyncObserver<'_> {
    /// The heartbeat folder from the environment, when the launcher set it.
    pub fn heartbeat_dir() -> Option<PathBuf> {
        std::env::var_os(HEARTBEAT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    fn beat(&self, step: u64) -> Result<(), TrainError> {
        match &self.heartbeat {
            Some((dir, rank)) => write_heartbeat(dir, *rank, step).map_err(|e| {
                TrainError::Log(format!(
                    "cannot write the heartbeat in {}: {e}",
                    dir.display()
                ))
            }),
            None => Ok(()),
        }
    }

    fn barrier(&self, step: u64) -> Result<(), TrainError> {
        let Some(d) = self.dist else { return Ok(()) };
        let all: Vec<u64> = (0..d.dp * d.tp * d.pp).collect();
        d.comm.barrier(&all).map_err(|e| {
            TrainError::Log(format!(
                "rank {}: after the checkpoint at step {step}: {e}",
                d.rank
            ))
        })
    }
}

impl Observer for SyncObserver<'_> {
    fn on_step(&mut self, r: &StepRecord) -> Result<(), TrainError> {
        self.inner.on_step(r)?;
        self.beat(r.step)
    }

    fn on_eval(&mut self, r: &EvalRecord) -> Result<(), TrainError> {
        self.inner.on_eval(r)
    }

    fn on_checkpoint(&mut self, step: u64, path: &Path) -> Result<(), TrainError> {
        self.inner.on_checkpoint(step, path)
    }

    fn on_save_point(&mut self, step: u64) -> Result<(), TrainError> {
        self.inner.on_save_point(step)?;
        self.barrier(step)
    }
}

/// Builds the per-rank step under `--dp` (nothing without it) of a model built for one
/// rank's share of the batch: `model_for(n)` gives the model with the batch bound to `n`.
pub fn prepare(
    a: &TrainArgs,
    cfg: &TrainConfig,
    model_for: impl FnOnce(u64) -> anyhow::Result<Graph>,
) -> anyhow::Result<()> {
    // Tensor parallelism alone partitions the single-process step (`train_tp.rs`).
    if a.dist.tp_degree().is_some() && a.dist.pp_degree().is_none() {
        let model = model_for(a.batch as u64)?;
        let _ = a.dist.step.set((model, cfg.clone()));
        return Ok(());
    }
    // Pipeline stages, split over tensor groups or not, are built for one micro-batch
    // (`train_pp.rs`).
    if a.dist.pp_degree().is_some() {
        let (dp, m) = (a.dist.dp.unwrap_or(1).max(1), a.dist.micro());
        if !(a.batch as u64).is_multiple_of(dp * m) {
            bail!(
                "--batch {} does not split into {m} micro-batches on each of {dp} data-parallel \
                 ranks (--micro-batches {m}: dp × micro-batches must divide it)",
                a.batch
            );
        }
        let model = model_for(a.batch as u64 / (dp * m))?;
        let _ = a.dist.step.set((model, cfg.clone()));
        return Ok(());
    }
    let Some(dp) = a.dist.degree() else {
        return Ok(());
    };
    if !(a.batch as u64).is_multiple_of(dp) {
        bail!("--batch {} does not split into {dp} equal shards", a.batch);
    }
    let model = model_for(a.batch as u64 / dp)?;
    // Set once per run; a second call keeps the first.
    let _ = a.dist.step.set((model, cfg.clone()));
    Ok(())
}

/// The loop's runner under `--dp`: the per-rank step, with `full` (the single-process
/// runner) for evaluation.
pub fn runner(a: &TrainArgs, full: InterpRunner, d: &Dist) -> anyhow::Result<DpRunner> {
    let Some((model, cfg)) = a.dist.step.get() else {
        bail!("--dp trains zoo models (lcnet_*, ernie-*) for now, not graph files or distillation");
    };
    if a.backend.as_deref() == Some("llvm") {
        bail!("--dp runs the step in the interpreter for now; drop --backend llvm");
    }
    let stage = a.dist.zero.unwrap_or(0);
    let step = build_data_parallel_step(model, cfg, &DataParallel::zero(d.dp, stage, d.rank))
        .context("cannot build the data-parallel step")?;
    if let (Some(l), 0) = (&step.zero, d.rank) {
        let (z, full) = (l.bytes_per_rank(), l.replicated_bytes());
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "zero-{stage} on {} ranks, per rank: parameters {:.2} MiB, gradients {:.2} MiB, \
             optimizer state {:.2} MiB (replicated: {:.2}, {:.2}, {:.2} MiB)",
            d.dp,
            mib(z.params),
            mib(z.grads),
            mib(z.optimizer),
            mib(full.params),
            mib(full.grads),
            mib(full.optimizer)
        );
    }
    let mut r = DpRunner::new(step.graph, full, d);
    r.zero = step.zero;
    Ok(r)
}

/// `--log FILE` for this rank: rank 0 keeps FILE, rank r writes FILE's stem `.rank<r>.`
/// extension.
pub fn log_path(path: &Path, d: Option<&Dist>) -> PathBuf {
    rank_log_path(path, d.map_or(0, |d| d.rank))
}

/// [`log_path`] of rank `rank` (before MPI is initialised: `--plan auto` logs its plan).
pub fn rank_log_path(path: &Path, rank: u64) -> PathBuf {
    if rank == 0 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy());
    let ext = path
        .extension()
        .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()));
    path.with_file_name(format!("{stem}.rank{rank}{ext}"))
}

/// Runs the per-rank step on this rank's slice; evaluation runs the single-process graphs.
pub struct DpRunner {
    step: Graph,
    full: InterpRunner,
    comm: Arc<MpiComm>,
    rank: usize,
    dp: usize,
    /// Where the rank's ZeRO optimizer state lives (`None` without --zero).
    zero: Option<ZeroLayout>,
}

impl DpRunner {
    pub fn new(step: Graph, full: InterpRunner, d: &Dist) -> DpRunner {
        DpRunner {
            step,
            full,
            comm: d.comm.clone(),
            rank: d.rank as usize,
            dp: d.dp as usize,
            zero: None,
        }
    }

    /// This rank's contiguous slice of every input whose leading axis is the global batch.
    fn shard(&self, inputs: &[HostTensor], step: u64) -> Result<Vec<HostTensor>, TrainError> {
        let batch = inputs.first().and_then(|t| t.shape.first().copied());
        let Some(batch) = batch.filter(|b| b.is_multiple_of(self.dp)) else {
            return Err(TrainError::Contract(format!(
                "step {step}: the first input's batch does not split into {} shards",
                self.dp
            )));
        };
        let part = batch / self.dp;
        Ok(inputs
            .iter()
            .map(|t| match t.shape.first() {
                Some(&b) if b == batch => t.narrow(0, self.rank * part, part),
                _ => t.clone(),
            })
            .collect())
    }
}

/// Runs one rank's step graph: training state (updated parameters, optimizer slots) back
/// into `weights`; a non-finite loss is an error naming the layout flag (`--dp`, `--tp`).
pub fn rank_step(
    graph: &Graph,
    x: &[HostTensor],
    weights: &mut Weights,
    opts: RunOptions,
    comm: &dyn Communicator,
    step: u64,
    layout: &str,
) -> Result<StepOutputs, TrainError> {
    let mut o = run_with_options_on_rank(graph, x, weights, opts, comm)
        .map_err(|source| TrainError::Run { step, source })?;
    let state = o.split_off(graph.model_outputs().len().min(o.len()));
    for (name, v) in graph.state.iter().cloned().zip(state) {
        weights.insert(name, v);
    }
    let out = StepOutputs::from_outputs(step, o)?;
    if !out.loss.is_finite() {
        return Err(TrainError::NonFinite {
            step,
            loss: out.loss,
            origin: format!("not traced under {layout} (rerun on one process to find it)"),
        });
    }
    Ok(out)
}

impl StepRunner for DpRunner {
    fn run(
        &mut self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let x = self.shard(inputs, step)?;
        if let Some(l) = &self.zero {
            // Full optimizer state (initial, resumed, or left by `flush`) into the parts.
            partition_state(l, weights).map_err(|e| TrainError::Contract(e.to_string()))?;
        }
        // The rank's dropout masks continue one process's stream at its slice.
        let opts = RunOptions {
            batch_shard: self.rank as u64,
            ..RunOptions::training(self.full.seed(), step)
        };
        let out = rank_step(
            &self.step,
            &x,
            weights,
            opts,
            self.comm.as_ref(),
            step,
            "--dp",
        )?;
        // The logits stay this rank's slice: the loop reads a training step's loss only, and
        // evaluation runs the single-process graph (`evaluate`).
        Ok(out)
    }

    fn evaluate(
        &mut self,
        inputs: &[HostTensor],
        weights: &Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        self.full.evaluate(inputs, weights, step)
    }

    /// Under ZeRO, gathers the full optimizer state (collective: the loop calls it on every
    /// rank at the same points) so checkpoints load in one process.
    fn flush(&mut self, weights: &mut Weights) -> Result<(), TrainError> {
        match &self.zero {
            Some(l) => gather_full_state(l, weights, self.comm.as_ref())
                .map_err(|e| TrainError::Contract(e.to_string())),
            None => Ok(()),
        }
    }
}
