//! Before/after summaries for `oar inspect --pipeline`: node counts by op, the cost model's
//! estimated time and the liveness estimate's peak.

use crate::liveness::estimate_liveness;
use crate::pass::PassContext;
use crate::roofline::CostModel;
use oar_ir::Graph;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What a graph looks like to the cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSummary {
    pub nodes: usize,
    /// Nodes computed from weights alone (run once at load time, not per inference).
    pub load_time_nodes: usize,
    pub by_op: BTreeMap<&'static str, usize>,
    pub est_time_s: f64,
    pub peak_bytes: u64,
    pub arena_bytes: u64,
}

/// Summarises `g` under `cx`.
pub fn summarize(g: &Graph, cx: &PassContext) -> GraphSummary {
    let mut by_op = BTreeMap::new();
    for n in g.nodes() {
        *by_op.entry(n.op.name()).or_insert(0) += 1;
    }
    let plan = estimate_liveness(g, &cx.bindings);
    GraphSummary {
        nodes: g.len(),
        load_time_nodes: oar_ir::analysis::weight_only(g)
            .iter()
            .zip(g.nodes())
            .filter(|(k, n)| **k && !n.op.is_source())
            .count(),
        by_op,
        est_time_s: CostModel::for_context(cx).graph_time(g, &cx.bindings),
        peak_bytes: plan.peak_live_bytes,
        arena_bytes: plan.arena_bytes,
    }
}

/// A two-column before/after table.
pub fn render(before: &GraphSummary, after: &GraphSummary) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<22} {:>12} {:>12}", "", "before", "after");
    let _ = writeln!(
        s,
        "{:<22} {:>12} {:>12}",
        "nodes", before.nodes, after.nodes
    );
    let _ = writeln!(
        s,
        "{:<22} {:>12} {:>12}",
        "  of which load-time", before.load_time_nodes, after.load_time_nodes
    );
    let _ = writeln!(
        s,
        "{:<22} {:>12.3} {:>12.3}",
        "estimated time (ms)",
        before.est_time_s * 1e3,
        after.est_time_s * 1e3
    );
    let mb = |b: u64| b as f64 / 1e6;
    let _ = writeln!(
        s,
        "{:<22} {:>12.3} {:>12.3}",
        "peak activations (MB)",
        mb(before.peak_bytes),
        mb(after.peak_bytes)
    );
    let _ = writeln!(
        s,
        "{:<22} {:>12.3} {:>12.3}",
        "arena (MB)",
        mb(before.arena_bytes),
        mb(after.arena_bytes)
    );
    let ops: std::collections::BTreeSet<&str> = before
        .by_op
        .keys()
        .chain(after.by_op.keys())
        .copied()
        .collect();
    for op in ops {
        let (a, b) = (
            before.by_op.get(op).copied().unwrap_or(0),
            after.by_op.get(op).copied().unwrap_or(0),
        );
        let _ = writeln!(s, "  {op:<20} {a:>12} {b:>12}");
    }
    s
}
