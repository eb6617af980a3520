//! `oar train ernie-… ... --plan auto --cluster FILE` under `mpirun -n N` (or `oar launch -n
//! N`): every rank runs the planner for the world it is in and trains the layout it chooses.
//!
//! The world is read from the launcher's environment before MPI starts (OpenMPI's
//! `OMPI_COMM_WORLD_SIZE`/`_RANK`/`_LOCAL_SIZE`, else PMI's or Slurm's); the cluster file
//! is fitted to it ([`cluster_for`]); the planner's candidates (`oar plan`'s search) are
//! put in the form `oar train` runs them ([`as_run`]) and those it cannot run are dropped
//! ([`not_executable`]); the fastest that fits wins ([`choose`]). Every input is the same
//! on every rank and the search is deterministic (ties go to the first candidate in the
//! planner's order), so every rank reaches the same plan without talking to the others;
//! `Dist::init` then checks the world has the plan's ranks, as for fixed flags.
//! See docs/distributed.md, "--plan auto".

use super::plan_auto_show as show;
use super::{text, TrainArgs};
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::dist::DeviceKind;
use oar::ir::Cluster;
use oar::passes::parallel::search::{candidates, plan};
use oar::passes::parallel::step_cost::{Evaluator, Mapping, Recompute as PlanRecompute, Schedule};
use oar::passes::parallel::{Evaluation, Job, ModelSpec, ParallelPlan, TrainingCostModel};
use oar::passes::training::Recompute;

#[derive(Args, Debug, Clone, Default)]
pub struct AutoArgs {
    /// `auto`: every rank plans the layout (dp, ZeRO, tp, pp and its schedule, recompute)
    /// for the MPI world size and --cluster, among those oar train runs, and trains it (a
    /// zoo ERNIE; rank 0 prints the plan, every rank's --log records it). Instead of
    /// --dp/--tp/--pp/--zero/--micro-batches/--chunks/--pp-schedule/--recompute.
    #[arg(long, value_name = "auto", value_parser = ["auto"])]
    pub plan: Option<String>,
    /// With --plan auto: the cluster the ranks run on, a file (`oar cluster calibrate -o
    /// local.toml` measures this machine) or a preset; resized to the world (docs/distributed.md).
    #[arg(long, value_name = "FILE", requires = "plan")]
    pub cluster: Option<String>,
}

impl AutoArgs {
    pub fn active(&self) -> bool {
        self.plan.is_some()
    }
}

/// This process's place in the job, from the launcher's environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct World {
    pub size: u64,
    pub rank: u64,
    /// Ranks on this rank's node.
    pub local: u64,
}

fn env_u64(names: &[&str]) -> anyhow::Result<Option<u64>> {
    for n in names {
        if let Some(v) = std::env::var_os(n) {
            let s = v.to_string_lossy();
            let x = s
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{n}={s:?} is not a whole number"))?;
            return Ok(Some(x));
        }
    }
    Ok(None)
}

