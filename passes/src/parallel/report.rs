//! The auto-parallelization report: text, Markdown, JSON and HTML (with SVG charts).

use super::fault_model::FaultReport;
use super::search::{PlanOutcome, ScalingRow};
use super::spec::ModelSpec;
use super::step_cost::{Evaluation, Job, Recompute, Schedule};
use oar_ir::cluster::Cluster;
use serde_json::json;
use std::fmt::Write;

const GIB: f64 = (1u64 << 30) as f64;

/// Everything a report shows.
pub struct Report<'a> {
    pub model: &'a ModelSpec,
    pub job: &'a Job,
    pub cluster: &'a Cluster,
    pub outcome: &'a PlanOutcome,
    pub scaling: &'a [ScalingRow],
    /// Peak FLOP/s of one device, for MFU.
    pub peak: f64,
    /// The fault model, when a failure rate is known.
    pub fault: Option<FaultReport>,
}

/// Throughput figures of an evaluation.
pub struct Throughput {
    pub tokens_per_s: f64,
    pub tflops_per_device: f64,
    pub mfu: f64,
}

impl Report<'_> {
    pub fn throughput(&self, e: &Evaluation) -> Throughput {
        let tokens = (self.job.global_batch * self.job.seq) as f64;
        let flops = self
            .model
            .step_flops(self.job.global_batch * self.job.seq, self.job.seq);
        let n = self.cluster.num_devices() as f64;
        let per_device = flops / e.time.total / n;
        Throughput {
            tokens_per_s: tokens / e.time.total,
            tflops_per_device: per_device / 1e12,
            mfu: per_device / self.peak,
        }
    }

    /// Each pipeline stage's device and layer count, when stages run on different kinds.
    fn stage_devices(&self, e: &Evaluation) -> Vec<(usize, String, usize)> {
        e.stage_groups
            .iter()
            .zip(&e.plan.stage_layers)
            .enumerate()
            .map(|(k, (&g, &n))| {
                let model = self
                    .cluster
                    .node_groups
                    .get(g)
                    .map_or_else(String::new, |g| g.device.model.clone());
                (k, model, n)
            })
            .collect()
    }

    fn mixed(&self) -> bool {
        self.cluster.node_groups.len() > 1
    }

    /// One line naming a layout (also the plan page's).
    pub fn plan_line(e: &Evaluation) -> String {
        let p = &e.plan;
        let rc = match p.recompute {
            Recompute::None => "no recompute",
            Recompute::Selective => "selective recompute",
            Recompute::Full => "full recompute",
        };
        let sched = match p.schedule {
            Schedule::GPipe => "GPipe".to_string(),
            Schedule::OneFOneB => "1F1B".to_string(),
            Schedule::Interleaved(v) => format!("interleaved 1F1B (v={v})"),
        };
        format!(
            "dp={} tp={} pp={}, micro-batch {} x {}, ZeRO-{}, {rc}{}, {sched}",
            p.dp,
            p.tp,
            p.pp,
            p.micro_batch_size,
            p.micro_batches,
            p.zero_stage,
            if p.sequence_parallel {
                ", sequence parallel"
            } else {
                ""
            }
        )
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let b = &self.outcome.best;
        let t = &b.time;
        let m = &b.memory;
        let tp = self.throughput(b);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "auto-parallel plan for {} ({:.2}B parameters) on {} ({} nodes, {} devices)",
            self.model.name,
            self.model.params() as f64 / 1e9,
            self.cluster.name,
            self.cluster.num_nodes(),
            self.cluster.num_devices()
        );
        let _ = writeln!(
            s,
            "job: global batch {} sequences of {} tokens\n",
            self.job.global_batch, self.job.seq
        );
        let _ = writeln!(s, "chosen: {}", Self::plan_line(b));
        let map = match b.plan.mapping {
            super::step_cost::Mapping::TpDpPp => {
                "tensor groups inside a node, then data, pipeline stages outermost"
            }
            super::step_cost::Mapping::TpPpDp => {
                "tensor groups inside a node, then pipeline, data replicas outermost"
            }
        };
        let _ = writeln!(s, "mapping: {map}");
        let stages: Vec<String> = b.plan.stage_layers.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(s, "layers per stage: [{}]", stages.join(", "));
        if self.mixed() {
            let per: Vec<String> = self
                .stage_devices(b)
                .into_iter()
                .map(|(k, d, n)| format!("{k}: {d} ({n} layers)"))
                .collect();
            let _ = writeln!(s, "stage devices: {}", per.join(", "));
        }
        let _ = writeln!(
            s,
            "intra-op sharding per layer: {}\n",
            b.layer_strategy.join(", ")
        );
        let _ = writeln!(s, "step time {:>10.1} ms", t.total * 1e3);
        for (k, v) in [
            ("compute", t.compute),
            ("recompute", t.recompute),
            ("tensor-parallel comm", t.tensor_parallel_comm),
            ("pipeline send/recv", t.pipeline_p2p),
            ("exposed dp comm", t.data_parallel_comm),
            ("pipeline bubble", t.bubble),
            ("optimizer", t.optimizer),
            ("straggler wait", t.straggler),
        ] {
            let _ = writeln!(
                s,
                "  {k:<22} {:>10.1} ms  {:>5.1}%",
                v * 1e3,
                v / t.total * 100.0
            );
        }
        let _ = writeln!(
            s,
            "  (gradient all-reduce: {:?}; spine contention {:.1} ms of the exposed dp comm)",
            b.dp_all_reduce,
            t.contention * 1e3
        );
        let _ = writeln!(
            s,
            "\nthroughput {:.0} tokens/s, {:.1} TFLOP/s per device, MFU {:.1}%",
            tp.tokens_per_s,
            tp.tflops_per_device,
            tp.mfu * 100.0
        );
        let _ = writeln!(
            s,
            "\nmemory per device {:>8.2} GiB of {:.0} GiB",
            m.total / GIB,
            m.capacity / GIB
        );
        for (k, v) in [
            ("parameters", m.parameters),
            ("gradients", m.gradients),
            ("optimizer states", m.optimizer_states),
            ("activations", m.activations),
            ("logits", m.logits),
            ("workspace + fragmentation", m.workspace),
        ] {
            let _ = writeln!(s, "  {k:<26} {:>8.2} GiB", v / GIB);
        }
        let _ = writeln!(s, "\nalternatives");
        for a in &self.outcome.alternatives {
            let _ = writeln!(
                s,
                "  {:<70} {:>9.1} ms  {}",
                Self::plan_line(&a.evaluation),
                a.evaluation.time.total * 1e3,
                a.why
            );
        }
        let _ = writeln!(
            s,
            "\nweak scaling (same batch per device, same layout per replica; losses: straggler wait, exposed dp comm)"
        );
        let _ = writeln!(
            s,
            "  {:>8} {:>8} {:>14} {:>14} {:>10}",
            "devices", "batch", "dp/tp/pp", "tokens/s", "efficiency"
        );
        for r in self.scaling {
            let plan = r
                .plan
                .map(|(d, t, p)| format!("{d}/{t}/{p}"))
                .unwrap_or_else(|| "does not fit".into());
            let tps = r
                .tokens_per_s
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into());
            let eff = r
                .efficiency
                .map(|v| format!("{:.1}%", v * 100.0))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  {:>8} {:>8} {:>14} {:>14} {:>10}",
                r.devices, r.global_batch, plan, tps, eff
            );
        }
        if let Some(f) = &self.fault {
            let _ = write!(s, "\n{}", f.text());
        }
        let _ = writeln!(
            s,
            "\nplanned in {:.2} s ({} layouts considered, {} fit)",
            self.outcome.planning_seconds, self.outcome.considered, self.outcome.fitting
        );
        s
    }

    /// The JSON report.
    pub fn json(&self) -> serde_json::Value {
        let b = &self.outcome.best;
        let tp = self.throughput(b);
        json!({
            "model": self.model.name,
            "parameters": self.model.params(),
            "cluster": self.cluster.name,
            "devices": self.cluster.num_devices(),
            "global_batch": self.job.global_batch,
            "seq": self.job.seq,
            "dp": b.plan.dp, "tp": b.plan.tp, "pp": b.plan.pp,
            "micro_batch_size": b.plan.micro_batch_size,
            "micro_batches": b.plan.micro_batches,
            "zero_stage": b.plan.zero_stage,
            "recompute": b.plan.recompute,
            "sequence_parallel": b.plan.sequence_parallel,
            "schedule": format!("{:?}", b.plan.schedule),
            "mapping": b.plan.mapping,
            "stage_layers": b.plan.stage_layers,
            "stage_devices": self.stage_devices(b).into_iter().map(|(_, d, _)| d).collect::<Vec<_>>(),
            "dp_all_reduce": b.dp_all_reduce,
            "intra_op": b.layer_strategy,
            "step_time_s": b.time.total,
            "breakdown_s": b.time,
            "tokens_per_s": tp.tokens_per_s,
            "tflops_per_device": tp.tflops_per_device,
            "mfu": tp.mfu,
            "peak_memory_bytes": b.memory.total as u64,
            "memory_bytes": b.memory,
            "alternatives": self.outcome.alternatives.iter().map(|a| json!({
                "dp": a.evaluation.plan.dp, "tp": a.evaluation.plan.tp, "pp": a.evaluation.plan.pp,
                "plan": Self::plan_line(&a.evaluation), "step_time_s": a.evaluation.time.total,
                "fits": a.evaluation.fits, "why": a.why,
            })).collect::<Vec<_>>(),
            "weak_scaling": self.scaling,
            "fault_model": self.fault,
            "planning_time_s": self.outcome.planning_seconds,
            "layouts_considered": self.outcome.considered,
        })
    }

    /// Markdown: the text report's content as tables.
    pub fn markdown(&self) -> String {
        let b = &self.outcome.best;
        let tp = self.throughput(b);
        let mut s = format!(
            "# Auto-parallel plan: {} on {}\n\n",
            self.model.name, self.cluster.name
        );
        let _ = writeln!(s, "**Chosen:** {}\n", Self::plan_line(b));
        let _ = writeln!(s, "| metric | value |\n| --- | --- |");
        let _ = writeln!(s, "| step time | {:.1} ms |\n| straggler wait | {:.1} ms |\n| spine contention | {:.1} ms |\n| gradient all-reduce | {:?} |\n| tokens/s | {:.0} |\n| TFLOP/s per device | {:.1} |\n| MFU | {:.1}% |\n| memory per device | {:.2} / {:.0} GiB |\n", b.time.total * 1e3, b.time.straggler * 1e3, b.time.contention * 1e3, b.dp_all_reduce, tp.tokens_per_s, tp.tflops_per_device, tp.mfu * 100.0, b.memory.total / GIB, b.memory.capacity / GIB);
        if self.mixed() {
            let _ = writeln!(s, "| stage | device | layers |\n| --- | --- | --- |");
            for (k, d, n) in self.stage_devices(b) {
                let _ = writeln!(s, "| {k} | {d} | {n} |");
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "## Alternatives\n\n| plan | step time | why it lost |\n| --- | --- | --- |"
        );
        for a in &self.outcome.alternatives {
            let _ = writeln!(
                s,
                "| {} | {:.1} ms | {} |",
                Self::plan_line(&a.evaluation),
                a.evaluation.time.total * 1e3,
                a.why
            );
        }
        let _ = writeln!(s, "\n## Weak scaling\n\n| devices | batch | dp/tp/pp | tokens/s | efficiency |\n| --- | --- | --- | --- | --- |");
        for r in self.scaling {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.devices,
                r.global_batch,
                r.plan
                    .map(|(d, t, p)| format!("{d}/{t}/{p}"))
                    .unwrap_or("does not fit".into()),
                r.tokens_per_s
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or("-".into()),
                r.efficiency
                    .map(|v| format!("{:.1}%", v * 100.0))
                    .unwrap_or("-".into())
            );
        }
        if let Some(f) = &self.fault {
            let _ = write!(s, "\n{}", f.markdown());
        }
        s
    }

    /// The plan page: a self-contained HTML file with SVG charts (`report_html::plan_page`).
    pub fn html(&self) -> String {
        crate::report_html::plan_page(self)
    }
}
