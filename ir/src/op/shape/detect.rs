//! Inference for the detector ops: `nms`/`matrix_nms` (outputs padded to `keep_top_k`) and
//! `deform_conv2d` (a conv2d's output, with offset and mask shapes checked against it).

use super::helpers::*;
use super::*;

/// `nms(boxes [N, M, 4], scores [N, C, M])` → `(dets f32[N, K, 6], selected i64[N, K, 3],
/// count i64[N])`.
pub(super) fn nms(op: &Op, n: &NmsAttrs, inputs: &[TensorType]) -> R<Vec<TensorType>> {
    arity(op, inputs, &[2])?;
    let (boxes, scores) = (&inputs[0], &inputs[1]);
    need_rank(op, "boxes [N, M, 4]", boxes, 3)?;
    need_rank(op, "scores [N, C, M]", scores, 3)?;
    same_dtype(op, boxes, scores)?;
    if !boxes.dtype.is_float() {
        return fail(format!("`{}` needs float boxes, found {boxes}", op.name()));
    }
    if boxes.shape.0[2] != Dim::Static(4) {
        return fail(format!(
            "`{}` needs boxes [N, M, 4] (x0, y0, x1, y1), found {boxes}",
            op.name()
        ));
    }
    same_dim(
        op,
        "batch sizes of boxes and scores",
        &boxes.shape.0[0],
        &scores.shape.0[0],
    )?;
    same_dim(
        op,
        "box counts of boxes and scores",
        &boxes.shape.0[1],
        &scores.shape.0[2],
    )?;
    if n.keep_top_k == 0 {
        return fail(format!("`{}` needs keep_top_k > 0", op.name()));
    }
    let (b, k) = (boxes.shape.0[0].clone(), Dim::Static(n.keep_top_k));
    Ok(vec![
        TensorType::new(boxes.dtype, vec![b.clone(), k.clone(), Dim::Static(6)]),
        TensorType::new(DType::I64, vec![b.clone(), k, Dim::Static(3)]),
        TensorType::new(DType::I64, vec![b]),
    ])
}

/// The two sampling inputs of `deform_conv2d`: offset `[N, 2·kh·kw·dg, Ho, Wo]` and mask
/// `[N, kh·kw·dg, Ho, Wo]`, for the output `y` of the plain convolution.
pub(super) fn deform_inputs(
    op: &Op,
    d: &DeformConvAttrs,
    x: &TensorType,
    w: &TensorType,
    y: &TensorType,
    offset: &TensorType,
    mask: &TensorType,
) -> R<()> {
    let dg = d.deform_groups;
    let c = x.shape.0[1].as_static();
    if dg == 0 || c.is_some_and(|c| c % dg != 0) {
        return fail(format!(
            "`{}`: {} input channels do not split into {dg} deformable groups",
            op.name(),
            x.shape.0[1]
        ));
    }
    let taps = match (w.shape.0[2].as_static(), w.shape.0[3].as_static()) {
        (Some(kh), Some(kw)) => kh * kw,
        _ => {
            return fail(format!(
                "`{}` needs a static kernel size, found {w}",
                op.name()
            ))
        }
    };
    for (t, what, per_tap) in [(offset, "offset", 2), (mask, "mask", 1)] {
        let mut want = y.shape.0.clone();
        want[1] = Dim::Static(per_tap * taps * dg);
        let want = TensorType::new(x.dtype, want);
        if *t != want {
            return fail(format!(
                "`{}`: {what} must be {want} ({per_tap}·kh·kw·deform_groups channels at the output's size), found {t}",
                op.name()
            ));
        }
    }
    Ok(())
}

/// `deform_conv2d(x, offset, mask, w[, bias])` → the conv2d's output type.
pub(super) fn deform_conv2d(
    op: &Op,
    d: &DeformConvAttrs,
    inputs: &[TensorType],
    ctx: &InferCtx,
) -> R<Vec<TensorType>> {
    arity(op, inputs, &[4, 5])?;
    let (x, offset, mask, w) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
    let mut conv_in = vec![x.clone(), w.clone()];
    conv_in.extend(inputs.get(4).cloned());
    let y = infer_types(&Op::Conv2d(d.conv.clone()), &conv_in, &[], ctx)
        .map_err(|e| ShapeError(e.0.replace("`conv2d`", "`deform_conv2d`")))?
        .remove(0);
    deform_inputs(op, d, x, w, &y, offset, mask)?;
    Ok(vec![y])
}

/// `deform_conv2d_grad(x, offset, mask, w, dy)` → `(dx, doffset, dmask, dw)`.
pub(super) fn deform_conv2d_grad(
    op: &Op,
    d: &DeformConvAttrs,
    inputs: &[TensorType],
    ctx: &InferCtx,
) -> R<Vec<TensorType>> {
    arity(op, inputs, &[5])?;
    let fwd = deform_conv2d(op, d, &inputs[..4], ctx)?;
    let dy = &inputs[4];
    if fwd.first() != Some(dy) {
        return fail(format!(
            "`{}`: the cotangent {dy} is not the type of deform_conv2d's output {}",
            op.name(),
            fwd[0]
        ));
    }
    Ok(inputs[..4].to_vec())
}
