//! `oar train ctr-dnn|wide-deep|deepfm --data FILE|synthetic:N`: a CTR model on Criteo-format
//! data, in one process (tables as ordinary parameters) or, with `--ps --servers K` under
//! `mpirun -n K+W`, on the parameter server (`oar_runtime::ps`): ranks `0..K` hold the sparse
//! tables, the other W ranks are workers, each taking `1/W` of every `--batch`. Prints the
//! AUC on the held-out lines (every `1/holdout`-th line). See docs/heterps.md.

use super::TrainArgs;
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::{Graph, ValueRef};
use oar::models::{CtrConfig, SparseInput};
use oar::passes::autodiff::append_backward_with;
use oar::passes::parallel::partition::specialize;
use oar::runtime::comm::{launched_by_mpi, Communicator, MpiComm};
use oar::runtime::data::criteo::{CriteoOptions, CriteoReader, CtrBatch, OnError, Split};
use oar::runtime::data::criteo_synth::{write_synthetic, SynthConfig};
use oar::runtime::init::init_weights;
use oar::runtime::ps::{
    self, run_server, train_single, CtrData, Mode, RowInit, ServerConfig, SparseOptim, StepGraph,
    TableSpec, Worker, WorkerConfig,
};
use oar::runtime::train::metrics::auc;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug, Clone, Default)]
pub struct PsArgs {
    /// Train a CTR model on the parameter server: run under `mpirun -n K+W`; ranks 0..K
    /// serve the sparse tables (`--servers K`), the rest are workers.
    #[arg(long)]
    pub ps: bool,
    /// Server ranks under --ps.
    #[arg(long, default_value_t = 1)]
    pub servers: u64,
    /// sync (pushes summed per step, equal to one-process training) or async (pushes
    /// applied as they arrive, staleness at most one step).
    #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
    pub ps_mode: String,
    /// Optimizer of a CTR model's tables (row-wise, on the servers) and dense parameters.
    #[arg(long, default_value = "adagrad", value_parser = ["sgd", "adagrad", "adam"])]
    pub ctr_optimizer: String,
    /// Before each save, drop table rows updated fewer than N times.
    #[arg(long, value_name = "N")]
    pub evict_below: Option<u64>,
    /// CTR embedding width (default: the zoo's 10).
    #[arg(long)]
    pub emb_dim: Option<u64>,
    /// CTR table rows; ids are hashed modulo this (default: the zoo's 1,000,001).
    #[arg(long)]
    pub table_rows: Option<u64>,
    /// CTR MLP widths, comma-separated (default: 400,400,400).
    #[arg(long, value_delimiter = ',')]
    pub mlp: Option<Vec<u64>>,
    /// What to do with a malformed Criteo line: skip (reported at the end) or stop.
    #[arg(long, default_value = "skip", value_parser = ["skip", "stop"])]
    pub on_error: String,
    /// Start the tables from a parameter-server checkpoint (any server count).
    #[arg(long, value_name = "DIR")]
    pub ps_load: Option<PathBuf>,
}

/// The step and evaluation graphs of one batch size.
fn graphs(
    cfg: &CtrConfig,
    name: &str,
    batch: u64,
    sparse: SparseInput,
) -> anyhow::Result<(Graph, Graph, Vec<String>)> {
    let model = cfg
        .build_with(name, sparse)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot build {name}"))?;
    let b = BTreeMap::from([("N".to_string(), batch)]);
    let fwd = specialize(&model, &b)?;
    let [loss, prob] = fwd.model_outputs()[..] else {
        bail!("{name}: expected outputs loss, prob");
    };
    let bwd = append_backward_with(&fwd, loss, true, &BTreeSet::new())?;
    let mut g = bwd.graph;
    let mut outs: Vec<ValueRef> = vec![loss, prob];
    let params: Vec<String> = bwd.param_grads.iter().map(|(n, _)| n.clone()).collect();
    outs.extend(bwd.param_grads.iter().map(|(_, v)| *v));
    if sparse == SparseInput::Rows {
        for t in cfg.tables() {
            let Some((_, v)) = bwd.input_grads.iter().find(|(n, _)| *n == t.rows_input) else {
                bail!("{name}: no gradient for `{}`", t.rows_input);
            };
            outs.push(*v);
        }
    }
    g.set_outputs(outs);
    g.canonicalize_order();
    oar::ir::verify(&g).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((g, fwd, params))
}

