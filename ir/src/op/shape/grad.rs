//! Inference for the gradient ops (`conv2d_grad_weight`, `pool_grad`, `scatter_add`,
//! `gather_grad`): each checks that its cotangent has the type the forward op would give.

use super::helpers::*;
use super::*;

/// Output types of a gradient op.
pub(super) fn infer(
    op: &Op,
    g: &GradOp,
    inputs: &[TensorType],
    ctx: &InferCtx,
) -> R<Vec<TensorType>> {
    match g {
        GradOp::Conv2dWeight { conv, kernel } => {
            arity(op, inputs, &[2])?;
            let (x, dy) = (&inputs[0], &inputs[1]);
            same_dtype(op, x, dy)?;
            need_rank(op, "input (NCHW)", x, 4)?;
            need_rank(op, "cotangent (NCHW)", dy, 4)?;
            if conv.groups == 0 || kernel.contains(&0) {
                return fail(format!(
                    "`{}` groups and kernel must be positive",
                    op.name()
                ));
            }
            let c = x.shape.0[1].as_static();
            let o = dy.shape.0[1].clone();
            let cg = match c {
                Some(c) if c % conv.groups == 0 => c / conv.groups,
                _ => {
                    return fail(format!(
                        "`{}`: {} input channels do not split into {} groups",
                        op.name(),
                        x.shape.0[1],
                        conv.groups
                    ))
                }
            };
            if o.as_static().is_some_and(|o| o % conv.groups != 0) {
                return fail(format!(
                    "`{}`: {o} output channels do not split into {} groups",
                    op.name(),
                    conv.groups
                ));
            }
            // The cotangent must have the forward conv's output type.
            let w = TensorType::new(
                x.dtype,
                vec![
                    o.clone(),
                    Dim::Static(cg),
                    Dim::Static(kernel[0]),
                    Dim::Static(kernel[1]),
                ],
            );
            let fwd = infer_types(&Op::Conv2d(conv.clone()), &[x.clone(), w.clone()], &[], ctx)?;
            if fwd.first() != Some(dy) {
                return fail(format!(
                    "`{}`: the cotangent {dy} is not the type of conv2d's output {}",
                    op.name(),
                    types_of(&fwd)
                ));
            }
            Ok(vec![w])
        }
        GradOp::Pool(p) => {
            arity(op, inputs, &[2])?;
            let (x, dy) = (&inputs[0], &inputs[1]);
            same_dtype(op, x, dy)?;
            let fwd = infer_types(&Op::Pool(p.clone()), std::slice::from_ref(x), &[], ctx)?;
            if fwd.first() != Some(dy) {
                return fail(format!(
                    "`{}`: the cotangent {dy} is not the type of the pooling's output {}",
                    op.name(),
                    types_of(&fwd)
                ));
            }
            Ok(vec![x.clone()])
        }
        GradOp::ScatterAdd { axis } => {
            arity(op, inputs, &[3])?;
            let (data, idx, upd) = (&inputs[0], &inputs[1], &inputs[2]);
            need_int(op, "indices", idx)?;
            same_dtype(op, data, upd)?;
            norm_axis(*axis, data.rank())?;
            if idx.shape != upd.shape || idx.rank() != data.rank() {
                return fail(format!(
                    "`{}` needs indices and updates of one shape and data's rank, found {data}, {idx}, {upd}",
                    op.name()
                ));
            }
            Ok(vec![data.clone()])
        }
        GradOp::Gather { axis, rows } => {
            arity(op, inputs, &[2])?;
            let (idx, dy) = (&inputs[0], &inputs[1]);
            need_int(op, "indices", idx)?;
            // dy = data[..a] ++ indices ++ data[a+1..], so data's rank is:
            let rank = (dy.rank() + 1).checked_sub(idx.rank()).filter(|&r| r > 0);
            let Some(rank) = rank else {
                return fail(format!(
                    "`{}`: cotangent {dy} has too small a rank for indices {idx}",
                    op.name()
                ));
            };
            let a = norm_axis(*axis, rank)?;
            if dy.shape.0[a..a + idx.rank()] != idx.shape.0[..] {
                return fail(format!(
                    "`{}`: cotangent {dy} does not hold indices {idx} at axis {a}",
                    op.name()
                ));
            }
            let mut dims = dy.shape.0[..a].to_vec();
            dims.push(Dim::Static(*rows));
            dims.extend(dy.shape.0[a + idx.rank()..].iter().cloned());
            Ok(vec![TensorType::new(dy.dtype, dims)])
        }
        GradOp::DeformConv2d(d) => super::detect::deform_conv2d_grad(op, d, inputs, ctx),
    }
}

fn types_of(ts: &[TensorType]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
