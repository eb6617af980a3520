//! `oar plan MODEL --cluster SPEC`: the auto-parallelization report.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use oar::ir::Cluster;
use oar::passes::parallel::fault_model::{fault_report, FaultInputs, FaultReport};
use oar::passes::parallel::report::Report;
use oar::passes::parallel::{
    annotate, plan_with, weak_scaling, Constraints, Job, LayerSpec, ModelSpec, TrainingCostModel,
    TransformerConfig,
};
use std::path::PathBuf;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Text,
    Md,
    Json,
    Html,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RecomputeArg {
    None,
    Selective,
    Full,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// An ERNIE zoo model or a transformer config file (TOML: layers, hidden, heads, ffn, vocab, seq, causal);
    /// with --throughput or --heterps, any zoo model (a CTR model) to place on device kinds;
    /// on a one-CPU-device cluster, any zoo model with a graph (PP-LCNet, the ERNIEs): the
    /// training step's peak memory, from its step graph.
    model: String,
    /// A cluster preset (see `oar cluster list`) or a cluster file.
    #[arg(long)]
    cluster: String,
    /// Override the number of nodes.
    #[arg(long)]
    nodes: Option<u32>,
    /// Global batch in sequences (default: 2 per device).
    #[arg(long)]
    batch: Option<u64>,
    /// Sequence length (default: the config's, else 1024).
    #[arg(long)]
    seq: Option<u64>,
    /// Fix the data-parallel degree.
    #[arg(long)]
    dp: Option<u64>,
    /// Fix the tensor-parallel degree.
    #[arg(long)]
    tp: Option<u64>,
    /// Fix the pipeline-parallel degree.
    #[arg(long)]
    pp: Option<u64>,
    /// Fix the ZeRO stage (0-3).
    #[arg(long)]
    zero: Option<u8>,
    /// Fix activation recomputation.
    #[arg(long, value_enum)]
    recompute: Option<RecomputeArg>,
    /// Fix sequence parallelism on or off.
    #[arg(long)]
    sequence_parallel: Option<bool>,
    /// Fix the micro-batch size.
    #[arg(long)]
    micro_batch: Option<u64>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to a file.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Also write the model's graph with the chosen plan as distribution attributes (text
    /// IR: one mesh per pipeline stage, weight and input placements, node stages); a zoo
    /// model only. `oar inspect FILE --rank R` shows what rank R runs.
    #[arg(long, value_name = "FILE.oir")]
    emit_graph: Option<PathBuf>,
    /// Mean time between failures of one node, hours (default: the cluster file's
    /// `scale_effects.node_mtbf_hours`); adds the fault model to the report.
    #[arg(long, value_name = "H")]
    mtbf_hours: Option<f64>,
    /// Checkpoint save/load bandwidth of one node, GB/s (measure it with `oar checkpoint`).
    #[arg(long, value_name = "GB/S", default_value_t = DEFAULT_CKPT_BANDWIDTH_GBS)]
    ckpt_bandwidth: f64,
    /// Relaunch time after a failure beyond loading the checkpoint, seconds.
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    relaunch_seconds: f64,
    /// Tokens the job trains on; sets the job length for the fault model.
    #[arg(long, default_value_t = 300e9)]
    train_tokens: f64,
    /// Restarts a fault-tolerant job may use before it counts as failed.
    #[arg(long, default_value_t = 100)]
    max_restarts: u32,
    /// Simulate N jobs of the planned length with random node failures (needs an MTBF).
    #[arg(long, value_name = "N")]
    simulate_failures: Option<u64>,
    /// Seed of the failure simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    heterps: super::plan_heterps::HeterpsArgs,
    #[command(flatten)]
    cpu: super::plan_cpu::CpuStepArgs,
}

/// Checkpoint bandwidth of one node when none is given: 2 GB/s, an assumption (a node's
/// share of a parallel file system; NVMe-local writes are faster, object stores slower).
const DEFAULT_CKPT_BANDWIDTH_GBS: f64 = 2.0;

