//! The HeterPS placement report: text, Markdown and JSON (the HTML page is
//! `report_html::heterps`). Every figure comes from the [`Schedule`].

use super::problem::{Placement, Problem};
use super::{MethodOutcome, Schedule};
use serde_json::{json, Value};
use std::fmt::Write;

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// Bytes with a binary unit.
pub fn bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// US dollars: 2 decimals, 4 below a dollar (an epoch can cost cents).
pub fn dollars(x: f64) -> String {
    if x.abs() < 1.0 {
        format!("{x:.4}")
    } else {
        format!("{x:.2}")
    }
}

/// Hours as seconds, minutes or hours, whichever reads best.
pub fn wall(hours: f64) -> String {
    let s = hours * 3600.0;
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{hours:.1} h")
    }
}

/// Seconds as ms or s.
pub fn duration(s: f64) -> String {
    if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// The layers of a stage: `emb` or `fc0..out`.
pub fn stage_layers(p: &Problem, first: usize, end: usize) -> String {
    if end - first == 1 {
        p.layers[first].name.clone()
    } else {
        format!("{}..{}", p.layers[first].name, p.layers[end - 1].name)
    }
}

/// A placement on one line: `emb: cpu-server x2 → fc0..out: a100 x1`.
pub fn placement_line(p: &Problem, pl: &Placement) -> String {
    pl.stages
        .iter()
        .map(|s| {
            format!(
                "{}: {} x{}",
                stage_layers(p, s.first, s.end),
                p.kinds[s.kind].name,
                s.replicas
            )
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Devices a placement uses.
pub fn devices(pl: &Placement) -> u64 {
    pl.stages.iter().map(|s| s.replicas as u64).sum()
}

/// One row of the methods table: (method, placement, devices, samples/s, $/h, $/epoch,
/// cost relative to exact, schedule time).
pub fn method_row(s: &Schedule, m: &MethodOutcome) -> [String; 8] {
    let p = &s.problem;
    let time = duration(m.seconds);
    match &m.placement {
        None => [
            m.method.label().into(),
            "no such device kind".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            time,
        ],
        Some(Err(max)) => [
            m.method.label().into(),
            format!("misses the target (at most {} samples/s)", thousands(*max)),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            time,
        ],
        Some(Ok(pl)) => [
            m.method.label().into(),
            placement_line(p, pl),
            devices(pl).to_string(),
            thousands(pl.throughput),
            dollars(pl.price_per_hour),
            dollars(pl.cost_per_epoch),
            format!("{:.2}x", pl.cost_per_epoch / s.best.cost_per_epoch),
            time,
        ],
    }
}

/// The methods table's columns.
pub const METHOD_HEAD: [&str; 8] = [
    "method",
    "placement",
    "devices",
    "samples/s",
    "$/h",
    "$/epoch",
    "vs exact",
    "time to schedule",
];

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, x)| format!("{x:<w$}", w = widths[c]))
            .collect();
        let _ = writeln!(s, "  {}", line.join("  ").trim_end());
    }
    s
}

fn md_table(rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(s, "| {} |", r.join(" | "));
        if i == 0 {
            let _ = writeln!(s, "|{}", " --- |".repeat(r.len()));
        }
    }
    s
}

