//! What `--plan auto` says about its choice: rank 0's summary on stdout, and a `plan`
//! record in every rank's JSON-lines log.

use super::plan_auto::{Choice, World};
use oar::ir::Cluster;
use oar::passes::parallel::report::Report;
use oar::passes::parallel::search::why;
use oar::passes::parallel::step_cost::StepTime;
use serde_json::json;
use std::io::Write;
use std::path::Path;

const GIB: f64 = (1u64 << 30) as f64;

fn ms(s: f64) -> String {
    format!("{:.2} ms", s * 1e3)
}

/// The step time's non-zero parts.
fn parts(t: &StepTime) -> String {
    let p = [
        ("compute", t.compute),
        ("recompute", t.recompute),
        ("tensor-parallel comm", t.tensor_parallel_comm),
        ("pipeline send/recv", t.pipeline_p2p),
        ("exposed gradient comm", t.data_parallel_comm),
        ("bubble", t.bubble),
        ("optimizer", t.optimizer),
        ("straggler", t.straggler),
    ];
    p.iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| format!("{k} {}", ms(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the world runs: nodes × devices of the file's device.
fn placement(cluster: &Cluster) -> String {
    let g = &cluster.node_groups[0];
    format!(
        "{} ({} node(s) × {} device(s) of {})",
        cluster.name, g.nodes, g.devices_per_node, g.device.model
    )
}

/// Rank 0's summary: layout, flags, prediction, and why.
pub fn summary(c: &Choice, cluster: &Cluster, flags: &[String], world: u64) -> String {
    let b = &c.best;
    let flags = if flags.is_empty() {
        "none (one process)".to_string()
    } else {
        flags.join(" ")
    };
    let mut s = format!(
        "plan auto for {world} rank(s) on {}: {}\n  as flags: {flags}\n",
        placement(cluster),
        Report::plan_line(b)
    );
    s += &format!(
        "  predicted: step {} ({}); memory {:.2} GiB of {:.2} GiB per device\n",
        ms(b.time.total),
        parts(&b.time),
        b.memory.total / GIB,
        b.memory.capacity / GIB
    );
    s += &format!(
        "  why: the fastest of {} layouts oar train runs ({} fit; the planner considers {})",
        c.executable, c.fitting, c.considered
    );
    match c.others.first() {
        Some(o) => s += &format!("; next: {}: {}\n", Report::plan_line(o), why(b, o)),
        None => s += "; no other (dp, tp, pp) fits this many ranks\n",
    }
    if let Some((u, reason)) = &c.unrestricted {
        s += &format!(
            "  the planner's free choice, {} ({}), is not run: {reason}\n",
            Report::plan_line(u),
            ms(u.time.total)
        );
    }
    s
}

/// Appends `{"kind":"plan", ...}` to `path` (the rank's `--log` file).
pub fn log(
    path: &Path,
    c: &Choice,
    cluster: &Cluster,
    flags: &[String],
    world: World,
) -> anyhow::Result<()> {
    let b = &c.best;
    let g = &cluster.node_groups[0];
    let line = json!({
        "kind": "plan",
        "rank": world.rank,
        "world": world.size,
        "cluster": cluster.name,
        "nodes": g.nodes,
        "devices_per_node": g.devices_per_node,
        "layout": b.plan,
        "summary": Report::plan_line(b),
        "flags": flags.join(" "),
        "predicted_step_seconds": b.time.total,
        "time": b.time,
        "memory": b.memory,
        "executable": c.executable,
        "fitting": c.fitting,
        "considered": c.considered,
        "next": c.others.first().map(|o| json!({
            "summary": Report::plan_line(o),
            "predicted_step_seconds": o.time.total,
            "why": why(b, o),
        })),
        "unrestricted": c.unrestricted.as_ref().map(|(u, r)| json!({
            "summary": Report::plan_line(u),
            "predicted_step_seconds": u.time.total,
            "why_not": r,
        })),
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}
