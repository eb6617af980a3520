//! Ops as (name, attribute list) and back: the one place that knows each op's spelling in
//! the text format. Attributes equal to their default are left out when printing
//! (`write.rs`); reading checks names, types and leftovers (`read.rs`).

mod read;
mod write;

pub use read::op_from_attrs;
pub use write::op_attrs;

use super::*;
use std::fmt;

/// An attribute value as written in the text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Str(String),
    /// A bare word: an enum case, `true`/`false`, or a dimension symbol.
    Word(String),
    /// A module-level name such as a mesh (`@m`).
    Global(String),
    /// A symbolic product such as `2*N`.
    Dim(Dim),
    List(Vec<Attr>),
    /// `normal(0.0, 0.02)`.
    Call(String, Vec<Attr>),
}

/// Why an attribute list does not make an op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct AttrError(pub String);

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, AttrError> {
    Err(AttrError(msg.into()))
}

/// Writes a string literal with the escapes the lexer reads back.
pub(crate) fn write_str_literal(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            // `{:?}` is the shortest text that parses back to the same f64.
            Attr::Float(x) => write!(f, "{x:?}"),
            Attr::Str(s) => write_str_literal(f, s),
            Attr::Word(w) => f.write_str(w),
            Attr::Global(g) => write!(f, "@{g}"),
            Attr::Dim(d) => write!(f, "{d}"),
            Attr::List(items) => {
                f.write_str("[")?;
                for (i, a) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Attr::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

pub(super) const UNARY_NAMES: [(&str, UnaryOp); 14] = [
    ("neg", UnaryOp::Neg),
    ("exp", UnaryOp::Exp),
    ("log", UnaryOp::Log),
    ("sqrt", UnaryOp::Sqrt),
    ("rsqrt", UnaryOp::Rsqrt),
    ("tanh", UnaryOp::Tanh),
    ("erf", UnaryOp::Erf),
    ("abs", UnaryOp::Abs),
    ("relu", UnaryOp::Relu),
    ("relu6", UnaryOp::Relu6),
    ("sigmoid", UnaryOp::Sigmoid),
    ("hardswish", UnaryOp::HardSwish),
    ("silu", UnaryOp::Silu),
    ("mish", UnaryOp::Mish),
];

pub(super) const BINARY_NAMES: [(&str, BinaryOp); 10] = [
    ("add", BinaryOp::Add),
    ("sub", BinaryOp::Sub),
    ("mul", BinaryOp::Mul),
    ("div", BinaryOp::Div),
    ("pow", BinaryOp::Pow),
    ("max", BinaryOp::Max),
    ("min", BinaryOp::Min),
    ("equal", BinaryOp::Equal),
    ("less", BinaryOp::Less),
    ("greater", BinaryOp::Greater),
];

pub(super) const REDUCE_NAMES: [(&str, ReduceOp); 5] = [
    ("reduce_sum", ReduceOp::Sum),
    ("reduce_mean", ReduceOp::Mean),
    ("reduce_max", ReduceOp::Max),
    ("reduce_min", ReduceOp::Min),
    ("reduce_prod", ReduceOp::Prod),
];

pub(super) const COORD_NAMES: [(&str, CoordMode); 4] = [
    ("half_pixel", CoordMode::HalfPixel),
    ("align_corners", CoordMode::AlignCorners),
    ("asymmetric", CoordMode::Asymmetric),
    ("pytorch_half_pixel", CoordMode::PytorchHalfPixel),
];

/// The text-format name of an op.
pub(super) fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Input => "input",
        Op::FusedConv2d { .. } => "fused_conv2d",
        Op::FusedMatMul { .. } => "fused_matmul",
        Op::Fused { .. } => "fused",
        Op::Param(_) => "param",
        Op::Constant(_) => "constant",
        Op::Unary(u) => match u {
            UnaryOp::LeakyRelu { .. } => "leaky_relu",
            UnaryOp::HardSigmoid { .. } => "hardsigmoid",
            UnaryOp::Gelu { .. } => "gelu",
            UnaryOp::Clip { .. } => "clip",
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Tanh
            | UnaryOp::Erf
            | UnaryOp::Abs
            | UnaryOp::Relu
            | UnaryOp::Relu6
            | UnaryOp::Sigmoid
            | UnaryOp::HardSwish
            | UnaryOp::Silu
            | UnaryOp::Mish => UNARY_NAMES
                .iter()
                .find(|(_, x)| x == u)
                .map(|(n, _)| *n)
                .expect("every attribute-free unary op is in UNARY_NAMES"),
        },
        Op::Binary(b) => BINARY_NAMES
            .iter()
            .find(|(_, x)| x == b)
            .map(|(n, _)| *n)
            .expect("every binary op is in BINARY_NAMES"),
        Op::Where => "where",
        Op::Cast { .. } => "cast",
        Op::Dropout { .. } => "dropout",
        Op::MatMul(_) => "matmul",
        Op::Conv2d(_) => "conv2d",
        Op::ConvTranspose2d(_) => "conv_transpose2d",
        Op::BatchNorm { .. } => "batch_norm",
        Op::LayerNorm { .. } => "layer_norm",
        Op::Softmax { .. } => "softmax",
        Op::CausalMask { .. } => "causal_mask",
        Op::LogSoftmax { .. } => "log_softmax",
        Op::Reduce(r) => REDUCE_NAMES
            .iter()
            .find(|(_, x)| *x == r.op)
            .map(|(n, _)| *n)
            .expect("every reduce op is in REDUCE_NAMES"),
        Op::Pool(p) => match p.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        },
        Op::GlobalPool(PoolKind::Max) => "global_max_pool",
        Op::GlobalPool(PoolKind::Avg) => "global_avg_pool",
        Op::Resize(_) => "resize",
        Op::Nms(n) => match n.kind {
            NmsKind::Hard { .. } => "nms",
            NmsKind::Matrix { .. } => "matrix_nms",
        },
        Op::DeformConv2d(_) => "deform_conv2d",
        Op::Concat { .. } => "concat",
        Op::Split { .. } => "split",
        Op::Slice(_) => "slice",
        Op::Reshape { .. } => "reshape",
        Op::Transpose { .. } => "transpose",
        Op::Squeeze { .. } => "squeeze",
        Op::Unsqueeze { .. } => "unsqueeze",
        Op::Flatten { .. } => "flatten",
        Op::BroadcastTo { .. } => "broadcast_to",
        Op::Gather { .. } => "gather",
        Op::GatherElements { .. } => "gather_elements",
        Op::Embedding => "embedding",
        Op::Shape => "shape",
        Op::AllReduce { .. } => "all_reduce",
        Op::AllGather { .. } => "all_gather",
        Op::ReduceScatter { .. } => "reduce_scatter",
        Op::AllToAll { .. } => "all_to_all",
        Op::Broadcast { .. } => "broadcast",
        Op::Send { .. } => "send",
        Op::Recv { .. } => "recv",
        Op::Grad(g) => g.name(),
    }
}

