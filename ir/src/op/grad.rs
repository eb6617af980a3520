//! Gradient ops: what reverse-mode autodiff emits where no forward op computes the
//! vector-Jacobian product (a convolution's weight gradient, a pooling gradient routed to
//! the arg-max, scatter-adds of gathered rows). They are one `Op::Grad` variant so that the
//! per-op matches across the workspace decide for the family once, and each place that
//! differs per gradient op matches [`GradOp`] exhaustively.

use super::{ConvAttrs, DeformConvAttrs, PoolAttrs, PoolKind};
use serde::{Deserialize, Serialize};

/// One gradient op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GradOp {
    /// `conv2d_grad_weight(x, dy)`: the weight gradient of `conv2d(x, w)` with `conv`,
    /// for a kernel of `kernel` = [kh, kw]; the result is `[O, C/groups, kh, kw]` with `O`
    /// from `dy`'s channels (depthwise included).
    Conv2dWeight { conv: ConvAttrs, kernel: [u64; 2] },
    /// `pool_grad(x, dy)`: the input gradient of `max_pool`/`avg_pool` with these attrs.
    /// Max routes each cotangent to the first arg-max of its window (row-major order), avg
    /// spreads it over the window with the forward divisor.
    Pool(PoolAttrs),
    /// `scatter_add(data, indices, updates) {axis}`: ONNX ScatterElements with
    /// `reduction=add`: `out = data`, then `out[..., indices[i], ...] += updates[i]` along
    /// `axis`; repeated indices accumulate.
    ScatterAdd { axis: i64 },
    /// `gather_grad(indices, dy) {axis, rows}`: the data gradient of
    /// `gather(data, indices) {axis}` for data with `rows` entries along `axis`: `dy`'s
    /// slices added into a zero tensor at their indices (repeated ids accumulate).
    /// `embedding`'s table gradient is the `axis = 0` case.
    Gather { axis: i64, rows: u64 },
    /// `deform_conv2d_grad(x, offset, mask, w, dy)`: the gradients `(dx, doffset, dmask,
    /// dw)` of `deform_conv2d(x, offset, mask, w)` (the bias gradient is a sum of `dy`).
    DeformConv2d(DeformConvAttrs),
}

/// The text names of the gradient ops.
pub const GRAD_NAMES: [&str; 5] = [
    "conv2d_grad_weight",
    "pool_grad",
    "scatter_add",
    "gather_grad",
    "deform_conv2d_grad",
];

impl GradOp {
    /// The text-format name.
    pub fn name(&self) -> &'static str {
        match self {
            GradOp::Conv2dWeight { .. } => GRAD_NAMES[0],
            GradOp::Pool(_) => GRAD_NAMES[1],
            GradOp::ScatterAdd { .. } => GRAD_NAMES[2],
            GradOp::Gather { .. } => GRAD_NAMES[3],
            GradOp::DeformConv2d(_) => GRAD_NAMES[4],
        }
    }
}

/// The text spelling of a pooling kind (`pool_grad {kind=max}`).
pub fn pool_kind_name(k: PoolKind) -> &'static str {
    match k {
        PoolKind::Max => "max",
        PoolKind::Avg => "avg",
    }
}
