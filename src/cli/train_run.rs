//! The loop driver of `oar train`: picks the runner (compiled, interpreter, data-parallel),
//! draws the progress bar, writes the JSON log, and prints the summary.

use super::*;

/// The progress bar, the JSON log, and eval lines on stderr.
struct CliObserver {
    bar: ProgressBar,
    log: Option<JsonlLog>,
    eval: String,
    /// Steps loss scaling skipped so far.
    skipped: u64,
}

impl Observer for CliObserver {
    fn on_step(&mut self, r: &StepRecord) -> Result<(), TrainError> {
        self.bar.set_position(r.step);
        self.skipped += u64::from(r.skipped);
        let skipped = match self.skipped {
            0 => String::new(),
            n => format!("  {n} skipped (loss scale)"),
        };
        let speed = match r.tokens_per_sec {
            Some(t) => format!("{t:.0} tokens/s"),
            None => format!("{:.0} samples/s", r.samples_per_sec),
        };
        // A joint (distillation) loss shows its parts: `teacher 5.1 student 5.3 distill 0.2`.
        let parts: String = r
            .losses
            .iter()
            .map(|(k, v)| format!(" {} {v:.4}", k.trim_end_matches("_loss")))
            .collect();
        let parts = if parts.is_empty() {
            parts
        } else {
            format!(" ({})", parts.trim_start())
        };
        self.bar.set_message(format!(
            "loss {:.4}{parts}  {speed}{}{skipped}",
            r.loss, self.eval
        ));
        self.log.as_mut().map_or(Ok(()), |l| l.on_step(r))
    }

    fn on_eval(&mut self, r: &EvalRecord) -> Result<(), TrainError> {
        self.eval = format!("  eval {:.1}%", 100.0 * r.eval_accuracy);
        self.bar.suspend(|| {
            eprintln!(
                "step {}: eval accuracy {:.2}% loss {:.4} ({} samples)",
                r.step,
                100.0 * r.eval_accuracy,
                r.eval_loss,
                r.samples
            )
        });
        self.log.as_mut().map_or(Ok(()), |l| l.on_eval(r))
    }

    fn on_checkpoint(&mut self, step: u64, path: &Path) -> Result<(), TrainError> {
        self.log
            .as_mut()
            .map_or(Ok(()), |l| l.on_checkpoint(step, path))
    }
}

/// A run ready to start: its state, validation data, and what checkpoints record.
pub(super) struct Prepared<'v, L: BatchSource> {
    pub(super) state: TrainState<L>,
    pub(super) val: Option<&'v L::Validation>,
    pub(super) batches_per_epoch: usize,
    pub(super) seed: u64,
    /// The data-stream settings a resume must repeat.
    pub(super) stream: serde_json::Value,
    /// The training split, for the summary.
    pub(super) what: String,
    /// Without `--backend`: try the LLVM backend first (else the interpreter).
    pub(super) compile_by_default: bool,
    /// Names of the step's loss parts (outputs after the logits) for the log.
    pub(super) loss_parts: Vec<String>,
}

