//! The auto-parallelization report: text, Markdown, JSON and HTML (with SVG charts).

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

    fn plan_line(e: &Evaluation) -> String {
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
        let _ = writeln!(s, "\nweak scaling (same batch per device)");
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
        let _ = writeln!(s, "| step time | {:.1} ms |\n| tokens/s | {:.0} |\n| TFLOP/s per device | {:.1} |\n| MFU | {:.1}% |\n| memory per device | {:.2} / {:.0} GiB |\n", b.time.total * 1e3, tp.tokens_per_s, tp.tflops_per_device, tp.mfu * 100.0, b.memory.total / GIB, b.memory.capacity / GIB);
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
        s
    }

    fn svg_bars(title: &str, items: &[(&str, f64)], unit: &str) -> String {
        let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-12);
        let mut s = format!("<h3>{title}</h3><svg width=\"640\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">", items.len() * 24 + 8);
        for (i, (k, v)) in items.iter().enumerate() {
            let w = v / max * 380.0;
            let y = i * 24 + 4;
            let _ = write!(s, "<text x=\"0\" y=\"{}\" font-size=\"12\">{k}</text><rect x=\"200\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"#4a7fb5\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{v:.2} {unit}</text>", y + 14, 205.0 + w, y + 14);
        }
        s + "</svg>"
    }

    /// HTML with SVG charts of the step-time breakdown, memory and weak scaling.
    pub fn html(&self) -> String {
        let b = &self.outcome.best;
        let t = &b.time;
        let m = &b.memory;
        let time = [
            ("compute", t.compute * 1e3),
            ("recompute", t.recompute * 1e3),
            ("tensor-parallel comm", t.tensor_parallel_comm * 1e3),
            ("pipeline send/recv", t.pipeline_p2p * 1e3),
            ("exposed dp comm", t.data_parallel_comm * 1e3),
            ("bubble", t.bubble * 1e3),
            ("optimizer", t.optimizer * 1e3),
        ];
        let mem = [
            ("parameters", m.parameters / GIB),
            ("gradients", m.gradients / GIB),
            ("optimizer states", m.optimizer_states / GIB),
            ("activations", m.activations / GIB),
            ("logits", m.logits / GIB),
            ("workspace", m.workspace / GIB),
            ("capacity", m.capacity / GIB),
        ];
        let labels: Vec<String> = self.scaling.iter().map(|r| r.devices.to_string()).collect();
        let scale: Vec<(&str, f64)> = labels
            .iter()
            .zip(self.scaling)
            .map(|(l, r)| (l.as_str(), r.efficiency.unwrap_or(0.0) * 100.0))
            .collect();
        let body = self.markdown().replace('&', "&amp;").replace('<', "&lt;");
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>oar plan: {}</title></head><body><pre>{body}</pre>{}{}{}</body></html>\n",
            self.model.name,
            Self::svg_bars("Step time (ms)", &time, "ms"),
            Self::svg_bars("Memory per device (GiB)", &mem, "GiB"),
            Self::svg_bars("Weak-scaling efficiency by device count (%)", &scale, "%"),
        )
    }
}
