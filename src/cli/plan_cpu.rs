//! `oar plan MODEL --cluster FILE` on one CPU device (`examples/clusters/cpu1.toml`): there
//! is no parallelism to choose, so the plan is the peak memory of the training step `oar
//! train` would compile, predicted from that step graph (forward, loss, backward and
//! optimizer; f32) by `oar_passes::step_memory`, with its breakdown. Any zoo model with a
//! graph: PP-LCNet and the other image classifiers, the ERNIEs (a masked-LM step).

use super::plan::Format;
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::{Cluster, DeviceKind, Graph};
use oar::passes::parallel::specialize;
use oar::passes::step_memory::{predict_step_memory, StepMemory, StepMemoryOptions};
use oar::passes::training::{build_train_step, LossKind, Optimizer, TrainConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// Settings of a one-CPU-device plan (the training step's shape, as `oar train` takes it).
#[derive(Args, Debug)]
pub struct CpuStepArgs {
    /// One CPU device: input height and width of a zoo image classifier (default: the
    /// zoo's 224; `oar train` uses the data's or its own --image-size).
    #[arg(long)]
    image_size: Option<u64>,
    /// One CPU device: classes of a zoo image classifier's head (default: the zoo's 1000;
    /// `oar train` uses the data's).
    #[arg(long)]
    classes: Option<u64>,
    /// One CPU device: an ERNIE's vocabulary (default: the zoo's; `oar train` uses its
    /// WordPiece vocabulary, 8192 by default).
    #[arg(long)]
    vocab: Option<u64>,
    /// One CPU device: the step's optimizer, as `oar train --optimizer`.
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// One CPU device: executor threads, each with its own GEMM scratch (default: this
    /// machine's, as `oar train`).
    #[arg(long)]
    threads: Option<u64>,
}

/// Whether the cluster is a single CPU device.
pub fn is_one_cpu(cluster: &Cluster) -> bool {
    cluster.num_devices() == 1
        && cluster
            .node_groups
            .iter()
            .filter(|g| g.nodes > 0 && g.devices_per_node > 0)
            .all(|g| g.device.kind == DeviceKind::Cpu)
}

/// The step's description for the report.
struct StepShape {
    graph: Graph,
    slots: Vec<String>,
    about: String,
}

/// The training step `oar train` builds for zoo model `name`; `None` when `name` has no
/// zoo graph (a transformer config file, which the transformer planner handles).
fn step_of(
    name: &str,
    batch: u64,
    seq: Option<u64>,
    a: &CpuStepArgs,
) -> anyhow::Result<Option<StepShape>> {
    let optimizer: Optimizer = a.optimizer.parse()?;
    let mut tc = TrainConfig::new(optimizer);
    let (model, bindings, about) = if let Some(mut cfg) = oar::models::lcnet_config(name) {
        cfg.class_num = a.classes.unwrap_or(cfg.class_num);
        cfg.image_size = a.image_size.unwrap_or(cfg.image_size);
        let about = format!(
            "batch {batch}, {s}×{s} images, {} classes",
            cfg.class_num,
            s = cfg.image_size
        );
        let g = cfg.build(name).map_err(|e| anyhow::anyhow!("{e}"))?;
        (g, BTreeMap::from([("N".to_string(), batch)]), about)
    } else if let Some(mut cfg) = oar::models::ernie_config(name) {
        let seq = seq.unwrap_or(128);
        cfg.vocab = a.vocab.unwrap_or(cfg.vocab);
        cfg.max_positions = cfg.max_positions.max(seq);
        tc.loss = LossKind::MaskedLm;
        let about = format!(
            "masked LM, batch {batch} × seq {seq}, vocabulary {}",
            cfg.vocab
        );
        let g = cfg
            .build_masked_lm(name)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let b = BTreeMap::from([("N".to_string(), batch), ("seq".to_string(), seq)]);
        (g, b, about)
    } else {
        match oar::models::build(name) {
            Some(g) => {
                if a.image_size.is_some() || a.classes.is_some() {
                    bail!("--image-size and --classes resize PP-LCNet only; `{name}` is planned as the zoo builds it");
                }
                let about = format!("batch {batch}");
                (g?, BTreeMap::from([("N".to_string(), batch)]), about)
            }
            None => return Ok(None),
        }
    };
    let model = specialize(&model, &bindings)
        .with_context(|| format!("{name}: shapes must be static once the batch is bound"))?;
    let step = build_train_step(&model, &tc)
        .with_context(|| format!("cannot build the training step of {name}"))?;
    Ok(Some(StepShape {
        graph: step.graph,
        slots: step.slots.into_iter().map(|s| s.name).collect(),
        about: format!("{about}, {}, f32", a.optimizer),
    }))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// A one-CPU-device plan: the step and its predicted peak memory.
pub struct CpuPlan {
    name: String,
    cluster: String,
    device: String,
    about: String,
    threads: u64,
    memory: StepMemory,
    capacity: u64,
}

/// Plans zoo model `name` on the one-CPU-device `cluster`; `None` when `name` has no zoo
/// graph (a transformer config file).
pub fn predict(
    name: &str,
    cluster: &Cluster,
    batch: u64,
    seq: Option<u64>,
    a: &CpuStepArgs,
) -> anyhow::Result<Option<CpuPlan>> {
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    anyhow::ensure!(seq != Some(0), "--seq must be at least 1");
    let Some(step) = step_of(name, batch, seq, a)? else {
        return Ok(None);
    };
    let threads = match a.threads {
        Some(t) => {
            anyhow::ensure!(t > 0, "--threads must be at least 1");
            t
        }
        None => std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    };
    // The GEMM blocking the backend picks for this machine's CPU sets the scratch.
    let cpu = oar::codegen::cpu::host_cpu().context("cannot read this machine's CPU")?;
    let opts = StepMemoryOptions {
        slots: step.slots.iter().cloned().collect(),
        threads,
        scratch_per_thread: oar::codegen::kernel::Tiling::for_cpu(&cpu).scratch_bytes() as u64,
    };
    let memory = predict_step_memory(&step.graph, &opts)
        .with_context(|| format!("cannot plan the memory of {name}'s step"))?;
    let device = cluster
        .node_groups
        .iter()
        .find(|g| g.nodes > 0 && g.devices_per_node > 0)
        .map(|g| &g.device)
        .context("the cluster has no device")?;
    Ok(Some(CpuPlan {
        name: name.to_string(),
        cluster: cluster.name.clone(),
        device: device.model.clone(),
        about: step.about,
        threads,
        memory,
        capacity: (device.memory_gib * (1u64 << 30) as f64) as u64,
    }))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl CpuPlan {
    /// The report alone (a model the transformer planner does not know).
    pub fn emit(&self, format: Format, output: Option<&Path>) -> anyhow::Result<()> {
        let out = match format {
            Format::Json => serde_json::to_string_pretty(&self.json())? + "\n",
            Format::Text => self.text(),
            Format::Md => format!("```\n{}```\n", self.text()),
            Format::Html => format!("<pre>\n{}</pre>\n", html_escape(&self.text())),
        };
        super::common::emit(&out, output)
    }

    /// `report` (the transformer planner's, in `format`) with this plan added.
    pub fn append_to(&self, report: String, format: Format) -> anyhow::Result<String> {
        Ok(match format {
            Format::Json => {
                let mut j: serde_json::Value = serde_json::from_str(&report)?;
                if let Some(o) = j.as_object_mut() {
                    o.insert("one_device_step_memory".into(), self.json());
                }
                serde_json::to_string_pretty(&j)? + "\n"
            }
            Format::Text => format!("{report}\n{}", self.text()),
            Format::Md => format!("{report}\n```\n{}```\n", self.text()),
            Format::Html => {
                let pre = format!("<pre>\n{}</pre>\n", html_escape(&self.text()));
                match report.rfind("</body>") {
                    Some(at) => format!("{}{pre}{}", &report[..at], &report[at..]),
                    None => report + &pre,
                }
            }
        })
    }

    fn json(&self) -> serde_json::Value {
        let parts: serde_json::Map<String, serde_json::Value> = self
            .memory
            .parts()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "model": self.name,
            "cluster": self.cluster,
            "device": self.device,
            "step": self.about,
            "threads": self.threads,
            "peak_bytes": self.memory.total(),
            "breakdown_bytes": parts,
            "device_memory_bytes": self.capacity,
            "fits": self.memory.total() <= self.capacity,
        })
    }

    fn text(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let mut s = format!(
            "{} on `{}`: one CPU device ({})\n\
             training step (as `oar train` compiles it): {}, {} executor thread(s)\n\
             peak memory of the compiled step (every buffer allocated at once), predicted \
             from the step graph:\n",
            self.name, self.cluster, self.device, self.about, self.threads
        );
        for (what, bytes) in self.memory.parts() {
            s += &format!("  {what:<40} {:>10.2} MiB\n", mib(bytes));
        }
        let total = self.memory.total();
        s += &format!("  {:<40} {:>10.2} MiB\n", "total", mib(total));
        let share = 100.0 * total as f64 / self.capacity.max(1) as f64;
        s += &if total <= self.capacity {
            format!(
                "fits: {share:.1}% of the device's {:.1} GiB\n",
                gib(self.capacity)
            )
        } else {
            format!(
                "does not fit: {share:.0}% of the device's {:.1} GiB (lower --batch or --seq)\n",
                gib(self.capacity)
            )
        };
        s
    }
}
