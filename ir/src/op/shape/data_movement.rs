//! Inference for data-movement ops: concat, split, slice, reshape, transpose, squeeze,
//! unsqueeze, flatten, broadcast_to, gathers, embedding.

use super::helpers::*;
use super::*;

/// Output types of a data-movement op.
pub(super) fn infer(op: &Op, inputs: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Concat { axis } => {
            if inputs.is_empty() {
                return fail("`concat` needs at least one input");
            }
            let first = &inputs[0];
            let a = norm_axis(*axis, first.rank())?;
            let mut total = first.shape.0[a].clone();
            for t in &inputs[1..] {
                same_dtype(op, first, t)?;
                if t.rank() != first.rank() {
                    return fail(format!(
                        "`concat` needs inputs of one rank, found {first} and {t}"
                    ));
                }
                for i in 0..t.rank() {
                    if i != a {
                        same_dim(
                            op,
                            &format!("dims {i} of {first} and {t}"),
                            &first.shape.0[i],
                            &t.shape.0[i],
                        )?;
                    }
                }
                total = add_dims(&total, &t.shape.0[a]).ok_or_else(|| {
                    ShapeError(format!(
                        "`concat`: the sum {total} + {} is not a single size",
                        t.shape.0[a]
                    ))
                })?;
            }
            let mut out = first.clone();
            out.shape.0[a] = total;
            one(out)
        }
        Op::Split { axis, sizes } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let a = norm_axis(*axis, x.rank())?;
            let sum: u64 = sizes.iter().sum();
            if x.shape.0[a] != Dim::Static(sum) {
                return fail(format!(
                    "`split`: sizes {sizes:?} add up to {sum} but dim {a} of {x} is {}",
                    x.shape.0[a]
                ));
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut t = x.clone();
                    t.shape.0[a] = Dim::Static(s);
                    t
                })
                .collect())
        }
        Op::Slice(s) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let n = s.axes.len();
            if s.starts.len() != n || s.ends.len() != n || s.steps.len() != n {
                return fail("`slice` needs axes, starts, ends and steps of one length");
            }
            let mut out = x.clone();
            for i in 0..n {
                let a = norm_axis(s.axes[i], x.rank())?;
                out.shape.0[a] = slice_len(&x.shape.0[a], s.starts[i], s.ends[i], s.steps[i])?;
            }
            one(out)
        }
        Op::Reshape { shape } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let total = x.shape.numel();
            let infer = shape
                .iter()
                .filter(|d| matches!(d, ReshapeDim::Infer))
                .count();
            if infer > 1 {
                return fail("`reshape` can infer at most one dim (-1)");
            }
            let known = shape.iter().fold(Dim::Static(1), |acc, d| match d {
                ReshapeDim::Dim(d) => acc.mul(d),
                ReshapeDim::Infer => acc,
            });
            let inferred = if infer == 1 {
                Some(total.div_exact(&known).ok_or_else(|| {
                    ShapeError(format!(
                        "`reshape`: {x} has {total} elements, not a multiple of {known}"
                    ))
                })?)
            } else {
                if known != total {
                    return fail(format!(
                        "`reshape`: {x} has {total} elements but the target has {known}"
                    ));
                }
                None
            };
            let dims = shape
                .iter()
                .map(|d| match d {
                    ReshapeDim::Dim(d) => d.clone(),
                    ReshapeDim::Infer => inferred.clone().unwrap_or(Dim::Static(1)),
                })
                .collect();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Transpose { perm } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..x.rank()).collect::<Vec<_>>() {
                return fail(format!(
                    "`transpose`: perm {perm:?} is not a permutation of the {} dims of {x}",
                    x.rank()
                ));
            }
            one(TensorType::new(
                x.dtype,
                perm.iter().map(|&p| x.shape.0[p].clone()).collect(),
            ))
        }
        Op::Squeeze { axes } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let axes: Vec<usize> = if axes.is_empty() {
                (0..x.rank())
                    .filter(|&i| x.shape.0[i] == Dim::Static(1))
                    .collect()
            } else {
                axes.iter()
                    .map(|&a| norm_axis(a, x.rank()))
                    .collect::<R<_>>()?
            };
            for &a in &axes {
                if x.shape.0[a] != Dim::Static(1) {
                    return fail(format!("`squeeze`: dim {a} of {x} is not 1"));
                }
            }
            let dims = (0..x.rank())
                .filter(|i| !axes.contains(i))
                .map(|i| x.shape.0[i].clone())
                .collect();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Unsqueeze { axes } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let rank = x.rank() + axes.len();
            let mut at: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect::<R<_>>()?;
            at.sort();
            if at.windows(2).any(|w| w[0] == w[1]) {
                return fail(format!("`unsqueeze` repeats an axis in {axes:?}"));
            }
            let mut src = x.shape.0.iter();
            let dims = (0..rank)
                .map(|i| {
                    if at.contains(&i) {
                        Some(Dim::Static(1))
                    } else {
                        src.next().cloned()
                    }
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ShapeError("`unsqueeze` axes out of range".into()))?;
            one(TensorType::new(x.dtype, dims))
        }
        Op::Flatten { axis } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let r = x.rank() as i64;
            let a = if *axis < 0 { axis + r } else { *axis };
            if !(0..=r).contains(&a) {
                return fail(format!("`flatten`: axis {axis} out of range for {x}"));
            }
            let a = a as usize;
            let outer = Shape(x.shape.0[..a].to_vec()).numel();
            let inner = Shape(x.shape.0[a..].to_vec()).numel();
            one(TensorType::new(x.dtype, vec![outer, inner]))
        }
        Op::BroadcastTo { shape } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            // numpy's broadcast_to: the result is exactly `shape` (ONNX Expand would also
            // grow the target where the input is larger; the IR keeps the stricter form so
            // the output type is the attribute).
            let lead = shape.len().checked_sub(x.rank()).ok_or_else(|| {
                ShapeError(format!(
                    "`broadcast_to`: {x} has more dims than the target {}",
                    Shape(shape.clone())
                ))
            })?;
            for (i, d) in x.shape.0.iter().enumerate() {
                if *d != Dim::Static(1) && *d != shape[lead + i] {
                    return fail(format!(
                        "`broadcast_to`: dim {i} of {x} is neither 1 nor {}",
                        shape[lead + i]
                    ));
                }
            }
            one(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Gather { axis } => {
            arity(op, inputs, &[2])?;
            let (data, idx) = (&inputs[0], &inputs[1]);
            need_int(op, "indices", idx)?;
            let a = norm_axis(*axis, data.rank())?;
            let mut dims = data.shape.0[..a].to_vec();
            dims.extend(idx.shape.0.iter().cloned());
            dims.extend(data.shape.0[a + 1..].iter().cloned());
            one(TensorType::new(data.dtype, dims))
        }
        Op::GatherElements { axis } => {
            arity(op, inputs, &[2])?;
            let (data, idx) = (&inputs[0], &inputs[1]);
            need_int(op, "indices", idx)?;
            if idx.rank() != data.rank() {
                return fail(format!(
                    "`gather_elements` needs indices of the data's rank, found {data} and {idx}"
                ));
            }
            let a = norm_axis(*axis, data.rank())?;
            for i in (0..data.rank()).filter(|&i| i != a) {
                same_dim(
                    op,
                    &format!("dims {i} of {data} and {idx}"),
                    &data.shape.0[i],
                    &idx.shape.0[i],
                )?;
            }
            one(TensorType::new(data.dtype, idx.shape.0.clone()))
        }
        Op::Shape => {
            arity(op, inputs, &[1])?;
            one(TensorType::new(
                DType::I64,
                vec![Dim::Static(inputs[0].rank() as u64)],
            ))
        }
        Op::Embedding => {
            arity(op, inputs, &[2])?;
            let (table, ids) = (&inputs[0], &inputs[1]);
            need_rank(op, "table [vocab, dim]", table, 2)?;
            need_int(op, "ids", ids)?;
            let mut dims = ids.shape.0.clone();
            dims.push(table.shape.0[1].clone());
            one(TensorType::new(table.dtype, dims))
        }
        // `infer_types` sends only the data-movement ops here.
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
        | Op::Nms(_)
        | Op::DeformConv2d(_)
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::FusedConv2d { .. }
        | Op::FusedMatMul { .. }
        | Op::Fused { .. }
        | Op::Grad(_)
        | Op::Send { .. } => fail(format!("`{}` is not a data-movement op", op.name())),
    }
}