impl World {
    /// One process when no launcher is seen; ranks on one node when it does not say.
    pub fn from_env() -> anyhow::Result<World> {
        let size = env_u64(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"])?;
        if size.is_none() && oar::runtime::comm::launched_by_mpi() {
            bail!("--plan auto cannot tell the number of ranks: the launcher set none of OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS");
        }
        let size = size.unwrap_or(1).max(1);
        let rank = env_u64(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"])?.unwrap_or(0);
        let local = env_u64(&["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"])?.unwrap_or(size);
        Ok(World { size, rank, local })
    }
}

/// The cluster `world.size` ranks run on, `world.local` per node, from the cluster file:
/// the file as it is when it has that many devices; else its one node group with
/// `size / local` nodes of `local` devices. A CPU node's measured figures (peak, memory,
/// memory bandwidth) are shared by the ranks on it, as `oar cluster calibrate --devices`
/// shares them; an accelerator is one rank's whole, so a node must hold enough of them.
pub fn cluster_for(file: &Cluster, world: World) -> anyhow::Result<Cluster> {
    if file.num_devices() == world.size {
        return Ok(file.clone());
    }
    let [g] = file.node_groups.as_slice() else {
        bail!(
            "cluster {} has {} devices in {} node groups; --plan auto on {} ranks needs a file \
             of exactly {} devices, or of one node group to resize",
            file.name,
            file.num_devices(),
            file.node_groups.len(),
            world.size,
            world.size
        );
    };
    let local = world.local.clamp(1, world.size);
    if !world.size.is_multiple_of(local) {
        bail!(
            "{} ranks with {local} on this node do not fill whole nodes: --plan auto needs the \
             same number of ranks on every node",
            world.size
        );
    }
    let mut g = g.clone();
    match g.device.kind {
        DeviceKind::Cpu => {
            let share = g.devices_per_node as f64 / local as f64;
            let d = &mut g.device;
            for p in [
                &mut d.peak_tflops.f64,
                &mut d.peak_tflops.f32,
                &mut d.peak_tflops.tf32,
                &mut d.peak_tflops.f16,
                &mut d.peak_tflops.bf16,
                &mut d.peak_tflops.i8,
            ] {
                *p = p.map(|v| v * share);
            }
            d.memory_gib *= share;
            d.memory_bandwidth_gbs *= share;
        }
        DeviceKind::Gpu if local > g.devices_per_node as u64 => bail!(
            "{local} ranks on one node, but a node of cluster {} has {} devices",
            file.name,
            g.devices_per_node
        ),
        DeviceKind::Gpu => {}
    }
    g.devices_per_node = u32::try_from(local).context("too many ranks per node")?;
    g.nodes = u32::try_from(world.size / local).context("too many nodes")?;
    let mut c = file.clone();
    c.node_groups = vec![g];
    Ok(c)
}

/// The planner's layout as `oar train` runs it: outside a pipeline, each data-parallel
/// rank's whole share of the batch in one micro-batch (oar train does not accumulate
/// gradients there); in a pipeline, the stages split by layer count, the first taking one
/// more when they do not divide (`oar_passes::training::pipeline`), not the planner's
/// cost-balanced split. For interleaved 1F1B a rank's layers are its chunks' together.
pub fn as_run(mut p: ParallelPlan, layers: usize, global_batch: u64) -> ParallelPlan {
    if p.pp == 1 {
        p.micro_batch_size = global_batch / p.dp.max(1);
        p.micro_batches = 1;
        p.stage_layers = vec![layers];
        return p;
    }
    let chunks = match p.schedule {
        Schedule::Interleaved(v) => v,
        Schedule::GPipe | Schedule::OneFOneB => 1,
    };
    let stages = (p.pp * chunks) as usize;
    let block = |s: usize| layers / stages + usize::from(s < layers % stages);
    p.stage_layers = (0..p.pp as usize)
        .map(|r| (r..stages).step_by(p.pp as usize).map(block).sum())
        .collect();
    p
}

/// Why `oar train` cannot run `p` (a layout in [`as_run`]'s form), or `None` when it can.
pub fn not_executable(p: &ParallelPlan) -> Option<&'static str> {
    if p.sequence_parallel {
        return Some("sequence parallelism is not in the training runtime");
    }
    if p.zero_stage > 0 && (p.tp > 1 || p.pp > 1) {
        return Some("ZeRO runs under --dp alone");
    }
    if p.zero_stage == 3 && p.recompute != PlanRecompute::None {
        return Some("ZeRO-3 with recomputation is not supported yet");
    }
    if p.pp == 1 && p.micro_batches > 1 {
        return Some("micro-batches outside a pipeline (gradient accumulation) are not run");
    }
    if p.pp > 1 && p.recompute != PlanRecompute::Full {
        return Some("a pipeline stage always recomputes its forward in its backward");
    }
    if p.pp > 1 && p.dp > 1 && p.mapping != Mapping::TpPpDp {
        return Some("dp × pp places the pipeline ranks innermost");
    }
    None
}

/// The plan `--plan auto` runs and what it was chosen over.
pub struct Choice {
    pub best: Evaluation,
    /// The fastest fitting executable layout of each other (dp, tp, pp), fastest first.
    pub others: Vec<Evaluation>,
    /// Executable layouts evaluated, and how many of them fit.
    pub executable: usize,
    pub fitting: usize,
    /// Layouts the planner's search considers.
    pub considered: usize,
    /// The planner's own best when `oar train` cannot run it, with the reason.
    pub unrestricted: Option<(Evaluation, &'static str)>,
}

/// Every executable layout of `model` for `job` on `cluster`, evaluated, in the planner's
/// candidate order (duplicates once [`as_run`] has merged them removed).
pub fn executable_layouts(
    model: &ModelSpec,
    job: &Job,
    cluster: &Cluster,
) -> (Vec<Evaluation>, usize) {
    let all = candidates(model, job, cluster);
    let mut runs: Vec<ParallelPlan> = Vec::new();
    // Megatron's column split of the feed-forward needs its width to divide too (the
    // planner checks heads and hidden only).
    let ffn_splits = |tp: u64| model.layers.iter().all(|l| l.ffn.is_multiple_of(tp));
    for p in &all {
        let r = as_run(p.clone(), model.layers.len(), job.global_batch);
        if not_executable(&r).is_none() && ffn_splits(r.tp) && !runs.contains(&r) {
            runs.push(r);
        }
    }
    let ev = Evaluator::new(model, job, cluster, TrainingCostModel::default());
    (runs.iter().map(|p| ev.evaluate(p)).collect(), all.len())
}

/// The fastest executable layout that fits (the first of equals).
pub fn choose(model: &ModelSpec, job: &Job, cluster: &Cluster) -> anyhow::Result<Choice> {
    let (evals, considered) = executable_layouts(model, job, cluster);
    if evals.is_empty() {
        bail!(
            "no layout oar train runs splits {} over {} ranks with --batch {}: the data-parallel \
             degree must divide the batch, the tensor degree the heads, hidden and feed-forward \
             widths, and the pipeline degree is at most the {} layers; \
             try another -n or --batch",
            model.name,
            cluster.num_devices(),
            job.global_batch,
            model.layers.len()
        );
    }
    let fitting: Vec<&Evaluation> = evals.iter().filter(|e| e.fits).collect();
    let Some(best) = fitting
        .iter()
        .copied()
        .min_by(|a, b| a.time.total.total_cmp(&b.time.total))
        .cloned()
    else {
        let lean = evals
            .iter()
            .map(|e| e.memory.total)
            .fold(f64::INFINITY, f64::min);
        bail!(
            "no layout oar train runs for {} on {} devices of cluster {} ({} ranks, batch {}) \
             fits: the leanest of {} needs {:.2} GiB per device",
            model.name,
            cluster.num_devices(),
            cluster.name,
            cluster.num_devices(),
            job.global_batch,
            evals.len(),
            lean / (1u64 << 30) as f64
        );
    };
    let degrees = |e: &Evaluation| (e.plan.dp, e.plan.tp, e.plan.pp);
    let mut others: Vec<Evaluation> = Vec::new();
    for e in &fitting {
        match others.iter_mut().find(|o| degrees(o) == degrees(e)) {
            Some(o) if e.time.total < o.time.total => *o = (*e).clone(),
            Some(_) => {}
            None if degrees(e) != degrees(&best) => others.push((*e).clone()),
            None => {}
        }
    }
    others.sort_by(|a, b| a.time.total.total_cmp(&b.time.total));
    // The planner's free choice, to say what the runtime's limits cost (when it has one).
    let unrestricted = plan(model, job, cluster, &TrainingCostModel::default())
        .ok()
        .and_then(|o| {
            let r = as_run(o.best.plan.clone(), model.layers.len(), job.global_batch);
            let why = not_executable(&r).or((r != o.best.plan)
                .then_some("its micro-batching or stage split differs from oar train's"))?;
            (o.best.time.total < best.time.total).then_some((o.best, why))
        });
    Ok(Choice {
        executable: evals.len(),
        fitting: fitting.len(),
        considered,
        best,
        others,
        unrestricted,
    })
}

/// The `oar train` flags that run `p` (the fixed-layout form of the plan).
pub fn flags(p: &ParallelPlan) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    let mut add = |k: &str, v: String| f.extend([k.to_string(), v]);
    if p.dp > 1 {
        add("--dp", p.dp.to_string());
    }
    if p.zero_stage > 0 {
        add("--zero", p.zero_stage.to_string());
    }
    if p.tp > 1 {
        add("--tp", p.tp.to_string());
    }
    if p.pp > 1 {
        add("--pp", p.pp.to_string());
        add("--micro-batches", p.micro_batches.to_string());
        let (name, chunks) = match p.schedule {
            Schedule::GPipe => ("gpipe", None),
            Schedule::OneFOneB => ("1f1b", None),
            Schedule::Interleaved(v) => ("interleaved", Some(v)),
        };
        add("--pp-schedule", name.to_string());
        if let Some(v) = chunks {
            add("--chunks", v.to_string());
        }
    } else {
        // A pipeline recomputes by itself (`not_executable`); elsewhere the step is built so.
        match p.recompute {
            PlanRecompute::None => {}
            PlanRecompute::Selective => add("--recompute", "selective".into()),
            PlanRecompute::Full => add("--recompute", "full".into()),
        }
    }
    f
}

/// Sets `a`'s layout flags to `p`'s, as [`flags`] spells them.
fn apply(a: &mut TrainArgs, p: &ParallelPlan) {
    let d = &mut a.dist;
    d.dp = (p.dp > 1).then_some(p.dp);
    d.zero = (p.zero_stage > 0).then_some(p.zero_stage);
    d.tp = (p.tp > 1).then_some(p.tp);
    if p.pp > 1 {
        d.pp = Some(p.pp);
        d.micro_batches = Some(p.micro_batches);
        let (name, chunks) = match p.schedule {
            Schedule::GPipe => ("gpipe", None),
            Schedule::OneFOneB => ("1f1b", None),
            Schedule::Interleaved(v) => ("interleaved", Some(v)),
        };
        d.pp_schedule = name.to_string();
        d.chunks = chunks;
    } else {
        a.recompute = match p.recompute {
            PlanRecompute::None => Recompute::None,
            PlanRecompute::Selective => Recompute::Selective,
            PlanRecompute::Full => Recompute::Full,
        };
    }
}

/// The flags `--plan auto` replaces, when given beside it.
fn conflicts(a: &TrainArgs) -> Vec<&'static str> {
    let d = &a.dist;
    [
        ("--dp", d.dp.is_some()),
        ("--tp", d.tp.is_some()),
        ("--pp", d.pp.is_some()),
        ("--zero", d.zero.is_some()),
        ("--micro-batches", d.micro_batches.is_some()),
        ("--chunks", d.chunks.is_some()),
        ("--pp-schedule", d.pp_schedule != "1f1b"),
        ("--recompute", a.recompute != Recompute::None),
        ("--teacher (distillation)", a.distill.active()),
    ]
    .into_iter()
    .filter_map(|(f, given)| given.then_some(f))
    .collect()
}