/// The data file: `synthetic:N` writes N generated lines (seeded) to a temporary file.
fn data_file(data: &Path, seed: u64) -> anyhow::Result<(PathBuf, bool)> {
    let text = data.to_string_lossy();
    let Some(n) = text.strip_prefix("synthetic:") else {
        return Ok((data.to_path_buf(), false));
    };
    let n: u64 = n
        .parse()
        .with_context(|| format!("--data {text}: expected synthetic:N with N a count of lines"))?;
    let path = std::env::temp_dir().join(format!(
        "oar-synthetic-{n}-{seed}-{}.txt",
        std::process::id()
    ));
    let st = write_synthetic(&path, n, &SynthConfig::new(seed))
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "synthetic Criteo data: {n} lines, {} positive, the planted logit's AUC {:.4}",
        st.positives, st.planted_auc
    );
    Ok((path, true))
}

fn reader(
    path: &Path,
    batch: usize,
    split: Split,
    on_error: OnError,
) -> anyhow::Result<CriteoReader> {
    let mut o = CriteoOptions::new(batch);
    o.split = split;
    o.on_error = on_error;
    o.drop_last = true;
    Ok(CriteoReader::open(&[path.to_path_buf()], o)?)
}

/// Global training batches, re-reading the file when it runs out.
struct Batches {
    path: PathBuf,
    batch: usize,
    split: Split,
    on_error: OnError,
    cur: CriteoReader,
    skipped: usize,
}

impl Batches {
    fn next(&mut self) -> anyhow::Result<CtrBatch> {
        for _ in 0..2 {
            if let Some(b) = self.cur.next() {
                return Ok(b?);
            }
            self.skipped += self.cur.skipped().len();
            for e in self.cur.skipped().iter().take(3) {
                eprintln!("skipped {e}");
            }
            self.cur = reader(&self.path, self.batch, self.split, self.on_error)?;
        }
        bail!(
            "{}: not one full batch of {} training lines",
            self.path.display(),
            self.batch
        )
    }
}

struct Log(Option<std::fs::File>);

impl Log {
    fn line(&mut self, v: serde_json::Value) -> anyhow::Result<()> {
        if let Some(f) = &mut self.0 {
            writeln!(f, "{v}")?;
        }
        Ok(())
    }
}

