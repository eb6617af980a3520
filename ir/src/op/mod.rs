//! The closed set of operations. Per-op behaviour lives in `match`-based functions split by
//! concern: attributes (`attrs/`), shape inference (`shape/`), FLOP and byte counts (`counts.rs`), per-op facts
//! asked by several crates (`facts.rs`).
//! Adding an op is the checklist in `ir/README.md`.

mod attrs;
mod counts;
mod detect;
mod facts;
mod grad;
mod shape;

pub use attrs::{all_op_names, op_attrs, op_from_attrs, Attr, AttrError};
pub use counts::{op_cost, OpCost};
pub use detect::{DeformConvAttrs, NmsAttrs, NmsKind};
pub use facts::LoadTime;
pub use grad::{pool_kind_name, GradOp, GRAD_NAMES};
pub use shape::{infer_types, norm_axis, InferCtx, ShapeError};

use crate::dist::ReduceOp;
use crate::types::{DType, Dim};
use serde::{Deserialize, Serialize};

/// Elementwise ops of one input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
    Erf,
    Abs,
    Relu,
    Relu6,
    LeakyRelu {
        #[serde(with = "crate::serde_f64")]
        alpha: f64,
    },
    Sigmoid,
    /// `clip(alpha * x + beta, 0, 1)` (ONNX defaults alpha=0.2, beta=0.5; Paddle uses 1/6, 0.5).
    HardSigmoid {
        #[serde(with = "crate::serde_f64")]
        alpha: f64,
        #[serde(with = "crate::serde_f64")]
        beta: f64,
    },
    HardSwish,
    /// `tanh` selects the tanh approximation, otherwise the exact erf form.
    Gelu {
        tanh: bool,
    },
    Silu,
    Mish,
    Clip {
        #[serde(with = "crate::serde_f64")]
        min: f64,
        #[serde(with = "crate::serde_f64")]
        max: f64,
    },
}

/// Elementwise ops of two inputs, with numpy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// Comparisons produce `bool`.
    Equal,
    Less,
    Greater,
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 10] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Equal,
        BinaryOp::Less,
        BinaryOp::Greater,
    ];

    /// Whether the result is a `bool` mask.
    pub fn is_comparison(self) -> bool {
        match self {
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => true,
            BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Pow
            | BinaryOp::Max
            | BinaryOp::Min => false,
        }
    }
}

/// How a parameter is initialised. Fan-based schemes (Xavier, Kaiming) are resolved to a
/// concrete distribution by whoever creates the parameter, so the IR stays simple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Constant(#[serde(with = "crate::serde_f64")] f64),
    Normal {
        #[serde(with = "crate::serde_f64")]
        mean: f64,
        #[serde(with = "crate::serde_f64")]
        std: f64,
    },
    Uniform {
        #[serde(with = "crate::serde_f64")]
        low: f64,
        #[serde(with = "crate::serde_f64")]
        high: f64,
    },
}

/// A named, trainable (or loadable) tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamAttrs {
    /// Hierarchical name, as in checkpoints (`blocks.3.dw.weight`).
    pub name: String,
    pub init: Option<Init>,
}

/// Literal data of a constant, row-major. Integer and bool dtypes use `Ints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Literal {
    Floats(#[serde(with = "crate::serde_f64::vec")] Vec<f64>),
    Ints(Vec<i64>),
}

impl Literal {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Literal::Floats(v) => v.len(),
            Literal::Ints(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Matrix product over the last two dims, batched with broadcasting over the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatMulAttrs {
    pub transpose_a: bool,
    pub transpose_b: bool,
}

/// 2-d convolution in NCHW, weights OIHW (`O`, `I/groups`, kh, kw); optional bias `[O]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvAttrs {
    pub stride: [u64; 2],
    /// top, left, bottom, right.
    pub padding: [u64; 4],
    pub dilation: [u64; 2],
    pub groups: u64,
}

impl Default for ConvAttrs {
    fn default() -> Self {
        ConvAttrs {
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// Transposed 2-d convolution in NCHW, weights `I`, `O/groups`, kh, kw; optional bias `[O]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConvTransposeAttrs {
    pub conv: ConvAttrs,
    pub output_padding: [u64; 2],
}

/// Reduction over `axes` (empty means all axes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReduceOverAxes {
    pub op: ReduceOp,
    pub axes: Vec<i64>,
    pub keepdims: bool,
}

/// Max or average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A windowed 2-d pooling in NCHW.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    /// top, left, bottom, right.
    pub padding: [u64; 4],
    pub ceil_mode: bool,
    /// For average pooling: whether padded cells count in the divisor.
    pub count_include_pad: bool,
}

/// Interpolation of `resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeMode {
    Nearest,
    Bilinear,
}

