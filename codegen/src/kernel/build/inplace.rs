//! In-place elementwise fusion: an elementwise op read once by an elementwise op of the
//! same size is computed inside its reader's kernel instead of being stored and loaded.
//! The compiled training step is thousands of small kernels otherwise (every AdamW update,
//! activation gradient and scalar clipping term its own), and on a loaded machine each
//! kernel costs about a scheduler slice however little it computes.

use super::pointwise::{map, unary_expr};
use super::{Arg, Builder};
use crate::kernel::{Bin, Cond, Expr};
use oar_ir::op::{BinaryOp, Op, UnaryOp};
use oar_ir::{DType, Graph};
use std::collections::BTreeMap;

/// Largest number of elementwise ops one fused kernel evaluates.
pub(crate) const MAX_FUSED_OPS: usize = 24;

/// An operand of a fused elementwise expression: a buffer (by index into the leaves) or an
/// op whose value is computed in place instead of stored.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Leaf(usize),
    Op(Box<Tree>),
}

/// An elementwise op over operands, evaluated per output element.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub op: ExprOp,
    pub kids: Vec<Operand>,
}

/// The elementwise operators a fused kernel evaluates in place.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExprOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
    Cast,
    Where,
}

/// `op` as an elementwise operator, if it is one.
pub(crate) fn expr_operator(op: &Op) -> Option<ExprOp> {
    match op {
        Op::Unary(u) => Some(ExprOp::Unary(*u)),
        Op::Binary(bo) => Some(ExprOp::Binary(*bo)),
        Op::Cast { .. } => Some(ExprOp::Cast),
        Op::Where => Some(ExprOp::Where),
        // Elementwise, but not a pure function of the operands at the output index (the
        // mask reads the index, dropout its mask) or not f32 arithmetic (batch norm's
        // per-channel operands are reshaped by `lower`).
        Op::CausalMask { .. } | Op::Dropout { .. } | Op::BatchNorm { .. } => None,
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
        | Op::Send { .. } => None,
    }
}

/// Whether `op` writing `dtype` evaluates as a per-element expression over its operands
/// (comparisons write bool, the rest f32).
fn is_expr_op(op: &Op, dtype: DType) -> bool {
    match expr_operator(op) {
        Some(ExprOp::Binary(bo)) if bo.is_comparison() => {
            dtype == DType::Bool || dtype == DType::F32
        }
        Some(_) => dtype == DType::F32,
        None => false,
    }
}

/// Whether `op`'s expression reads an operand more than once: an operand computed in place
/// would be duplicated in the kernel's expression, so such ops take stored operands only.
fn repeats_operand(op: &Op) -> bool {
    match expr_operator(op) {
        Some(ExprOp::Unary(u)) => matches!(
            u,
            UnaryOp::LeakyRelu { .. }
                | UnaryOp::HardSwish
                | UnaryOp::Gelu { .. }
                | UnaryOp::Silu
                | UnaryOp::Mish
        ),
        Some(ExprOp::Binary(bo)) => bo == BinaryOp::Equal,
        Some(ExprOp::Cast | ExprOp::Where) | None => false,
    }
}

/// A condition from a 0/1 expression: a bool load or a comparison is used as is.
fn cond_of(e: Expr) -> Cond {
    match e {
        Expr::Select(c, a, z)
            if matches!(*a, Expr::C(v) if v == 1.0) && matches!(*z, Expr::C(v) if v == 0.0) =>
        {
            c
        }
        other => Cond::Lt(Box::new(Expr::C(0.5)), Box::new(other)),
    }
}

