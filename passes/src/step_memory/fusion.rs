//! Which elementwise values the CPU backend computes inside their reader's kernel and so
//! never stores: an elementwise op (unary, binary, where, cast; comparisons too) with one
//! reader, itself elementwise and of the same element count, on the same side of the
//! load-time split, and not a graph output. The backend caps a fused kernel's size, which
//! changes kernel counts but hardly memory, so the cap is not modelled.

use oar_ir::op::{BinaryOp, Op, UnaryOp};
use oar_ir::{DType, Graph, Node};

/// Whether `n` evaluates per element from its operands (and so can be fused).
fn elementwise(n: &Node) -> bool {
    if n.outputs.len() != 1 {
        return false;
    }
    let f32_out = n.outputs[0].dtype == DType::F32;
    match &n.op {
        Op::Binary(b) if b.is_comparison() => f32_out || n.outputs[0].dtype == DType::Bool,
        Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Where => f32_out,
        // Elementwise, but read the output index (causal mask), a mask (dropout), or
        // per-channel operands (batch norm): stored.
        Op::CausalMask { .. } | Op::Dropout { .. } | Op::BatchNorm { .. } => false,
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        | Op::MatMul(_)
        | Op::Conv2d(_)
        | Op::ConvTranspose2d(_)
        | Op::LayerNorm { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reduce(_)
        | Op::Pool(_)
        | Op::GlobalPool(_)
        | Op::Resize(_)
        | Op::Nms(_)
        | Op::DeformConv2d(_)
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
        | Op::Send { .. } => false,
    }
}

/// Ops whose expression reads an operand twice: they take stored operands only (an
/// operand computed in place would be evaluated twice).
fn repeats_operand(op: &Op) -> bool {
    if let Op::Unary(u) = op {
        return matches!(
            u,
            UnaryOp::LeakyRelu { .. }
                | UnaryOp::HardSwish
                | UnaryOp::Gelu { .. }
                | UnaryOp::Silu
                | UnaryOp::Mish
        );
    }
    if let Op::Binary(b) = op {
        return *b == BinaryOp::Equal;
    }
    false
}

fn numel(n: &Node) -> u64 {
    n.outputs[0]
        .shape
        .as_static()
        .map_or(0, |d| d.iter().product())
}

/// Per node: whether its value is computed in place by its reader.
pub(super) fn in_place(g: &Graph) -> Vec<bool> {
    let fixed = oar_ir::analysis::weight_only(g);
    let mut users = vec![0usize; g.len()];
    for n in g.nodes() {
        for v in &n.inputs {
            users[v.node.index()] += 1;
        }
    }
    for v in g.outputs() {
        users[v.node.index()] += 2;
    }
    let mut inline = vec![false; g.len()];
    for (id, n) in g.iter() {
        if !elementwise(n) || repeats_operand(&n.op) {
            continue;
        }
        for v in &n.inputs {
            let p = v.node.index();
            let pn = g.node(v.node);
            if v.port == 0
                && !inline[p]
                && users[p] == 1
                && elementwise(pn)
                && fixed[p] == fixed[id.index()]
                && numel(pn) == numel(n)
            {
                inline[p] = true;
            }
        }
    }
    inline
}

/// Per node: the node whose kernel computes it (itself unless computed in place).
pub(super) fn hosts(g: &Graph, inline: &[bool]) -> Vec<usize> {
    let mut reader = vec![usize::MAX; g.len()];
    for (id, n) in g.iter() {
        for v in &n.inputs {
            if inline[v.node.index()] {
                reader[v.node.index()] = id.index();
            }
        }
    }
    let mut host: Vec<usize> = (0..g.len()).collect();
    for i in (0..g.len()).rev() {
        if inline[i] && reader[i] != usize::MAX {
            host[i] = host[reader[i]];
        }
    }
    host
}