impl Schedule {
    fn kinds_rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![vec![
            "kind".into(),
            "device".into(),
            "sort".into(),
            "$/h per device".into(),
            "available".into(),
            "memory".into(),
        ]];
        for k in &self.problem.kinds {
            rows.push(vec![
                k.name.clone(),
                k.model.clone(),
                k.device_kind.name().into(),
                format!("{:.2}", k.price_per_hour),
                k.available.to_string(),
                bytes(k.memory_bytes),
            ]);
        }
        rows
    }

    fn layer_rows(&self) -> Vec<Vec<String>> {
        let p = &self.problem;
        let mut head: Vec<String> = vec!["#".into(), "layer".into(), "sparse".into()];
        head.extend(p.kinds.iter().map(|k| format!("{} us/sample", k.name)));
        head.extend(["dense params".into(), "tables".into(), "cut after".into()]);
        let mut rows = vec![head];
        for (i, l) in p.layers.iter().enumerate() {
            let mut r = vec![
                i.to_string(),
                l.name.clone(),
                if l.sparse { "yes" } else { "no" }.into(),
            ];
            r.extend(
                l.seconds_per_sample
                    .iter()
                    .map(|s| format!("{:.4}", s * 1e6)),
            );
            r.push(bytes(l.dense_param_bytes));
            r.push(bytes(l.sparse_table_bytes));
            r.push(if i + 1 < p.layers.len() {
                format!("{:.0} B/sample", l.cut_bytes_after)
            } else {
                "-".into()
            });
            rows.push(r);
        }
        rows
    }

    fn stage_rows(&self) -> Vec<Vec<String>> {
        let p = &self.problem;
        let mut rows = vec![vec![
            "stage".into(),
            "layers".into(),
            "kind".into(),
            "replicas".into(),
            "samples/s".into(),
            "efficiency".into(),
            "$/h".into(),
        ]];
        for (i, s) in self.best.stages.iter().enumerate() {
            rows.push(vec![
                i.to_string(),
                stage_layers(p, s.first, s.end),
                p.kinds[s.kind].name.clone(),
                s.replicas.to_string(),
                thousands(s.throughput),
                format!("{:.1}%", s.efficiency * 100.0),
                format!("{:.2}", s.replicas as f64 * p.kinds[s.kind].price_per_hour),
            ]);
        }
        rows
    }

    fn method_rows(&self) -> Vec<Vec<String>> {
        let mut rows = vec![METHOD_HEAD.iter().map(|s| s.to_string()).collect()];
        for m in &self.methods {
            rows.push(method_row(self, m).to_vec());
        }
        rows
    }

    fn summary_lines(&self) -> [String; 3] {
        let p = &self.problem;
        let b = &self.best;
        [
            format!(
                "HeterPS placement of {} on {}: target {} samples/s, batch {} per replica, epoch {} samples",
                p.model,
                p.cluster,
                thousands(p.target),
                p.replica_batch,
                thousands(p.epoch_samples)
            ),
            format!(
                "throughput {} samples/s (the most any placement reaches on these devices: {})",
                thousands(b.throughput),
                thousands(self.max_throughput)
            ),
            format!(
                "cost ${}/h, ${} per epoch ({} per epoch) on {} device{}",
                dollars(b.price_per_hour),
                dollars(b.cost_per_epoch),
                wall(b.hours_per_epoch),
                devices(b),
                if devices(b) == 1 { "" } else { "s" }
            ),
        ]
    }

    /// The plain-text report.
    pub fn text(&self) -> String {
        let [head, tp, cost] = self.summary_lines();
        let mut s = String::new();
        let _ = writeln!(s, "{head}\n");
        let _ = writeln!(s, "device kinds");
        s += &table(&self.kinds_rows());
        let _ = writeln!(
            s,
            "\nlayers (training time per sample on one device; bytes crossing the cut after each)"
        );
        s += &table(&self.layer_rows());
        let _ = writeln!(
            s,
            "\nplacement (exact: least cost per epoch meeting the target)"
        );
        s += &table(&self.stage_rows());
        let _ = writeln!(s, "{tp}\n{cost}");
        let _ = writeln!(
            s,
            "\nmethods (replicas: the cheapest counts for each method's kinds)"
        );
        s += &table(&self.method_rows());
        s
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let [head, tp, cost] = self.summary_lines();
        let mut s = format!("# {head}\n\n## Device kinds\n\n");
        s += &md_table(&self.kinds_rows());
        s += "\n## Layers\n\n";
        s += &md_table(&self.layer_rows());
        s += "\n## Placement\n\n";
        s += &md_table(&self.stage_rows());
        let _ = write!(s, "\n{tp}; {cost}.\n\n## Methods\n\n");
        s += &md_table(&self.method_rows());
        s
    }

    /// The JSON report.
    pub fn json(&self) -> Value {
        let p = &self.problem;
        let placement = |pl: &Placement| {
            json!({
                "stages": pl.stages.iter().map(|s| json!({
                    "layers": p.layers[s.first..s.end].iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
                    "kind": p.kinds[s.kind].name,
                    "replicas": s.replicas,
                    "samples_per_s": s.throughput,
                    "efficiency": s.efficiency,
                })).collect::<Vec<_>>(),
                "samples_per_s": pl.throughput,
                "price_per_hour": pl.price_per_hour,
                "cost_per_epoch": pl.cost_per_epoch,
                "hours_per_epoch": pl.hours_per_epoch,
            })
        };
        json!({
            "model": p.model,
            "cluster": p.cluster,
            "target_samples_per_s": p.target,
            "replica_batch": p.replica_batch,
            "epoch_samples": p.epoch_samples,
            "max_samples_per_s": self.max_throughput,
            "kinds": p.kinds,
            "layers": p.layers,
            "placement": placement(&self.best),
            "methods": self.methods.iter().map(|m| {
                let (placement, max) = match &m.placement {
                    Some(Ok(pl)) => (placement(pl), Value::Null),
                    Some(Err(max)) => (Value::Null, json!(max)),
                    None => (Value::Null, Value::Null),
                };
                json!({
                    "method": m.method,
                    "label": m.method.label(),
                    "placement": placement,
                    "misses_target_max_samples_per_s": max,
                    "schedule_seconds": m.seconds,
                    "note": m.note,
                })
            }).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(duration(0.0021), "2.10 ms");
        assert_eq!(wall(1.0 / 3600.0), "1.0 s");
        assert_eq!(wall(0.5), "30.0 min");
        assert_eq!(wall(3.0), "3.0 h");
    }
}
