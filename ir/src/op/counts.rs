//! FLOPs and bytes moved per op: the inputs of every cost model and of `inspect --stats`.
//!
//! Conventions (also in ir/README.md):
//! - a multiply-accumulate is 2 FLOPs; a bias add is 1 FLOP per output element;
//! - elementwise ops (unary, binary, where) are 1 FLOP per output element, transcendental
//!   ones included; cast and dropout (inference) are 0;
//! - batch_norm 2 per element (a folded scale and shift), layer_norm 7 per element (sum,
//!   subtract, square, sum, scale by the reciprocal std, gamma, beta), softmax and
//!   log_softmax 5 per element (max, subtract, exp, sum, divide);
//! - reductions and global pooling 1 per input element; windowed pooling kh·kw per output
//!   element; bilinear resize 7 per output element, nearest 0;
//! - shape ops, gathers, collectives and send/recv 0 FLOPs;
//! - bytes: every input read once and every output written once, except views (reshape,
//!   squeeze, unsqueeze, flatten) and sources, which move nothing, and gathers, which read
//!   only the rows they return.
//!
//! Symbolic dims are evaluated with caller-given bindings.

use super::*;
use crate::types::TensorType;
use std::collections::BTreeMap;

/// The work one op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpCost {
    pub flops: u64,
    pub bytes: u64,
    /// Multiply-accumulates of contractions (matmul, conv), as papers' MAC columns count.
    pub macs: u64,
}

/// FLOPs and bytes of `op` with the given input and output types. Unbound symbols count as
/// `default`.
pub fn op_cost(
    op: &Op,
    inputs: &[TensorType],
    outputs: &[TensorType],
    bindings: &BTreeMap<String, u64>,
    default: u64,
) -> OpCost {
    let numel = |t: &TensorType| t.shape.numel().eval(bindings, default);
    let dims = |t: &TensorType| t.shape.eval(bindings, default);
    let out_elems: u64 = outputs.iter().map(numel).sum();
    let in_elems: u64 = inputs.first().map(numel).unwrap_or(0);
    let bytes_of = |ts: &[TensorType]| ts.iter().map(|t| t.bytes(bindings, default)).sum::<u64>();
    let rw = bytes_of(inputs) + bytes_of(outputs);

    let mut macs = 0;
    let (flops, bytes) = match op {
        Op::Input | Op::Param(_) | Op::Constant(_) => (0, 0),
        Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } => {
            (0, 0)
        }
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::CausalMask { .. } => (out_elems, rw),
        Op::Cast { .. } | Op::Dropout { .. } => (0, rw),
        Op::MatMul(m) => {
            let a = dims(&inputs[0]);
            let k = if m.transpose_a {
                a[a.len() - 2]
            } else {
                a[a.len() - 1]
            };
            macs = out_elems * k;
            (2 * macs, rw)
        }
        Op::Conv2d(_) => {
            let w = dims(&inputs[1]);
            macs = out_elems * w[1] * w[2] * w[3];
            let bias = if inputs.len() > 2 { out_elems } else { 0 };
            (2 * macs + bias, rw)
        }
        Op::ConvTranspose2d(_) => {
            // Every input pixel scatters into (O/g)·kh·kw outputs.
            let w = dims(&inputs[1]);
            macs = in_elems * w[1] * w[2] * w[3];
            let bias = if inputs.len() > 2 { out_elems } else { 0 };
            (2 * macs + bias, rw)
        }
        // The training form computes batch statistics first, like layer_norm.
        Op::BatchNorm { momentum: None, .. } => (2 * out_elems, rw),
        Op::BatchNorm {
            momentum: Some(_), ..
        } => (7 * in_elems, rw),
        Op::LayerNorm { .. } => (7 * out_elems, rw),
        Op::Softmax { .. } | Op::LogSoftmax { .. } => (5 * out_elems, rw),
        Op::Reduce(_) | Op::GlobalPool(_) => (in_elems, rw),
        Op::Pool(p) => (out_elems * p.kernel[0] * p.kernel[1], rw),
        Op::Resize(r) => {
            let f = match r.mode {
                ResizeMode::Nearest => 0,
                ResizeMode::Bilinear => 7 * out_elems,
            };
            (f, rw)
        }
        // A compare per score; the pairwise IoUs that follow depend on how many boxes pass.
        Op::Nms(_) => (inputs.get(1).map(numel).unwrap_or(0), rw),
        // The conv's MACs, plus a bilinear sample (7) and its mask scale (1) per tap and
        // input channel at every output position.
        Op::DeformConv2d(_) => {
            let w = dims(&inputs[3]);
            macs = out_elems * w[1] * w[2] * w[3];
            let o = dims(&outputs[0]);
            let c = dims(&inputs[0])[1];
            let sampled = o[0] * c * w[2] * w[3] * o[2] * o[3];
            let bias = if inputs.len() > 4 { out_elems } else { 0 };
            (2 * macs + 8 * sampled + bias, rw)
        }
        Op::Gather { .. } | Op::GatherElements { .. } | Op::Embedding => {
            let idx = inputs
                .get(1)
                .map(|t| t.bytes(bindings, default))
                .unwrap_or(0);
            (0, idx + 2 * bytes_of(outputs))
        }
        Op::Concat { .. } | Op::Split { .. } | Op::Slice(_) | Op::Transpose { .. } => (0, rw),
        Op::BroadcastTo { .. } => (0, rw),
        Op::Shape => (0, 0),
        // Gradient ops: a MAC per (weight, output pixel) pair for the conv weight gradient,
        // kh·kw per cotangent element for pooling (a compare or an add each), one add per
        // scattered element.
        Op::Grad(GradOp::Conv2dWeight { .. }) => {
            let dy = inputs.get(1).map(dims).unwrap_or_default();
            macs = out_elems
                * dy.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 1)
                    .map(|(_, d)| *d)
                    .product::<u64>();
            (2 * macs, rw)
        }
        Op::Grad(GradOp::Pool(p)) => {
            let dy = inputs.get(1).map(numel).unwrap_or(0);
            (dy * p.kernel[0] * p.kernel[1], rw)
        }
        Op::Grad(GradOp::ScatterAdd { .. }) => (inputs.get(2).map(numel).unwrap_or(0), rw),
        Op::Grad(GradOp::Gather { .. }) => (inputs.get(1).map(numel).unwrap_or(0), rw),
        // Twice the forward's MACs (input and weight gradients), plus 4 bilinear weights'
        // derivatives per sample.
        Op::Grad(GradOp::DeformConv2d(_)) => {
            let w = dims(&inputs[3]);
            let dy = inputs.get(4).map(dims).unwrap_or_default();
            let out_elems = dy.iter().product::<u64>();
            macs = 2 * out_elems * w[1] * w[2] * w[3];
            let c = dims(&inputs[0])[1];
            let sampled = dy.first().copied().unwrap_or(0)
                * c
                * w[2]
                * w[3]
                * dy.get(2).copied().unwrap_or(0)
                * dy.get(3).copied().unwrap_or(0);
            (2 * macs + 16 * sampled, rw)
        }
        Op::FusedConv2d { conv, epilogue } => {
            let c = epilogue_cost(
                &Op::Conv2d(conv.clone()),
                epilogue,
                inputs,
                outputs,
                bindings,
                default,
            );
            macs = c.macs;
            (c.flops, rw)
        }
        Op::FusedMatMul { mm, epilogue } => {
            let c = epilogue_cost(
                &Op::MatMul(*mm),
                epilogue,
                inputs,
                outputs,
                bindings,
                default,
            );
            macs = c.macs;
            (c.flops, rw)
        }
        // The body's work is counted by `stats::node_cost`, which sees the function.
        Op::Fused { .. } => (0, rw),
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::Send { .. }
        | Op::Recv { .. } => (0, rw),
    };
    OpCost { flops, bytes, macs }
}