/// How output coordinates map back to input coordinates (ONNX names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordMode {
    HalfPixel,
    AlignCorners,
    Asymmetric,
    PytorchHalfPixel,
}

/// The resize index arithmetic, in one place for the interpreter and every kernel.
impl CoordMode {
    /// The input coordinate that output coordinate `o` maps to (the scale is
    /// `out_len / in_len`).
    pub fn source_coord(self, o: usize, in_len: usize, out_len: usize) -> f64 {
        let scale = out_len as f64 / in_len as f64;
        let o = o as f64;
        match self {
            CoordMode::HalfPixel => (o + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel if out_len > 1 => (o + 0.5) / scale - 0.5,
            CoordMode::PytorchHalfPixel => 0.0,
            CoordMode::AlignCorners if out_len > 1 => {
                o * (in_len - 1) as f64 / (out_len - 1) as f64
            }
            CoordMode::AlignCorners => 0.0,
            CoordMode::Asymmetric => o / scale,
        }
    }

    /// Nearest resize's source index: half rounds down (ONNX `round_prefer_floor`), except
    /// `asymmetric`, which floors (PyTorch and Paddle `nearest`).
    pub fn nearest_index(self, o: usize, in_len: usize, out_len: usize) -> usize {
        let c = self.source_coord(o, in_len, out_len);
        let i = if self == CoordMode::Asymmetric {
            c.floor()
        } else {
            (c - 0.5).ceil()
        };
        i.clamp(0.0, in_len.saturating_sub(1) as f64) as usize
    }

    /// Bilinear resize's taps along one axis: `(lo, hi, f)`, output `o` is
    /// `(1 - f)·x[lo] + f·x[hi]` (the coordinate clamped to the input, `hi` to its last
    /// element).
    pub fn linear_taps(self, o: usize, in_len: usize, out_len: usize) -> (usize, usize, f64) {
        let last = in_len.saturating_sub(1);
        let c = self
            .source_coord(o, in_len, out_len)
            .clamp(0.0, last as f64);
        let i0 = c.floor() as usize;
        (i0, (i0 + 1).min(last), c - i0 as f64)
    }
}

/// Spatial resize of NCHW to a fixed output size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    /// Output height and width.
    pub size: [Dim; 2],
}

/// ONNX-style slice; ends are clamped, negative indices count from the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceAttrs {
    pub axes: Vec<i64>,
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub steps: Vec<i64>,
}

/// One entry of a reshape target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReshapeDim {
    /// Inferred from the element count (at most one).
    Infer,
    Dim(Dim),
}

impl From<i64> for ReshapeDim {
    /// `-1` infers the dim; other values are static sizes (negative ones clamp to 0).
    fn from(v: i64) -> ReshapeDim {
        if v == -1 {
            ReshapeDim::Infer
        } else {
            ReshapeDim::Dim(Dim::Static(v.max(0) as u64))
        }
    }
}

impl From<Dim> for ReshapeDim {
    fn from(d: Dim) -> ReshapeDim {
        ReshapeDim::Dim(d)
    }
}

/// The devices a collective spans: one axis of a named mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommGroup {
    pub mesh: String,
    pub axis: usize,
}

/// What a fused contraction does to its result before writing it:
/// `activation(y + bias + residual)`, each part optional. Inputs after the two operands:
/// the bias (broadcast over the output, `[C]` for convs) when `bias`, then the residual.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Epilogue {
    pub bias: bool,
    pub residual: bool,
    pub activation: Option<UnaryOp>,
}