pub fn run(mut cfg: CtrConfig, name: &str, a: &TrainArgs) -> anyhow::Result<()> {
    let p = &a.ps_args;
    if let Some(d) = p.emb_dim {
        cfg.embedding_dim = d;
    }
    if let Some(r) = p.table_rows {
        cfg.table_rows = r;
    }
    if let Some(h) = &p.mlp {
        cfg.hidden = h.clone();
    }
    let seed = a.seed.unwrap_or(0);
    let lr = a.lr as f32;
    let optim = SparseOptim::by_name(&p.ctr_optimizer, lr)
        .with_context(|| format!("unknown --ctr-optimizer {}", p.ctr_optimizer))?;
    let tables: Vec<TableSpec> = cfg
        .tables()
        .into_iter()
        .map(|t| TableSpec {
            init: if t.dim == 1 {
                RowInit::Constant(0.0)
            } else {
                RowInit::Normal { std: 0.01, seed }
            },
            name: t.param,
            dim: t.dim as usize,
            rows: t.rows,
        })
        .collect();
    let every = if a.holdout > 0.0 {
        (1.0 / a.holdout).round().max(2.0) as u64
    } else {
        0
    };
    let on_error: OnError = p.on_error.parse()?;
    let steps = a.steps.unwrap_or(100);
    let log_path = |rank: Option<u64>| -> Option<PathBuf> {
        a.log.as_ref().map(|l| match rank {
            Some(r) if r > 0 => l.with_extension(format!("rank{r}.jsonl")),
            _ => l.clone(),
        })
    };
    if !p.ps {
        let (path, temp) = data_file(&a.data, seed)?;
        let r = single(
            &cfg,
            name,
            a,
            &tables,
            optim,
            (&path, every, on_error, steps),
            log_path(None),
        );
        if temp {
            let _ = std::fs::remove_file(&path);
        }
        return r;
    }
    if !launched_by_mpi() {
        bail!(
            "--ps runs one process per rank under MPI: `mpirun -n {} oar train {name} --ps \
             --servers {} ...` (servers first, then workers)",
            p.servers + 2,
            p.servers
        );
    }
    let comm = MpiComm::init().context("cannot initialise MPI")?;
    let (servers, workers) = ps::roles(p.servers, comm.world_size())?;
    let mode: Mode = p.ps_mode.parse()?;
    let me = comm.rank();
    let result = if servers.contains(&me) {
        let sc = ServerConfig {
            mode,
            servers,
            workers,
            tables,
            optim,
            evict_below: p.evict_below,
            checkpoint: a.save.clone(),
            load: p.ps_load.clone(),
        };
        run_server(&comm, &sc).map(|r| {
            eprintln!(
                "server rank {me}: {} rounds, rows {:?}, {} rows pulled, {} pushed, {} evicted, {} loaded{}",
                r.rounds,
                r.rows,
                r.pulled_rows,
                r.pushed_rows,
                r.evicted,
                r.loaded,
                r.saved
                    .iter()
                    .map(|s| format!(", saved {}", s.display()))
                    .collect::<String>()
            )
        }).map_err(anyhow::Error::from)
    } else {
        let w = workers.len();
        if !a.batch.is_multiple_of(w) {
            bail!(
                "--batch {} does not split into {w} equal worker shares",
                a.batch
            );
        }
        let wc = WorkerConfig {
            mode,
            servers,
            workers: workers.clone(),
            tables,
            dense_optim: optim,
        };
        let first = me == workers[0];
        let log = log_path(Some(me - workers[0]));
        worker(
            &comm,
            wc,
            &cfg,
            name,
            a,
            (every, on_error, steps, seed),
            log,
            first,
        )
    };
    if let Err(e) = result {
        eprintln!("rank {me}: {e:#}");
        comm.abort(1);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn worker(
    comm: &MpiComm,
    wc: WorkerConfig,
    cfg: &CtrConfig,
    name: &str,
    a: &TrainArgs,
    (every, on_error, steps, seed): (u64, OnError, u64, u64),
    log: Option<PathBuf>,
    first: bool,
) -> anyhow::Result<()> {
    let w = wc.workers.len();
    let index = wc
        .workers
        .iter()
        .position(|&r| r == comm.rank())
        .unwrap_or(0);
    let local = (a.batch / w) as u64;
    let (train, _, params) = graphs(cfg, name, local, SparseInput::Rows)?;
    let (_, eval, _) = graphs(cfg, name, a.batch as u64, SparseInput::Rows)?;
    let weights = init_weights(&train, seed)?;
    let sg = StepGraph {
        train,
        eval,
        dense_params: params,
        rows_inputs: cfg.tables().into_iter().map(|t| t.rows_input).collect(),
    };
    // Each worker writes its own copy of synthetic data (same seed, same lines).
    let (path, temp) = data_file(&a.data, seed)?;
    let mut log = Log(log.map(std::fs::File::create).transpose()?);
    let mut batches = Batches {
        cur: reader(&path, a.batch, Split::Train { every }, on_error)?,
        path: path.clone(),
        batch: a.batch,
        split: Split::Train { every },
        on_error,
        skipped: 0,
    };
    let eval_set = reader(&path, a.batch, Split::Eval { every }, on_error)?.read_all()?;
    let mut wk = Worker::new(comm, wc, sg, weights)?;
    let t0 = Instant::now();
    let mut last = 0.0;
    for s in 1..=steps {
        let global = batches.next()?;
        last = wk.step(&global.part(index, w))?;
        log.line(serde_json::json!({"kind": "step", "step": s, "loss": last}))?;
    }
    let train_s = t0.elapsed().as_secs_f64();
    let (probs, labels) = wk.evaluate(&eval_set)?;
    let (pulled, pushed, wait, compute) = (
        wk.client.pulled,
        wk.client.pushed,
        wk.client.wait,
        wk.compute,
    );
    wk.finish(a.save.as_ref().map(|_| steps))?;
    if temp {
        let _ = std::fs::remove_file(&path);
    }
    let score = auc(&probs, &labels);
    log.line(
        serde_json::json!({"kind": "eval", "step": steps, "auc": score, "samples": labels.len()}),
    )?;
    if first {
        println!(
            "{name} on the parameter server: {steps} steps, final loss {last:.5}, held-out AUC {} \
             on {} samples; {:.0} samples/s ({train_s:.2} s), worker 0: {pulled} rows pulled, \
             {pushed} pushed, {:.2} s waiting on servers, {:.2} s computing{}",
            score.map_or("n/a".into(), |v| format!("{v:.4}")),
            labels.len(),
            (steps as f64 * a.batch as f64) / train_s.max(1e-9),
            wait.as_secs_f64(),
            compute.as_secs_f64(),
            if batches.skipped > 0 {
                format!("; {} malformed lines skipped", batches.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// One-process training with the tables as parameters (the reference for --ps).
fn single(
    cfg: &CtrConfig,
    name: &str,
    a: &TrainArgs,
    tables: &[TableSpec],
    optim: SparseOptim,
    (path, every, on_error, steps): (&Path, u64, OnError, u64),
    log: Option<PathBuf>,
) -> anyhow::Result<()> {
    let elements: u64 = tables.iter().map(|t| t.rows * t.dim as u64).sum();
    if elements > 50_000_000 {
        bail!(
            "{name}'s tables hold {elements} floats: too many for one process; use --table-rows \
             or --ps"
        );
    }
    let (step, fwd, params) = graphs(cfg, name, a.batch as u64, SparseInput::Lookup)?;
    let seed = a.seed.unwrap_or(0);
    let mut weights = init_weights(&step, seed)?;
    for t in tables {
        weights.insert(t.name.clone(), t.dense_init());
    }
    let mut log = Log(log.map(std::fs::File::create).transpose()?);
    let mut batches = Batches {
        cur: reader(path, a.batch, Split::Train { every }, on_error)?,
        path: path.to_path_buf(),
        batch: a.batch,
        split: Split::Train { every },
        on_error,
        skipped: 0,
    };
    let mut state = None;
    let t0 = Instant::now();
    let mut last = 0.0;
    for s in 1..=steps {
        let b = batches.next()?;
        last = train_single(
            &step,
            &params,
            &mut weights,
            &mut state,
            tables,
            (optim, optim),
            &b,
        )?;
        log.line(serde_json::json!({"kind": "step", "step": s, "loss": last}))?;
    }
    let train_s = t0.elapsed().as_secs_f64();
    let rows = tables.first().map_or(1, |t| t.rows);
    let (mut probs, mut labels) = (Vec::new(), Vec::new());
    for b in reader(path, a.batch, Split::Eval { every }, on_error)? {
        let b = b?;
        let inputs = ps::lookup_inputs(&fwd, &b, rows)?;
        let out = oar::runtime::run(&fwd, &inputs, &weights)?;
        probs.extend_from_slice(out[1].as_f32().context("prob is not f32")?);
        labels.extend_from_slice(&b.labels);
    }
    let score = auc(&probs, &labels);
    log.line(
        serde_json::json!({"kind": "eval", "step": steps, "auc": score, "samples": labels.len()}),
    )?;
    println!(
        "{name} in one process: {steps} steps, final loss {last:.5}, held-out AUC {} on {} \
         samples; {:.0} samples/s ({train_s:.2} s)",
        score.map_or("n/a".into(), |v| format!("{v:.4}")),
        labels.len(),
        (steps as f64 * a.batch as f64) / train_s.max(1e-9),
    );
    Ok(())
}