/// The contraction's own cost plus one FLOP per output element for each epilogue step.
fn epilogue_cost(
    base: &Op,
    e: &Epilogue,
    inputs: &[TensorType],
    outputs: &[TensorType],
    bindings: &BTreeMap<String, u64>,
    default: u64,
) -> OpCost {
    let c = op_cost(
        base,
        &inputs[..2.min(inputs.len())],
        outputs,
        bindings,
        default,
    );
    let out_elems: u64 = outputs
        .iter()
        .map(|t| t.shape.numel().eval(bindings, default))
        .sum();
    let steps = (usize::from(e.bias)
        + usize::from(e.residual)
        + usize::from(e.activation.is_some())) as u64;
    OpCost {
        flops: c.flops + steps * out_elems,
        ..c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(op: Op, ins: &[TensorType], outs: &[TensorType]) -> OpCost {
        op_cost(&op, ins, outs, &BTreeMap::new(), 1)
    }

    #[test]
    fn matmul_counts_two_flops_per_mac() {
        let c = cost(
            Op::MatMul(MatMulAttrs::default()),
            &[TensorType::f32(&[4, 8]), TensorType::f32(&[8, 16])],
            &[TensorType::f32(&[4, 16])],
        );
        assert_eq!(c.flops, 2 * 4 * 8 * 16);
        assert_eq!(c.bytes, 4 * (32 + 128 + 64));
    }

    #[test]
    fn grouped_conv_counts_per_group_channels() {
        // depthwise 3x3 on 8 channels, 10x10 output, with bias
        let c = cost(
            Op::Conv2d(ConvAttrs {
                groups: 8,
                padding: [1; 4],
                ..Default::default()
            }),
            &[
                TensorType::f32(&[1, 8, 10, 10]),
                TensorType::f32(&[8, 1, 3, 3]),
                TensorType::f32(&[8]),
            ],
            &[TensorType::f32(&[1, 8, 10, 10])],
        );
        assert_eq!(c.flops, 2 * 800 * 9 + 800);
    }

    #[test]
    fn views_move_nothing() {
        let c = cost(
            Op::Reshape {
                shape: vec![ReshapeDim::Infer],
            },
            &[TensorType::f32(&[4, 4])],
            &[TensorType::f32(&[16])],
        );
        assert_eq!(c, OpCost::default());
    }
}
