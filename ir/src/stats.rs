//! Graph statistics for `oar inspect --stats`: node counts by op, parameter count, FLOPs and
//! bytes (conventions in `op::cost`), and a per-node table.

use crate::graph::{types_text, Graph};
use crate::op::{op_cost, Op};
use crate::types::TensorType;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One row of the per-node table.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub op: &'static str,
    pub outputs: String,
    pub flops: u64,
    pub bytes: u64,
}

/// Totals and the per-node table.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphStats {
    pub nodes: usize,
    pub by_op: BTreeMap<&'static str, usize>,
    /// Number of parameter tensors and their total element count.
    pub param_tensors: usize,
    pub param_elements: u64,
    pub param_bytes: u64,
    pub flops: u64,
    pub bytes: u64,
    /// The symbol values used, with unbound symbols at 1.
    pub bindings: BTreeMap<String, u64>,
    pub rows: Vec<NodeRow>,
}

/// Statistics with symbols bound by `bindings` (unbound symbols count as 1).
pub fn graph_stats(g: &Graph, bindings: &BTreeMap<String, u64>) -> GraphStats {
    let mut by_op = BTreeMap::new();
    let mut st = GraphStats {
        nodes: g.len(),
        by_op: BTreeMap::new(),
        param_tensors: 0,
        param_elements: 0,
        param_bytes: 0,
        flops: 0,
        bytes: 0,
        bindings: BTreeMap::new(),
        rows: Vec::new(),
    };
    let mut symbols = BTreeMap::new();
    for (_, n) in g.iter() {
        *by_op.entry(n.op.name()).or_insert(0) += 1;
        for t in &n.outputs {
            for d in &t.shape.0 {
                for s in d.symbols() {
                    symbols.insert(s.to_string(), bindings.get(s).copied().unwrap_or(1));
                }
            }
        }
        if let Op::Param(_) = n.op {
            st.param_tensors += 1;
            st.param_elements += n.outputs[0].shape.numel().eval(bindings, 1);
            st.param_bytes += n.outputs[0].bytes(bindings, 1);
        }
        let ins: Vec<TensorType> = n
            .inputs
            .iter()
            .filter_map(|v| g.value_type(*v).cloned())
            .collect();
        let c = op_cost(&n.op, &ins, &n.outputs, bindings, 1);
        st.flops += c.flops;
        st.bytes += c.bytes;
        st.rows.push(NodeRow {
            name: n.name.clone(),
            op: n.op.name(),
            outputs: types_text(&n.outputs),
            flops: c.flops,
            bytes: c.bytes,
        });
    }
    st.by_op = by_op;
    st.bindings = symbols;
    st
}

/// 1234567 → `1.23M`.
pub fn human(n: u64) -> String {
    let x = n as f64;
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.2}K", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", x / 1e6),
        1_000_000_000..=999_999_999_999 => format!("{:.2}G", x / 1e9),
        _ => format!("{:.2}T", x / 1e12),
    }
}

impl GraphStats {
    /// The text report.
    pub fn render(&self, graph_name: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "graph @{graph_name}");
        if !self.bindings.is_empty() {
            let b: Vec<String> = self
                .bindings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                s,
                "symbols     {} (set with --sym NAME=VALUE)",
                b.join(", ")
            );
        }
        let _ = writeln!(s, "nodes       {}", self.nodes);
        let _ = writeln!(
            s,
            "parameters  {} ({} tensors, {} bytes)",
            human(self.param_elements),
            self.param_tensors,
            human(self.param_bytes)
        );
        let _ = writeln!(s, "FLOPs       {} ({})", human(self.flops), self.flops);
        let _ = writeln!(s, "bytes moved {} ({})", human(self.bytes), self.bytes);
        let _ = writeln!(s, "\nnodes by op");
        for (op, n) in &self.by_op {
            let _ = writeln!(s, "  {op:<18} {n}");
        }
        let wn = self
            .rows
            .iter()
            .map(|r| r.name.len() + 1)
            .max()
            .unwrap_or(4)
            .max(4);
        let wo = self
            .rows
            .iter()
            .map(|r| r.op.len())
            .max()
            .unwrap_or(2)
            .max(2);
        let wt = self
            .rows
            .iter()
            .map(|r| r.outputs.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "\n{:<wn$}  {:<wo$}  {:<wt$}  {:>10}  {:>10}",
            "node", "op", "output", "FLOPs", "bytes"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<wn$}  {:<wo$}  {:<wt$}  {:>10}  {:>10}",
                format!("%{}", r.name),
                r.op,
                r.outputs,
                human(r.flops),
                human(r.bytes)
            );
        }
        s
    }
}