impl Epilogue {
    /// Number of extra inputs (bias, residual).
    pub fn extra_inputs(&self) -> usize {
        usize::from(self.bias) + usize::from(self.residual)
    }
}

/// Where dropout's `1/(1-p)` correction goes (Paddle's two modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropoutMode {
    /// Training: `y = x * mask / (1 - p)`; inference: identity. Paddle's default and ONNX's.
    #[default]
    UpscaleInTrain,
    /// Training: `y = x * mask`; inference: `y = x * (1 - p)`.
    DownscaleInInfer,
}

impl DropoutMode {
    /// The text-format spelling.
    pub fn name(self) -> &'static str {
        match self {
            DropoutMode::UpscaleInTrain => "upscale_in_train",
            DropoutMode::DownscaleInInfer => "downscale_in_infer",
        }
    }

    fn is_default(&self) -> bool {
        *self == DropoutMode::default()
    }

    /// The factor inference multiplies by: 1 (identity) or `1 - p`.
    pub fn inference_scale(self, p: f64) -> f64 {
        match self {
            DropoutMode::UpscaleInTrain => 1.0,
            DropoutMode::DownscaleInInfer => 1.0 - p,
        }
    }
}

/// What a collective does, without its group (see [`Op::as_collective`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectiveKind {
    AllReduce { op: ReduceOp },
    AllGather { axis: i64 },
    ReduceScatter { op: ReduceOp, axis: i64 },
    AllToAll { split_axis: i64, concat_axis: i64 },
    Broadcast { root: u64 },
}

