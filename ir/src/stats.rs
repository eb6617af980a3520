//! Graph statistics for `oar inspect --stats`: node counts by op, parameter count, FLOPs and
//! bytes (conventions in `op::counts`), and a per-node table.

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
    /// Elements of the parameters this node reads.
    pub params: u64,
    /// MACs as `paddle.flops` counts them.
    pub macs: u64,
    pub flops: u64,
    pub bytes: u64,
}

/// Totals and the per-node table.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphStats {
    /// Multiply-accumulates of contractions (matmul, conv).
    pub macs: u64,
    /// MACs as `paddle.flops` counts them (see [`paddle_macs`]).
    pub paddle_macs: u64,
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

/// Multiply-accumulates as `paddle.flops` counts them — the convention of the Paddle model
/// papers' MAC columns: a conv counts `(C_in/groups·kh·kw + bias)` per output element, a
/// matmul `K` per output element, inference batch norm 2 per element, average pooling
/// `(window + 1)` per output element; activations, elementwise ops and data movement count 0.
pub fn paddle_macs(
    op: &Op,
    inputs: &[TensorType],
    outputs: &[TensorType],
    b: &BTreeMap<String, u64>,
) -> u64 {
    let numel = |t: &TensorType| t.shape.numel().eval(b, 1);
    let dims = |t: &TensorType| t.shape.eval(b, 1);
    let out = outputs.first().map(numel).unwrap_or(0);
    match op {
        Op::Conv2d(_) => {
            let w = dims(&inputs[1]);
            out * (w[1] * w[2] * w[3] + u64::from(inputs.len() > 2))
        }
        // Paddle's counter has no rule for DeformConv2D; counted as the conv it computes.
        Op::DeformConv2d(_) => {
            let w = dims(&inputs[3]);
            out * (w[1] * w[2] * w[3] + u64::from(inputs.len() > 4))
        }
        Op::ConvTranspose2d(_) => {
            let w = dims(&inputs[1]);
            numel(&inputs[0]) * w[1] * w[2] * w[3] + if inputs.len() > 2 { out } else { 0 }
        }
        Op::MatMul(m) => {
            let a = dims(&inputs[0]);
            out * if m.transpose_a {
                a[a.len() - 2]
            } else {
                a[a.len() - 1]
            }
        }
        Op::BatchNorm { .. } => 2 * out,
        Op::GlobalPool(_) => {
            let window = numel(&inputs[0]) / out.max(1);
            (window + 1) * out
        }
        Op::Pool(p) if p.kind == crate::op::PoolKind::Avg => (p.kernel[0] * p.kernel[1] + 1) * out,
        // Paddle's counter gives max pooling and everything else no FLOPs.
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Dropout { .. }
        | Op::LayerNorm { .. }
        | Op::CausalMask { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reduce(_)
        | Op::Pool(_)
        | Op::Resize(_)
        | Op::Nms(_)
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice(_)
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::BroadcastTo { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::Embedding
        | Op::Shape
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::FusedConv2d { .. }
        | Op::FusedMatMul { .. }
        | Op::Fused { .. }
        | Op::Grad(_)
        | Op::Send { .. } => 0,
    }
}

/// The name a row shows: the node's own name, or — for auto-named op nodes — the module
/// its first parameter operand belongs to (`blocks2.0.dw_conv.conv` for a conv whose weight
/// is `blocks2.0.dw_conv.conv.weight`), as `paddle.summary` names layers.
fn row_name(g: &Graph, n: &crate::graph::Node) -> String {
    if !n.name.chars().all(|c| c.is_ascii_digit()) {
        return format!("%{}", n.name);
    }
    let param = n.inputs.iter().find_map(|v| {
        if let Op::Param(p) = &g.node(v.node).op {
            Some(p.name.as_str())
        } else {
            None
        }
    });
    match param.and_then(|p| p.rsplit_once('.')) {
        Some((module, _)) => format!("%{} ({module})", n.name),
        None => format!("%{}", n.name),
    }
}

/// Statistics with symbols bound by `bindings` (unbound symbols count as 1).
pub fn graph_stats(g: &Graph, bindings: &BTreeMap<String, u64>) -> GraphStats {
    let mut st = GraphStats {
        macs: 0,
        paddle_macs: 0,
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
    for (_, n) in g.iter() {
        *st.by_op.entry(n.op.name()).or_insert(0) += 1;
        for s in n
            .outputs
            .iter()
            .flat_map(|t| t.shape.0.iter())
            .flat_map(|d| d.symbols())
        {
            st.bindings
                .insert(s.to_string(), bindings.get(s).copied().unwrap_or(1));
        }
        if let Op::Param(_) = n.op {
            st.param_tensors += 1;
            st.param_elements += n.outputs[0].shape.numel().eval(bindings, 1);
            st.param_bytes += n.outputs[0].bytes(bindings, 1);
            continue;
        }
        if n.op.is_source() {
            continue;
        }
        let ins: Vec<TensorType> = n
            .inputs
            .iter()
            .filter_map(|v| g.value_type(*v).cloned())
            .collect();
        let c = op_cost(&n.op, &ins, &n.outputs, bindings, 1);
        let pm = paddle_macs(&n.op, &ins, &n.outputs, bindings);
        let params: u64 = n
            .inputs
            .iter()
            .filter(|v| matches!(g.node(v.node).op, Op::Param(_)))
            .filter_map(|v| g.value_type(*v))
            .map(|t| t.shape.numel().eval(bindings, 1))
            .sum();
        st.flops += c.flops;
        st.bytes += c.bytes;
        st.macs += c.macs;
        st.paddle_macs += pm;
        st.rows.push(NodeRow {
            name: row_name(g, n),
            op: n.op.name(),
            outputs: types_text(&n.outputs),
            params,
            macs: pm,
            flops: c.flops,
            bytes: c.bytes,
        });
    }
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
    /// The text report: totals, counts by op, and one row per op node (sources omitted).
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
        let _ = writeln!(
            s,
            "MACs        {} ({}, as paddle.flops counts)",
            human(self.paddle_macs),
            self.paddle_macs
        );
        let _ = writeln!(
            s,
            "FLOPs       {} ({}, a multiply-accumulate is 2)",
            human(self.flops),
            self.flops
        );
        let _ = writeln!(s, "bytes moved {} ({})", human(self.bytes), self.bytes);
        let _ = writeln!(s, "\nnodes by op");
        for (op, n) in &self.by_op {
            let _ = writeln!(s, "  {op:<18} {n}");
        }
        let wn = self
            .rows
            .iter()
            .map(|r| r.name.len())
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
            "\n{:<wn$}  {:<wo$}  {:<wt$}  {:>9}  {:>9}  {:>9}  {:>9}",
            "node", "op", "output", "params", "MACs", "FLOPs", "bytes"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<wn$}  {:<wo$}  {:<wt$}  {:>9}  {:>9}  {:>9}  {:>9}",
                r.name,
                r.op,
                r.outputs,
                human(r.params),
                human(r.macs),
                human(r.flops),
                human(r.bytes)
            );
        }
        s
    }
}
