//! Per-op facts that several crates ask: each is one exhaustive `match`, so a new op does
//! not compile until every fact has been decided for it (the add-an-op checklist in
//! `ir/README.md`). Callers ask these methods instead of listing ops themselves.

use super::*;
use crate::mode::ExecMode;

/// How an op's outputs relate to "computed from weights only" (known once parameters and
/// constants are loaded, so computable once at load time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadTime {
    /// Known at load time whatever the inputs.
    Known,
    /// Never known at load time (run-time data, randomness, communication, effects).
    Unknown,
    /// Known exactly when it has inputs and all of them are known.
    IfInputsKnown,
    /// Known when the (first) input's type is fully static: the op reads only the type.
    IfInputTypeStatic,
}

impl Op {
    /// Whether the output types come from the declaration rather than inference.
    pub fn is_source(&self) -> bool {
        match self {
            Op::Input | Op::Param(_) | Op::Constant(_) | Op::Recv { .. } => true,
            Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Send { .. } => false,
        }
    }

    /// Whether the op's output is data the program is loaded with (parameters, constants),
    /// not an activation.
    pub fn is_weight(&self) -> bool {
        match self {
            Op::Param(_) | Op::Constant(_) => true,
            Op::Input
            | Op::Recv { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Send { .. } => false,
        }
    }

    /// Whether the output is the input's bytes under another shape: no data moves, and a
    /// buffer planner lets the output alias the input.
    pub fn is_view(&self) -> bool {
        match self {
            Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } => {
                true
            }
            Op::Input
            | Op::Param(_)
            | Op::Constant(_)
            | Op::Recv { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
            | Op::Nms(_)
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice(_)
            | Op::Transpose { .. }
            // Writes every broadcast copy: data moves.
            | Op::BroadcastTo { .. }
            | Op::Gather { .. }
            | Op::GatherElements { .. }
            | Op::Embedding
            | Op::Grad(_)
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Send { .. } => false,
        }
    }

    /// Whether the op is a GEMM-like contraction (matmul, convolutions, and their fused
    /// forms): what matrix units and tuned kernels accelerate.
    pub fn is_contraction(&self) -> bool {
        match self {
            Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. } => true,
            Op::Input
            | Op::Param(_)
            | Op::Constant(_)
            | Op::Recv { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::Fused { .. }
            | Op::Send { .. } => false,
        }
    }

    /// Whether each output element depends only on the input elements at the same
    /// (broadcast) index: unary, binary, where, cast, dropout.
    pub fn is_elementwise(&self) -> bool {
        match self {
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Dropout { .. } => {
                true
            }
            Op::Input
            | Op::Param(_)
            | Op::Constant(_)
            | Op::Recv { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            // Depends on the element's position, not only its value.
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Send { .. } => false,
        }
    }

    /// Whether the op is a collective over a mesh axis (every member must take part).
    pub fn is_collective(&self) -> bool {
        self.comm_group().is_some()
    }

    /// The group a collective spans.
    pub fn comm_group(&self) -> Option<&CommGroup> {
        self.as_collective().map(|(_, group)| group)
    }

    /// A collective's kind and attributes, and the group it spans; `None` for every other
    /// op. Callers that treat the five collectives differently match on [`CollectiveKind`]
    /// instead of listing every other op.
    pub fn as_collective(&self) -> Option<(CollectiveKind, &CommGroup)> {
        match self {
            Op::AllReduce { op, group } => Some((CollectiveKind::AllReduce { op: *op }, group)),
            Op::AllGather { axis, group } => {
                Some((CollectiveKind::AllGather { axis: *axis }, group))
            }
            Op::ReduceScatter { op, axis, group } => Some((
                CollectiveKind::ReduceScatter {
                    op: *op,
                    axis: *axis,
                },
                group,
            )),
            Op::AllToAll {
                split_axis,
                concat_axis,
                group,
            } => Some((
                CollectiveKind::AllToAll {
                    split_axis: *split_axis,
                    concat_axis: *concat_axis,
                },
                group,
            )),
            Op::Broadcast { root, group } => {
                Some((CollectiveKind::Broadcast { root: *root }, group))
            }
            Op::Input
            | Op::Param(_)
            | Op::Constant(_)
            | Op::Recv { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::Shape
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Send { .. } => None,
        }
    }

    /// Whether the op has effects beyond its outputs: communication with other ranks
    /// (send/recv, collectives). Such nodes are never removed as dead code, merged as
    /// duplicates, folded or moved to load time: every rank must run them, in order.
    pub fn has_effects(&self) -> bool {
        match self {
            Op::Send { .. }
            | Op::Recv { .. }
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. } => true,
            Op::Input
            | Op::Param(_)
            | Op::Constant(_)
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::Shape
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. } => false,
        }
    }

    /// Whether autodiff is expected to have a gradient rule for the op. False for ops
    /// whose outputs carry no gradient (comparisons, casts to non-float types, `shape`),
    /// for sources other than inputs and parameters, and for send/recv, which the
    /// partitioner inserts after differentiation.
    pub fn differentiable(&self) -> bool {
        match self {
            Op::Input | Op::Param(_) => true,
            // Gradient ops are emitted by autodiff itself; differentiating twice is not supported.
            Op::Constant(_) | Op::Recv { .. } | Op::Send { .. } | Op::Shape | Op::Grad(_) => false,
            // Selections and counts: no gradient flows through a discrete choice of boxes.
            Op::Nms(_) => false,
            Op::Binary(b) => !b.is_comparison(),
            Op::Cast { to } => to.is_float(),
            Op::Unary(_)
            | Op::Where
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
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
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. } => true,
        }
    }

    /// Whether the op costs nothing at run time: sources and views.
    pub fn is_free(&self) -> bool {
        self.is_source() || self.is_view()
    }

    /// Whether the op's outputs are known once weights are loaded, in `mode`. In training
    /// parameters change every step, so they (and all computed from them) are not.
    pub fn load_time(&self, mode: ExecMode) -> LoadTime {
        match self {
            Op::Constant(_) => LoadTime::Known,
            Op::Param(_) if mode.params_are_constant() => LoadTime::Known,
            Op::Param(_) => LoadTime::Unknown,
            Op::Input
            | Op::Recv { .. }
            | Op::Send { .. }
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. } => LoadTime::Unknown,
            // Training dropout draws a fresh mask every step; at inference it is an identity.
            Op::Dropout { .. } => match mode {
                ExecMode::Inference => LoadTime::IfInputsKnown,
                ExecMode::Training => LoadTime::Unknown,
            },
            Op::Shape => LoadTime::IfInputTypeStatic,
            Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            // Batch statistics in training come from the batch, an input: that input decides.
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::DeformConv2d(_)
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
            | Op::Grad(_)
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. } => LoadTime::IfInputsKnown,
        }
    }
}

impl LoadTime {
    /// Applies the rule to the known-ness of the inputs and whether the first input's type
    /// is fully static.
    pub fn decide(self, inputs_known: &[bool], first_input_static: bool) -> bool {
        match self {
            LoadTime::Known => true,
            LoadTime::Unknown => false,
            LoadTime::IfInputsKnown => !inputs_known.is_empty() && inputs_known.iter().all(|&k| k),
            LoadTime::IfInputTypeStatic => first_input_static,
        }
    }
}