/// Every op name the text format knows, for error messages.
pub fn all_op_names() -> Vec<&'static str> {
    let mut v = vec![
        "input",
        "param",
        "constant",
        "leaky_relu",
        "hardsigmoid",
        "gelu",
        "clip",
        "where",
        "cast",
        "dropout",
        "matmul",
        "conv2d",
        "conv_transpose2d",
        "batch_norm",
        "layer_norm",
        "softmax",
        "causal_mask",
        "log_softmax",
        "max_pool",
        "avg_pool",
        "global_max_pool",
        "global_avg_pool",
        "resize",
        "nms",
        "matrix_nms",
        "deform_conv2d",
        "concat",
        "split",
        "slice",
        "reshape",
        "transpose",
        "squeeze",
        "unsqueeze",
        "flatten",
        "broadcast_to",
        "gather",
        "gather_elements",
        "embedding",
        "shape",
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
        "broadcast",
        "send",
        "recv",
        "fused_conv2d",
        "fused_matmul",
        "fused",
    ];
    v.extend(UNARY_NAMES.iter().map(|(n, _)| *n));
    v.extend(BINARY_NAMES.iter().map(|(n, _)| *n));
    v.extend(REDUCE_NAMES.iter().map(|(n, _)| *n));
    v.extend(GRAD_NAMES);
    v
}