/// The planner's view of a zoo ERNIE or a config file, with its default sequence length.
fn model_spec(name: &str) -> anyhow::Result<(ModelSpec, Option<u64>)> {
    let path = std::path::Path::new(name);
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        let c = TransformerConfig::from_toml(&text, name)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok((c.spec(&stem), c.seq));
    }
    let Some(cfg) = oar::models::ernie_config(name) else {
        if name.ends_with(".toml") {
            bail!("cannot read {name}: no such file");
        }
        bail!("`{name}` is not a transformer the planner knows: give an ERNIE zoo model (see `oar models`) or a TOML config file");
    };
    Ok((ernie_spec(name, &cfg), None))
}

/// The planner's view of an ERNIE configuration (a zoo one, or `oar train`'s resized to its
/// vocabulary and overrides): the universal layers, then the NLU and NLG task modules, which
/// both run every step.
pub(crate) fn ernie_spec(name: &str, cfg: &oar::models::ErnieConfig) -> ModelSpec {
    let layer = |s: &oar::models::ernie::StackConfig| LayerSpec {
        hidden: s.hidden,
        heads: s.heads,
        ffn: s.ffn,
    };
    let mut layers = vec![layer(&cfg.universal); cfg.universal.layers as usize];
    if let Some(t) = &cfg.task_modules {
        layers.extend(vec![layer(t); 2 * t.layers as usize]);
    }
    ModelSpec {
        name: name.to_string(),
        vocab: cfg.vocab,
        embed_hidden: cfg.universal.hidden,
        extra_embedding_rows: cfg.max_positions + cfg.type_vocab + cfg.task_vocab,
        layers,
    }
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    if a.heterps.enabled() {
        let out = a.output.as_deref();
        return super::plan_heterps::run(&a.model, &a.cluster, a.nodes, a.format, out, &a.heterps);
    }
    let mut cluster = Cluster::resolve(&a.cluster)?;
    if let Some(n) = a.nodes {
        anyhow::ensure!(n > 0, "--nodes must be at least 1");
        cluster = cluster.with_nodes(n);
    }
    // One CPU device: the training step's memory from its graph, for any zoo model with
    // one; beside the transformer planner's report for a transformer it knows.
    let one_cpu = super::plan_cpu::is_one_cpu(&cluster) && a.emit_graph.is_none();
    let (model, default_seq) = match model_spec(&a.model) {
        Ok(spec) => spec,
        Err(e) if one_cpu => {
            // `oar train`'s default batch.
            let batch = a.batch.unwrap_or(32);
            return match super::plan_cpu::predict(&a.model, &cluster, batch, a.seq, &a.cpu)? {
                Some(p) => p.emit(a.format, a.output.as_deref()),
                None => Err(e.context(format!(
                    "`{}` has no zoo graph: on one CPU device `oar plan` takes a zoo model (see `oar models`) or a transformer",
                    a.model
                ))),
            };
        }
        Err(e) => return Err(e),
    };
    let seq = a.seq.or(default_seq).unwrap_or(1024);
    anyhow::ensure!(seq > 0, "--seq must be at least 1");
    let batch = a.batch.unwrap_or(2 * cluster.num_devices());
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let job = Job {
        global_batch: batch,
        seq,
    };
    let cost = TrainingCostModel::default();
    use oar::passes::parallel::step_cost::Recompute;
    let fixed = Constraints {
        dp: a.dp,
        tp: a.tp,
        pp: a.pp,
        zero_stage: a.zero,
        recompute: a.recompute.map(|r| match r {
            RecomputeArg::None => Recompute::None,
            RecomputeArg::Selective => Recompute::Selective,
            RecomputeArg::Full => Recompute::Full,
        }),
        sequence_parallel: a.sequence_parallel,
        micro_batch_size: a.micro_batch,
        ..Default::default()
    };
    // The graph to annotate, checked before planning.
    let graph = match &a.emit_graph {
        Some(_) => match oar::models::build(&a.model) {
            Some(g) => Some(g?),
            None => bail!(
                "--emit-graph needs a zoo model (a config file describes no graph): `{}`",
                a.model
            ),
        },
        None => None,
    };
    let outcome = plan_with(&model, &job, &cluster, &cost, &fixed)?;
    // Checked before the (slower) weak-scaling sweep.
    let fault = fault_model(&a, &cluster, &job, &outcome.best)?;
    if let (Some(path), Some(graph)) = (&a.emit_graph, &graph) {
        let annotated = annotate(graph, &outcome.best)
            .with_context(|| format!("cannot write the plan onto {}", a.model))?;
        std::fs::write(path, oar::ir::print(&annotated))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let scaling = weak_scaling(&model, &job, &cluster, &cost, &outcome.best.plan);
    let peak =
        oar::passes::parallel::step_cost::Evaluator::new(&model, &job, &cluster, cost.clone())
            .peak();
    let report = Report {
        model: &model,
        job: &job,
        cluster: &cluster,
        outcome: &outcome,
        scaling: &scaling,
        peak,
        fault,
    };
    let out = match a.format {
        Format::Text => report.text(),
        Format::Md => report.markdown(),
        Format::Json => serde_json::to_string_pretty(&report.json())? + "\n",
        Format::Html => report.html(),
    };
    let out = match one_cpu {
        true => match super::plan_cpu::predict(&a.model, &cluster, batch, Some(seq), &a.cpu) {
            Ok(Some(p)) => p.append_to(out, a.format)?,
            Ok(None) => out,
            // The transformer report stands without it.
            Err(e) => {
                eprintln!("the one-device step memory is not available: {e:#}");
                out
            }
        },
        false => out,
    };
    super::common::emit(&out, a.output.as_deref())
}

/// The fault model of the chosen plan, when a node MTBF is known.
fn fault_model(
    a: &PlanArgs,
    cluster: &Cluster,
    job: &Job,
    best: &oar::passes::parallel::Evaluation,
) -> anyhow::Result<Option<FaultReport>> {
    let Some(mtbf) = a.mtbf_hours.or(cluster.scale_effects.node_mtbf_hours) else {
        anyhow::ensure!(
            a.simulate_failures.is_none(),
            "--simulate-failures needs a node failure rate: give --mtbf-hours H or `node_mtbf_hours` in the cluster file's [scale_effects]"
        );
        return Ok(None);
    };
    anyhow::ensure!(
        mtbf.is_finite() && mtbf > 0.0,
        "--mtbf-hours must be a positive number"
    );
    anyhow::ensure!(
        a.ckpt_bandwidth.is_finite() && a.ckpt_bandwidth > 0.0,
        "--ckpt-bandwidth must be a positive number of GB/s"
    );
    anyhow::ensure!(
        a.relaunch_seconds.is_finite() && a.relaunch_seconds >= 0.0,
        "--relaunch-seconds must be zero or positive"
    );
    anyhow::ensure!(
        a.train_tokens.is_finite() && a.train_tokens > 0.0,
        "--train-tokens must be positive"
    );
    anyhow::ensure!(
        a.simulate_failures
            .is_none_or(|n| (1..=10_000_000).contains(&n)),
        "--simulate-failures takes 1 to 10,000,000 jobs"
    );
    // Each device saves its shard of the parameters and optimizer states (fp32 master
    // weights and moments); a node writes its devices' shards through its own bandwidth.
    let per_device = best.memory.parameters + best.memory.optimizer_states;
    let per_node = cluster.node_groups[0].devices_per_node as f64;
    let tokens_per_s = (job.global_batch * job.seq) as f64 / best.time.total;
    let inputs = FaultInputs {
        node_mtbf_hours: mtbf,
        nodes: cluster.num_nodes(),
        checkpoint_bytes_per_node: per_device * per_node,
        checkpoint_bandwidth_gbs: a.ckpt_bandwidth,
        relaunch_seconds: a.relaunch_seconds,
        job_hours: a.train_tokens / tokens_per_s / 3600.0,
        max_restarts: a.max_restarts,
    };
    Ok(Some(fault_report(&inputs, a.simulate_failures, a.seed)))
}