/// Runs the loop on a prepared state: the schedule, checkpoints, the progress bar and log,
/// the summary.
pub(super) fn run_loop<L: BatchSource>(
    graph: Graph,
    eval_graph: Option<Graph>,
    spec: &str,
    a: &TrainArgs,
    p: Prepared<'_, L>,
) -> anyhow::Result<TrainState<L>> {
    let Prepared {
        mut state,
        val,
        batches_per_epoch,
        seed,
        stream,
        what,
        compile_by_default,
        loss_parts,
    } = p;
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e.saturating_mul(batches_per_epoch as u64),
        (None, None) => bail!("say how long to train: --steps N or --epochs E"),
    };
    if state.step >= steps {
        bail!(
            "the checkpoint is at step {}, already at or past --steps {steps}",
            state.step
        );
    }
    let sched = Schedule::named(&a.schedule, a.lr, a.warmup, steps).with_context(|| {
        format!(
            "unknown schedule `{}`; known: {}",
            a.schedule,
            SCHEDULE_NAMES.join(", ")
        )
    })?;
    let cfg = LoopConfig {
        steps,
        eval_every: a.eval_every,
        save: a.save.as_ref().map(|dir| SavePolicy {
            dir: dir.clone(),
            every: if a.save_every == 0 {
                steps
            } else {
                a.save_every
            },
            keep: a.keep,
            background: a.async_save,
            write: true,
        }),
        seed,
        config: json!({
            "model": spec,
            "data": a.data.display().to_string(),
            "steps": steps,
            "schedule": sched,
            "stream": stream,
        }),
        loss_parts,
    };
    let runner = match a.backend.as_deref() {
        Some("interp") => None,
        // `--dp` runs its per-rank step in the interpreter (dist::runner).
        None if !compile_by_default || a.dist.distributed() => None,
        explicit => match compiled_runner(&graph, eval_graph.clone(), &state, seed, spec, a) {
            Ok(r) => Some(r),
            Err(e) if explicit.is_none() => {
                eprintln!("{e:#}; running the step in the reference interpreter instead");
                None
            }
            Err(e) => return Err(e),
        },
    };
    let mut planned = None;
    let d = dist::Dist::init(&a.dist, a.batch)?;
    let rank0 = dist::Dist::is_rank0(d.as_ref());
    // Every rank holds the same weights: rank 0 alone writes checkpoints; every rank meets
    // each save point (dist::SyncObserver).
    let mut cfg = cfg;
    if let Some(p) = cfg.save.as_mut() {
        p.write = rank0;
    }
    let heartbeat =
        dist::SyncObserver::heartbeat_dir().map(|h| (h, d.as_ref().map_or(0, |d| d.rank)));
    if let Some((dir, rank)) = &heartbeat {
        // The first beat tells the launcher this rank's pid and where it starts.
        dist::write_heartbeat(dir, *rank, state.step)
            .with_context(|| format!("cannot write the heartbeat in {}", dir.display()))?;
    }
    let mut runner: Box<dyn StepRunner> = match runner {
        Some(_) if d.is_some() => {
            bail!(
                "--dp, --tp and --pp run the step in the interpreter for now; drop --backend llvm"
            )
        }
        Some(mut r) => {
            planned = Some(r.planned_bytes());
            Box::new(r)
        }
        None => {
            let mut r = InterpRunner::new(graph, seed)?;
            if let Some(g) = eval_graph {
                r = r.with_eval_graph(g);
            }
            match &d {
                // Pipelines (split over tensor groups under --tp too: pp::runner), else
                // tensor parallelism partitions the single-process step (tp::runner).
                Some(d) if d.pp > 1 => Box::new(pp::runner(a, r, d).unwrap_or_else(|e| d.fail(&e))),
                Some(d) if d.tp > 1 => Box::new(tp::runner(a, r, d).unwrap_or_else(|e| d.fail(&e))),
                Some(d) => Box::new(dist::runner(a, r, d).unwrap_or_else(|e| d.fail(&e))),
                None => Box::new(r),
            }
        }
    };
    let start_rss = memory::reset_peak();
    let bar = match rank0 {
        true => ProgressBar::new(steps),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.step);
    let mut obs = CliObserver {
        bar: bar.clone(),
        log: a
            .log
            .as_deref()
            .map(|p| JsonlLog::open(&dist::log_path(p, d.as_ref())))
            .transpose()?,
        eval: String::new(),
        skipped: 0,
    };
    let mut sync = dist::SyncObserver {
        inner: &mut obs,
        heartbeat,
        dist: d.as_ref(),
    };
    let result = train(
        runner.as_mut(),
        &mut state,
        val,
        &|s| sched.lr(s),
        &cfg,
        &mut sync,
    );
    bar.finish_and_clear();
    drop(obs);
    let s = match (
        result.with_context(|| format!("training {spec} failed")),
        &d,
    ) {
        (Ok(s), _) => s,
        (Err(e), Some(d)) => d.fail(&e),
        (Err(e), None) => return Err(e),
    };
    if !rank0 {
        return Ok(state);
    }
    println!(
        "trained {} steps ({} in this run, batch {}, {what}) in {:.1}s",
        s.steps, s.steps_run, a.batch, s.seconds
    );
    if let Some(l) = s.final_loss {
        println!("final loss {l:.4}");
    }
    match (s.best_eval_accuracy, &s.last_eval) {
        (Some(best), Some(last)) => println!(
            "best eval accuracy {:.2}% (last {:.2}%, loss {:.4}, on {} samples)",
            100.0 * best,
            100.0 * last.eval_accuracy,
            last.eval_loss,
            last.samples
        ),
        _ => println!("no evaluation (pass --eval-every K with --holdout > 0)"),
    }
    memory::report(planned, start_rss, a.log.as_deref())?;
    if let Some(dir) = &a.save {
        println!("checkpoints in {}", dir.display());
    }
    Ok(state)
}
