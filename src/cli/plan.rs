//! `oar plan MODEL --cluster SPEC`: the auto-parallelization report.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use oar::ir::Cluster;
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
    /// An ERNIE zoo model or a transformer config file (TOML: layers, hidden, heads, ffn, vocab, seq, causal).
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
}

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
    let layer = |s: &oar::models::ernie::StackConfig| LayerSpec {
        hidden: s.hidden,
        heads: s.heads,
        ffn: s.ffn,
    };
    // Universal layers, then the NLU and NLG task modules, which both run every step.
    let mut layers = vec![layer(&cfg.universal); cfg.universal.layers as usize];
    if let Some(t) = &cfg.task_modules {
        layers.extend(vec![layer(t); 2 * t.layers as usize]);
    }
    let spec = ModelSpec {
        name: name.to_string(),
        vocab: cfg.vocab,
        embed_hidden: cfg.universal.hidden,
        extra_embedding_rows: cfg.max_positions + cfg.type_vocab + cfg.task_vocab,
        layers,
    };
    Ok((spec, None))
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let (model, default_seq) = model_spec(&a.model)?;
    let mut cluster = Cluster::resolve(&a.cluster)?;
    if let Some(n) = a.nodes {
        anyhow::ensure!(n > 0, "--nodes must be at least 1");
        cluster = cluster.with_nodes(n);
    }
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
    if let (Some(path), Some(graph)) = (&a.emit_graph, &graph) {
        let annotated = annotate(graph, &outcome.best)
            .with_context(|| format!("cannot write the plan onto {}", a.model))?;
        std::fs::write(path, oar::ir::print(&annotated))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let scaling = weak_scaling(&model, &job, &cluster, &cost, &fixed);
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
    };
    let out = match a.format {
        Format::Text => report.text(),
        Format::Md => report.markdown(),
        Format::Json => serde_json::to_string_pretty(&report.json())? + "\n",
        Format::Html => report.html(),
    };
    super::common::emit(&out, a.output.as_deref())
}