/// Plans, prints and logs the layout, then trains it.
pub(super) fn run(mut a: TrainArgs) -> anyhow::Result<()> {
    let given = conflicts(&a);
    if !given.is_empty() {
        bail!(
            "--plan auto chooses the layout itself: drop {} (or drop --plan auto to run a fixed \
             layout)",
            given.join(", ")
        );
    }
    let spec = a.model.clone();
    let Some(zoo) = oar::models::ernie_config(&spec) else {
        bail!(
            "--plan auto plans a zoo ERNIE (the planner's cost model describes transformers), not \
             `{spec}`: give its layout yourself (--dp N)"
        );
    };
    let Some(name) = a.auto.cluster.clone() else {
        bail!("--plan auto needs --cluster FILE, the machines the ranks run on: `oar cluster calibrate -o local.toml` measures this one");
    };
    let file = Cluster::resolve(&name).with_context(|| format!("--cluster {name}"))?;
    let world = World::from_env()?;
    let cluster = cluster_for(&file, world).with_context(|| format!("--cluster {name}"))?;
    let data = text::prepare(&spec, &a)?;
    let cfg = text::student_config(zoo, &a, data.wp.len());
    let model = crate::cli::plan::ernie_spec(&spec, &cfg);
    let job = Job {
        global_batch: a.batch as u64,
        seq: a.text.seq as u64,
    };
    let choice = choose(&model, &job, &cluster)?;
    let fl = flags(&choice.best.plan);
    apply(&mut a, &choice.best.plan);
    if world.rank == 0 {
        print!("{}", show::summary(&choice, &cluster, &fl, world.size));
    }
    if let Some(log) = &a.log {
        let path = super::dist::rank_log_path(log, world.rank);
        show::log(&path, &choice, &cluster, &fl, world)?;
    }
    text::run_prepared(cfg, &spec, &a, data)
}

#[cfg(test)]
#[path = "plan_auto_tests.rs"]
mod tests;