/// An operation. Sources (`Input`, `Param`, `Constant`, `Recv`) take their output type from
/// the node's declaration; every other op's output types are inferred from its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    // Sources.
    Input,
    Param(ParamAttrs),
    Constant(Literal),
    // Elementwise.
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(cond, a, b)` with broadcasting.
    Where,
    Cast {
        to: DType,
    },
    /// Zeroes each element with probability `p` when training; `mode` says where the
    /// `1/(1-p)` correction goes (see [`DropoutMode`]).
    Dropout {
        #[serde(with = "crate::serde_f64")]
        p: f64,
        #[serde(default, skip_serializing_if = "DropoutMode::is_default")]
        mode: DropoutMode,
        /// Draw the mask of the node with this name instead of this node's own: the
        /// backward of a dropout replays its forward mask on the cotangent (autodiff).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask_of: Option<String>,
    },
    // Linear algebra and convolution.
    MatMul(MatMulAttrs),
    Conv2d(ConvAttrs),
    ConvTranspose2d(ConvTransposeAttrs),
    /// Modulated deformable convolution (DCNv2): x, offset, mask, w, optional bias.
    DeformConv2d(DeformConvAttrs),
    // Normalisation.
    /// Batch norm: inputs x, scale, bias, running mean, running var (ONNX order).
    /// Without `momentum` (inference form) it normalises with the running statistics and
    /// has one output. With `momentum` (training form) it normalises with the batch
    /// statistics and has three outputs: y, the new running mean and the new running var,
    /// `new = momentum * running + (1 - momentum) * batch` (Paddle's convention, with the
    /// biased batch variance, as Paddle 3.3 computes it).
    BatchNorm {
        #[serde(with = "crate::serde_f64")]
        eps: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        momentum: Option<f64>,
    },
    /// Normalises over dims `axis..`; inputs x, scale, bias.
    LayerNorm {
        axis: i64,
        #[serde(with = "crate::serde_f64")]
        eps: f64,
    },
    /// Causal masking of attention scores `[..., M, N]`: keeps `x[..., i, j]` where
    /// `j <= i + (N - M)` and writes `fill` elsewhere (ONNX: Trilu + Where).
    CausalMask {
        #[serde(with = "crate::serde_f64")]
        fill: f64,
    },
    Softmax {
        axis: i64,
    },
    LogSoftmax {
        axis: i64,
    },
    Reduce(ReduceOverAxes),
    // Pooling and resizing.
    Pool(PoolAttrs),
    GlobalPool(PoolKind),
    Resize(ResizeAttrs),
    // Detection post-processing.
    /// Multiclass NMS (hard or matrix) of boxes, scores; outputs padded to `keep_top_k`.
    Nms(NmsAttrs),
    // Shape ops.
    Concat {
        axis: i64,
    },
    Split {
        axis: i64,
        sizes: Vec<u64>,
    },
    Slice(SliceAttrs),
    Reshape {
        shape: Vec<ReshapeDim>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Squeeze {
        axes: Vec<i64>,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    Flatten {
        axis: i64,
    },
    /// Numpy broadcasting of the input to `shape` (ONNX Expand with a constant shape): the
    /// input's dims align to the right and each is 1 or equal to the target's.
    BroadcastTo {
        shape: Vec<Dim>,
    },
    /// ONNX Gather: data, indices.
    Gather {
        axis: i64,
    },
    /// ONNX GatherElements: picks `data[..., index[...], ...]` along `axis`; output has the
    /// shape of the indices (used by cross-entropy losses).
    GatherElements {
        axis: i64,
    },
    /// Embedding lookup: table `[V, D]`, integer ids `[...]` → `[..., D]`.
    Embedding,
    /// The dims of its input as `i64[rank]` (ONNX Shape); folds to a constant when static.
    Shape,
    // Collectives, over one axis of a mesh.
    AllReduce {
        op: ReduceOp,
        group: CommGroup,
    },
    AllGather {
        axis: i64,
        group: CommGroup,
    },
    ReduceScatter {
        op: ReduceOp,
        axis: i64,
        group: CommGroup,
    },
    AllToAll {
        split_axis: i64,
        concat_axis: i64,
        group: CommGroup,
    },
    Broadcast {
        root: u64,
        group: CommGroup,
    },
    // Fused kernels.
    /// conv2d with an epilogue; inputs x, w, then the epilogue's.
    FusedConv2d {
        conv: ConvAttrs,
        epilogue: Epilogue,
    },
    /// matmul with an epilogue; inputs a, b, then the epilogue's.
    FusedMatMul {
        mm: MatMulAttrs,
        epilogue: Epilogue,
    },
    /// A fused group of ops whose body is the module-level function `func`.
    Fused {
        func: String,
    },
    /// Gradient ops emitted by autodiff (`conv2d_grad_weight`, `pool_grad`, `scatter_add`,
    /// `gather_grad`); see [`GradOp`].
    Grad(GradOp),
    // Point to point, for pipeline stages.
    Send {
        peer: u64,
    },
    Recv {
        peer: u64,
    },
}

impl Op {
    /// The text-format name.
    pub fn name(&self) -> &'static str {
        attrs::op_name(self)
    }

    /// The op family, for statistics and documentation.
    pub fn family(&self) -> &'static str {
        match self {
            Op::Input | Op::Param(_) | Op::Constant(_) => "source",
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Dropout { .. } => {
                "elementwise"
            }
            Op::MatMul(_) | Op::Conv2d(_) | Op::ConvTranspose2d(_) | Op::DeformConv2d(_) => {
                "contraction"
            }
            Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Softmax { .. }
            | Op::CausalMask { .. }
            | Op::LogSoftmax { .. } => "normalization",
            Op::Reduce(_) => "reduction",
            Op::Pool(_) | Op::GlobalPool(_) | Op::Resize(_) => "pool/resize",
            Op::Nms(_) => "detection",
            Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
            | Op::BroadcastTo { .. } => "shape",
            Op::Gather { .. } | Op::GatherElements { .. } | Op::Embedding => "gather",
            Op::Shape => "shape",
            Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. } => "collective",
            Op::Send { .. } | Op::Recv { .. } => "p2p",
            Op::FusedConv2d { .. } | Op::FusedMatMul { .. } | Op::Fused { .. } => "fused",
            Op::Grad(_) => "gradient",
        }
    }
}
