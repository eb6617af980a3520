//! Detector operators: `NonMaxSuppression` → `nms`, `DeformConv` (opset 19) →
//! `deform_conv2d`.
//!
//! NonMaxSuppression's output is `[num_selected, 3]` (batch, class, box) with a
//! data-dependent length. oar's `nms` pads to a static row count instead: the import asks for
//! `C · min(max_output_boxes_per_class, M)` rows per image (no overall cut, so nothing ONNX
//! selects is dropped) and reshapes `nms`'s `selected` output `[N, K, 3]` to `[N·K, 3]`.
//! Each image's rows come in ONNX's order (class ascending, then descending score, ties by
//! box index); the rows past its count are `-1`. With one image the ONNX result is exactly the
//! prefix before the first `-1` row; with several, each image's block is padded.

use super::linalg_norm_pool::{conv_attrs, static_hw};
use super::pointwise::scalar;
use super::{Importer, NodeCx, Val};
use oar_ir::op::{DeformConvAttrs, NmsAttrs, NmsKind, ReshapeDim};
use oar_ir::{Dim, Op};

pub(super) const OPS: [&str; 2] = ["DeformConv", "NonMaxSuppression"];

pub(super) fn handles(op: &str) -> bool {
    OPS.contains(&op)
}

pub(super) fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    match cx.op_type {
        "NonMaxSuppression" => non_max_suppression(imp, cx),
        "DeformConv" => deform_conv(imp, cx),
        other => Err(format!(
            "internal: {other} routed to the detection importer"
        )),
    }
}

/// A scalar (or one-element) constant input, or `default` when the input is absent.
fn scalar_input(imp: &Importer, cx: &NodeCx, k: usize, default: f64) -> Result<f64, String> {
    match cx.input(k) {
        None => Ok(default),
        Some(name) => match imp.floats(name)?.as_slice() {
            [v] => Ok(*v),
            v => Err(format!("`{name}` must hold one value, holds {}", v.len())),
        },
    }
}

fn non_max_suppression(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    if cx.attrs.i("center_point_box", 0)? != 0 {
        return Err(
            "center_point_box=1 (cx, cy, w, h boxes) is not supported; only corner boxes".into(),
        );
    }
    let (bn, sn) = (cx.need(0)?, cx.need(1)?);
    let (bt, st) = (imp.ty(bn)?, imp.ty(sn)?);
    let (Some(c), Some(m)) = (
        st.shape.0.get(1).and_then(Dim::as_static),
        bt.shape.0.get(1).and_then(Dim::as_static),
    ) else {
        return Err(format!(
            "needs static class and box counts to size its padded output; boxes are {bt}, scores {st}"
        ));
    };
    let max_per_class = scalar_input(imp, cx, 2, 0.0)?;
    if max_per_class < 1.0 {
        return Err("max_output_boxes_per_class is 0 (or absent): the node selects nothing".into());
    }
    let per_class = (max_per_class as u64).min(m);
    let attrs = NmsAttrs {
        kind: NmsKind::Hard {
            iou_threshold: scalar_input(imp, cx, 3, 0.0)?,
        },
        // Without a threshold ONNX considers every box.
        score_threshold: scalar_input(imp, cx, 4, f64::NEG_INFINITY)?,
        nms_top_k: None,
        max_per_class: Some(per_class),
        keep_top_k: (c * per_class).max(1),
        background: None,
        // ONNX areas are (x1 − x0)·(y1 − y0), no +1.
        normalized: true,
    };
    let ins = vec![imp.ir(bn)?, imp.ir(sn)?];
    let h = cx.hint();
    let node = imp.add_multi(Op::Nms(attrs), ins, h)?;
    let selected = oar_ir::ValueRef::new(node, 1);
    let rows = bt.shape.0[0].mul(&Dim::Static(c * per_class));
    let flat = imp.add(
        Op::Reshape {
            shape: vec![ReshapeDim::Dim(rows), ReshapeDim::Dim(Dim::Static(3))],
        },
        vec![selected],
        h,
    )?;
    Ok(vec![Val::ir(flat)])
}

fn deform_conv(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let (xn, wn, on) = (cx.need(0)?, cx.need(1)?, cx.need(2)?);
    let (xt, wt, ot) = (imp.ty(xn)?, imp.ty(wn)?, imp.ty(on)?);
    let kernel = static_hw(&wt, "weight")?;
    let conv = conv_attrs(cx, &xt, kernel)?;
    let dg = cx.attrs.i("offset_group", 1)?.max(1) as u64;
    let (x, w, offset) = (imp.ir(xn)?, imp.ir(wn)?, imp.ir(on)?);
    let h = cx.hint();
    let mask = match cx.input(4) {
        Some(m) => imp.ir(m)?,
        // DCNv1: every tap weighs 1.
        None => {
            let one = scalar(imp, 1.0, h)?;
            let mut shape = ot.shape.0.clone();
            shape[1] = Dim::Static(kernel[0] * kernel[1] * dg);
            imp.add(Op::BroadcastTo { shape }, vec![one], h)?
        }
    };
    let mut ins = vec![x, offset, mask, w];
    if let Some(b) = cx.input(3) {
        ins.push(imp.ir(b)?);
    }
    let attrs = DeformConvAttrs {
        conv,
        deform_groups: dg,
    };
    Ok(vec![Val::ir(imp.add(Op::DeformConv2d(attrs), ins, h)?)])
}