/// The expression of an elementwise operator over its operands' expressions.
pub(crate) fn op_expr(op: ExprOp, x: &[Expr]) -> Expr {
    let lt = |a: &Expr, c: &Expr| Cond::Lt(Box::new(a.clone()), Box::new(c.clone()));
    let sel = |c: Cond, a: Expr, z: Expr| Expr::Select(c, Box::new(a), Box::new(z));
    let one = || Expr::C(1.0);
    let zero = || Expr::C(0.0);
    match op {
        ExprOp::Unary(u) => unary_expr(u, x[0].clone()),
        ExprOp::Binary(bo) => {
            let bin = match bo {
                BinaryOp::Add => Bin::Add,
                BinaryOp::Sub => Bin::Sub,
                BinaryOp::Mul => Bin::Mul,
                BinaryOp::Div => Bin::Div,
                BinaryOp::Pow => Bin::Pow,
                BinaryOp::Max => Bin::Max,
                BinaryOp::Min => Bin::Min,
                BinaryOp::Less => return sel(lt(&x[0], &x[1]), one(), zero()),
                BinaryOp::Greater => return sel(lt(&x[1], &x[0]), one(), zero()),
                // Neither less nor greater (a NaN operand compares equal here; the step
                // graphs compare integer labels converted to f32, exact below 2^24).
                BinaryOp::Equal => {
                    return sel(
                        lt(&x[0], &x[1]),
                        zero(),
                        sel(lt(&x[1], &x[0]), zero(), one()),
                    )
                }
            };
            x[0].clone().bin(bin, x[1].clone())
        }
        ExprOp::Cast => x[0].clone(),
        ExprOp::Where => sel(cond_of(x[0].clone()), x[1].clone(), x[2].clone()),
    }
}

impl Tree {
    fn eval(&self, leaves: &[Expr]) -> Expr {
        let x: Vec<Expr> = self
            .kids
            .iter()
            .map(|k| match k {
                Operand::Leaf(i) => leaves[*i].clone(),
                Operand::Op(t) => t.eval(leaves),
            })
            .collect();
        op_expr(self.op, &x)
    }
}

/// One kernel for an elementwise expression tree over stored `leaves`: the ops computed in
/// place never touch memory (the backward's activation gradients, the optimizer's update
/// chain per parameter, the scalar clipping and learning-rate terms).
pub(crate) fn fused(
    b: &mut Builder,
    name: &str,
    tree: &Tree,
    leaves: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    map(b, name, leaves, out, |x, _| tree.eval(x))
}

/// Which nodes are computed in place by their consumer's kernel instead of stored: an
/// elementwise op read by exactly one elementwise op of the same element count (so nothing
/// is recomputed per broadcast element), not a graph output (state updates are outputs),
/// and on the same side of the load-time split as its reader. Each fused kernel evaluates
/// at most [`MAX_FUSED_OPS`] ops. `OAR_CODEGEN_NO_INPLACE=1` turns this off (one kernel per
/// op), for measuring what it saves.
pub(crate) fn inline_plan(g: &Graph, bindings: &BTreeMap<String, u64>) -> Vec<bool> {
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
    let numel = |t: &oar_ir::TensorType| t.shape.eval(bindings, 1).iter().product::<u64>();
    let expr_node =
        |n: &oar_ir::Node| n.outputs.len() == 1 && is_expr_op(&n.op, n.outputs[0].dtype);
    let mut inline = vec![false; g.len()];
    if std::env::var_os("OAR_CODEGEN_NO_INPLACE").is_some_and(|v| v == "1") {
        return inline;
    }
    let mut size = vec![1usize; g.len()];
    for (id, n) in g.iter() {
        if !expr_node(n) || repeats_operand(&n.op) {
            continue;
        }
        let out = numel(&n.outputs[0]);
        for v in &n.inputs {
            let p = v.node.index();
            let pn = g.node(v.node);
            if v.port != 0
                || inline[p]
                || users[p] != 1
                || !expr_node(pn)
                || fixed[p] != fixed[id.index()]
                || numel(&pn.outputs[0]) != out
                || size[id.index()] + size[p] > MAX_FUSED_OPS
            {
                continue;
            }
            inline[p] = true;
            size[id.index()] += size[p];
        }
    }
    inline
}
