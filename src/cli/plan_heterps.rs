//! `oar plan MODEL --cluster FILE --throughput T`: the HeterPS placement report — each layer
//! of a zoo model on a device kind, at the least cost meeting a throughput target, next to
//! the greedy, one-kind and RL schedulers (`oar_passes::placement`).

use super::plan::Format;
use anyhow::Context;
use clap::Args;
use oar::ir::Cluster;
use oar::passes::placement::{build_problem, schedule, Options, RlConfig, CRITEO_EPOCH_SAMPLES};
use std::path::Path;

#[derive(Args, Debug)]
pub struct HeterpsArgs {
    /// HeterPS mode: place each layer of a zoo model (a CTR model) on a device kind of the
    /// cluster at the least cost per epoch; implied by --throughput.
    #[arg(long)]
    heterps: bool,
    /// Required training throughput in samples/s (HeterPS mode; default 50000).
    #[arg(long, value_name = "SAMPLES/S")]
    throughput: Option<f64>,
    /// Samples per batch on one replica (HeterPS mode).
    #[arg(long, default_value_t = 512)]
    replica_batch: u64,
    /// Samples in one epoch, for the cost per epoch (default: Criteo's 45,840,617).
    #[arg(long, default_value_t = CRITEO_EPOCH_SAMPLES)]
    epoch_samples: f64,
    /// Rows of each sparse table of a CTR model (`ctr-dnn`, `wide-deep`, `deepfm`; feature
    /// hashing: 10^4 to 10^9), instead of the zoo's 1,000,001 (HeterPS mode).
    #[arg(long)]
    table_rows: Option<u64>,
    /// Policy updates of the RL baseline (16 episodes each).
    #[arg(long, default_value_t = 100)]
    rl_iterations: usize,
    /// Seed of the RL baseline.
    #[arg(long, default_value_t = 1)]
    rl_seed: u64,
}

impl HeterpsArgs {
    /// Whether `oar plan` runs in HeterPS mode.
    pub fn enabled(&self) -> bool {
        self.heterps || self.throughput.is_some()
    }
}

pub fn run(
    model: &str,
    cluster_spec: &str,
    nodes: Option<u32>,
    format: Format,
    output: Option<&Path>,
    a: &HeterpsArgs,
) -> anyhow::Result<()> {
    let entry = oar::models::find(model).with_context(|| {
        format!("`{model}` is not a zoo model (HeterPS placement needs a graph: see `oar models`)")
    })?;
    let graph = match a.table_rows {
        None => (entry.build)(),
        Some(rows) => {
            let mut c = oar::models::ctr_config(model).with_context(|| {
                format!("--table-rows applies to the CTR models (ctr-dnn, wide-deep, deepfm), not `{model}`")
            })?;
            anyhow::ensure!(rows > 0, "--table-rows must be at least 1");
            c.table_rows = rows;
            c.build(model)
        }
    }
    .with_context(|| format!("cannot build {model}"))?;
    let mut cluster = Cluster::resolve(cluster_spec)?;
    if let Some(n) = nodes {
        anyhow::ensure!(n > 0, "--nodes must be at least 1");
        cluster = cluster.with_nodes(n);
    }
    let mut bindings = entry.bindings();
    bindings.insert("N".into(), a.replica_batch);
    let opts = Options {
        target: a.throughput.unwrap_or(50_000.0),
        replica_batch: a.replica_batch,
        epoch_samples: a.epoch_samples,
        rl: RlConfig {
            iterations: a.rl_iterations,
            seed: a.rl_seed,
            ..RlConfig::default()
        },
    };
    let problem = build_problem(&graph, &bindings, &cluster, cluster_spec, &opts)?;
    let s = schedule(problem, &opts.rl)?;
    let out = match format {
        Format::Text => s.text(),
        Format::Md => s.markdown(),
        Format::Json => serde_json::to_string_pretty(&s.json())? + "\n",
        Format::Html => oar::passes::report_html::heterps_page(&s),
    };
    super::common::emit(&out, output)
}
