//! Neural-network ops: convolutions, normalizations, pooling, resize, softmax, reductions,
//! matrix products, GatherElements.

use super::pointwise::scalar;
use super::{Importer, NodeCx, Val};
use oar_ir::dist::ReduceOp;
use oar_ir::op::{
    BinaryOp, ConvAttrs, ConvTransposeAttrs, CoordMode, GradOp, Literal, MatMulAttrs, PoolAttrs,
    PoolKind, ReduceOverAxes, ReshapeDim, ResizeAttrs, ResizeMode,
};
use oar_ir::{Dim, Op, TensorType, ValueRef};

pub(super) fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let a = &cx.attrs;
    let h = cx.hint();
    let v = match cx.op_type {
        "Conv" => {
            let (x, w) = (imp.ir(cx.need(0)?)?, imp.ir(cx.need(1)?)?);
            let xt = imp.ty(cx.need(0)?)?;
            let wt = imp.ty(cx.need(1)?)?;
            need_2d(&xt, "input")?;
            let kernel = static_hw(&wt, "weight")?;
            let conv = conv_attrs(cx, &xt, kernel)?;
            let mut ins = vec![x, w];
            if let Some(b) = cx.input(2) {
                ins.push(imp.ir(b)?);
            }
            imp.add(Op::Conv2d(conv), ins, h)?
        }
        "ConvTranspose" => conv_transpose(imp, cx)?,
        "BatchNormalization" => {
            if cx.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("training-mode outputs (running mean/var) are not supported".into());
            }
            let mut ins = Vec::new();
            for k in 0..5 {
                ins.push(imp.ir(cx.need(k)?)?);
            }
            imp.add(
                Op::BatchNorm {
                    eps: a.f("epsilon", 1e-5)?,
                    momentum: None,
                },
                ins,
                h,
            )?
        }
        "LayerNormalization" => {
            let axis = a.i("axis", -1)?;
            let stats = if cx.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                layer_norm_stats(imp, cx, axis, a.f("epsilon", 1e-5)?)?
            } else {
                vec![]
            };
            let x = imp.ir(cx.need(0)?)?;
            let scale = imp.ir(cx.need(1)?)?;
            let bias = match cx.input(2) {
                Some(b) => imp.ir(b)?,
                None => {
                    let st = imp.ty(cx.need(1)?)?;
                    let n = st.shape.numel().as_static().ok_or("symbolic scale shape")?;
                    imp.constant(
                        st,
                        Literal::Floats(vec![0.0; n as usize]),
                        &format!("{h}.bias"),
                    )?
                }
            };
            let y = imp.add(
                Op::LayerNorm {
                    axis,
                    eps: a.f("epsilon", 1e-5)?,
                },
                vec![x, scale, bias],
                h,
            )?;
            return Ok(std::iter::once(Val::ir(y)).chain(stats).collect());
        }
        "MatMul" => matmul(imp, cx)?,
        "Gemm" => gemm(imp, cx)?,
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let kind = if cx.op_type == "GlobalMaxPool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let x = imp.ir(cx.need(0)?)?;
            imp.add(Op::GlobalPool(kind), vec![x], h)?
        }
        "AveragePool" | "MaxPool" => pool(imp, cx)?,
        "Resize" => resize(imp, cx)?,
        "Softmax" | "LogSoftmax" => softmax(imp, cx)?,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" => reduce(imp, cx)?,
        "GatherElements" => {
            let x = imp.ir(cx.need(0)?)?;
            let i = imp.ir_as(cx.need(1)?, oar_ir::DType::I64)?;
            imp.add(
                Op::GatherElements {
                    axis: a.i("axis", 0)?,
                },
                vec![x, i],
                h,
            )?
        }
        "ScatterElements" => {
            // Only the accumulating form has an IR op (the gradient of gather_elements).
            let reduction = a.s("reduction", "none")?;
            if reduction != "add" {
                return Err(format!(
                    "ScatterElements with reduction={reduction} is not supported (only add, as `scatter_add`)"
                ));
            }
            let x = imp.ir(cx.need(0)?)?;
            let i = imp.ir_as(cx.need(1)?, oar_ir::DType::I64)?;
            let u = imp.ir(cx.need(2)?)?;
            let axis = a.i("axis", 0)?;
            imp.add(Op::Grad(GradOp::ScatterAdd { axis }), vec![x, i, u], h)?
        }
        other => return Err(format!("internal: no converter for {other}")),
    };
    Ok(vec![Val::ir(v)])
}

/// LayerNormalization's optional outputs: the mean and 1/√(var + ε) over the normalized
/// axes, kept as size-1 dims.
fn layer_norm_stats(
    imp: &mut Importer,
    cx: &NodeCx,
    axis: i64,
    eps: f64,
) -> Result<Vec<Val>, String> {
    let rank = imp.ty(cx.need(0)?)?.rank() as i64;
    let first = if axis < 0 { axis + rank } else { axis };
    let axes: Vec<i64> = (first..rank).collect();
    let h = cx.hint();
    let x = imp.ir(cx.need(0)?)?;
    let mean_op = Op::Reduce(ReduceOverAxes {
        op: ReduceOp::Mean,
        axes,
        keepdims: true,
    });
    let mean = imp.add(mean_op.clone(), vec![x], h)?;
    let d = imp.add(Op::Binary(BinaryOp::Sub), vec![x, mean], h)?;
    let sq = imp.add(Op::Binary(BinaryOp::Mul), vec![d, d], h)?;
    let var = imp.add(mean_op, vec![sq], h)?;
    let e = scalar(imp, eps, h)?;
    let ve = imp.add(Op::Binary(BinaryOp::Add), vec![var, e], h)?;
    let inv = imp.add(Op::Unary(oar_ir::op::UnaryOp::Rsqrt), vec![ve], h)?;
    Ok(vec![Val::ir(mean), Val::ir(inv)])
}

fn need_2d(t: &TensorType, what: &str) -> Result<(), String> {
    if t.rank() == 4 {
        Ok(())
    } else {
        Err(format!("only 2-d (NCHW) is supported; the {what} is {t}"))
    }
}

pub(super) fn static_hw(t: &TensorType, what: &str) -> Result<[u64; 2], String> {
    need_2d(t, what)?;
    match (t.shape.0[2].as_static(), t.shape.0[3].as_static()) {
        (Some(a), Some(b)) => Ok([a, b]),
        _ => Err(format!("the {what} needs static spatial dims, is {t}")),
    }
}

fn pair(v: &[i64]) -> [u64; 2] {
    [v[0].max(0) as u64, v[1].max(0) as u64]
}

/// Padding [top, left, bottom, right] from `pads` or `auto_pad`.
fn padding(
    cx: &NodeCx,
    x: &TensorType,
    kernel: [u64; 2],
    stride: [u64; 2],
    dilation: [u64; 2],
) -> Result<[u64; 4], String> {
    let a = &cx.attrs;
    let auto = a.s("auto_pad", "NOTSET")?;
    match auto.as_str() {
        "NOTSET" => {
            let p = a.ints_n("pads", 4, 0)?;
            if p.iter().any(|&v| v < 0) {
                return Err(format!("negative pads {p:?}"));
            }
            Ok([p[0] as u64, p[1] as u64, p[2] as u64, p[3] as u64])
        }
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [0u64; 4];
            for i in 0..2 {
                let n = x.shape.0[2 + i]
                    .as_static()
                    .ok_or("auto_pad SAME needs static spatial dims")?;
                let o = n.div_ceil(stride[i]);
                let eff = (kernel[i] - 1) * dilation[i] + 1;
                let total = ((o - 1) * stride[i] + eff).saturating_sub(n);
                let small = total / 2;
                let (begin, end) = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                out[i] = begin;
                out[i + 2] = end;
            }
            Ok(out)
        }
        other => Err(format!("unknown auto_pad `{other}`")),
    }
}

pub(super) fn conv_attrs(
    cx: &NodeCx,
    x: &TensorType,
    kernel: [u64; 2],
) -> Result<ConvAttrs, String> {
    let a = &cx.attrs;
    if let Some(k) = a.ints("kernel_shape")? {
        if k.len() != 2 || pair(&k) != kernel {
            return Err(format!(
                "kernel_shape {k:?} disagrees with the weight's {kernel:?}"
            ));
        }
    }
    let stride = pair(&a.ints_n("strides", 2, 1)?);
    let dilation = pair(&a.ints_n("dilations", 2, 1)?);
    if stride.contains(&0) || dilation.contains(&0) {
        return Err("strides and dilations must be positive".into());
    }
    Ok(ConvAttrs {
        stride,
        padding: padding(cx, x, kernel, stride, dilation)?,
        dilation,
        groups: a.i("group", 1)?.max(1) as u64,
    })
}

fn conv_transpose(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let a = &cx.attrs;
    let xt = imp.ty(cx.need(0)?)?;
    let wt = imp.ty(cx.need(1)?)?;
    need_2d(&xt, "input")?;
    let kernel = static_hw(&wt, "weight")?;
    let stride = pair(&a.ints_n("strides", 2, 1)?);
    let dilation = pair(&a.ints_n("dilations", 2, 1)?);
    let mut output_padding = pair(&a.ints_n("output_padding", 2, 0)?);
    let auto = a.s("auto_pad", "NOTSET")?;
    let padding = if let Some(out) = a.ints("output_shape")? {
        let out = &out[out.len().saturating_sub(2)..];
        let mut p = [0u64; 4];
        for i in 0..2 {
            let n = xt.shape.0[2 + i]
                .as_static()
                .ok_or("output_shape needs static input dims")?;
            let full = stride[i] * (n - 1) + output_padding[i] + (kernel[i] - 1) * dilation[i] + 1;
            let total = full as i64 - out[i];
            // A larger output_shape than the full output extends it at the end.
            if total < 0 {
                output_padding[i] += (-total) as u64;
            }
            let total = total.max(0) as u64;
            let (begin, end) = if auto == "SAME_UPPER" {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            };
            p[i] = begin;
            p[i + 2] = end;
        }
        p
    } else if auto.starts_with("SAME") {
        // Output = input * stride: total padding = full - in*stride.
        let mut p = [0u64; 4];
        for i in 0..2 {
            let n = xt.shape.0[2 + i]
                .as_static()
                .ok_or("auto_pad SAME needs static input dims")?;
            let full = stride[i] * (n - 1) + output_padding[i] + (kernel[i] - 1) * dilation[i] + 1;
            let total = full.saturating_sub(n * stride[i]);
            let (begin, end) = if auto == "SAME_UPPER" {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            };
            p[i] = begin;
            p[i + 2] = end;
        }
        p
    } else {
        padding(cx, &xt, kernel, stride, dilation)?
    };
    let attrs = ConvTransposeAttrs {
        conv: ConvAttrs {
            stride,
            padding,
            dilation,
            groups: a.i("group", 1)?.max(1) as u64,
        },
        output_padding,
    };
    let mut ins = vec![imp.ir(cx.need(0)?)?, imp.ir(cx.need(1)?)?];
    if let Some(b) = cx.input(2) {
        ins.push(imp.ir(b)?);
    }
    imp.add(Op::ConvTranspose2d(attrs), ins, cx.hint())
}

fn pool(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let a = &cx.attrs;
    if cx.outputs.get(1).is_some_and(|o| !o.is_empty()) {
        return Err("the Indices output is not supported".into());
    }
    let xt = imp.ty(cx.need(0)?)?;
    need_2d(&xt, "input")?;
    let k = a.ints("kernel_shape")?.ok_or("needs kernel_shape")?;
    if k.len() != 2 {
        return Err(format!("only 2-d pooling; kernel_shape is {k:?}"));
    }
    let kernel = pair(&k);
    let stride = pair(&a.ints_n("strides", 2, 1)?);
    let dilation = pair(&a.ints_n("dilations", 2, 1)?);
    if dilation != [1, 1] {
        return Err(format!("dilated pooling ({dilation:?}) is not supported"));
    }
    let max = cx.op_type == "MaxPool";
    let attrs = PoolAttrs {
        kind: if max { PoolKind::Max } else { PoolKind::Avg },
        kernel,
        stride,
        padding: padding(cx, &xt, kernel, stride, dilation)?,
        ceil_mode: a.i("ceil_mode", 0)? != 0,
        count_include_pad: !max && a.i("count_include_pad", 0)? != 0,
    };
    let x = imp.ir(cx.need(0)?)?;
    imp.add(Op::Pool(attrs), vec![x], cx.hint())
}

fn resize(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let a = &cx.attrs;
    let mode = match a.s("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" => ResizeMode::Bilinear,
        other => return Err(format!("mode `{other}` is not supported (nearest, linear)")),
    };
    let coord = match a
        .s("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => CoordMode::HalfPixel,
        "asymmetric" => CoordMode::Asymmetric,
        "align_corners" => CoordMode::AlignCorners,
        "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
        other => {
            return Err(format!(
                "coordinate_transformation_mode `{other}` is not supported"
            ))
        }
    };
    if mode == ResizeMode::Nearest {
        let nearest = a.s("nearest_mode", "round_prefer_floor")?;
        let expected = if coord == CoordMode::Asymmetric {
            "floor"
        } else {
            "round_prefer_floor"
        };
        if nearest != expected {
            return Err(format!(
                "nearest_mode `{nearest}` with this coordinate mode is not supported (oar uses `{expected}`)"
            ));
        }
    }
    if a.i("antialias", 0)? != 0 || a.has("axes") {
        return Err("antialias and axes are not supported".into());
    }
    let xt = imp.ty(cx.need(0)?)?;
    need_2d(&xt, "input")?;
    let (scales_in, sizes_in) = if imp.opset < 11 { (1, 99) } else { (2, 3) };
    let sizes = cx
        .input(sizes_in)
        .map(|n| imp.ints(n))
        .transpose()?
        .filter(|v| !v.is_empty());
    let scales = cx
        .input(scales_in)
        .map(|n| imp.floats(n))
        .transpose()?
        .filter(|v| !v.is_empty());
    let size: [Dim; 2] = match (sizes, scales) {
        (Some(s), _) => {
            if s.len() != 4 || s[0] as u64 != xt.shape.0[0].as_static().unwrap_or(s[0] as u64) {
                return Err(format!("sizes {s:?} must keep N and C"));
            }
            [
                Dim::Static(s[2].max(0) as u64),
                Dim::Static(s[3].max(0) as u64),
            ]
        }
        (None, Some(sc)) => {
            if sc.len() != 4 || sc[0] != 1.0 || sc[1] != 1.0 {
                return Err(format!("scales {sc:?}: only H and W may be scaled"));
            }
            let mut out = [Dim::Static(0), Dim::Static(0)];
            for i in 0..2 {
                let d = &xt.shape.0[2 + i];
                out[i] = match d.as_static() {
                    Some(n) => {
                        let o = (n as f64 * sc[2 + i]).floor();
                        // The IR maps coordinates with in/out, ONNX with the scale: equal
                        // only when the output size is exact.
                        if (o - n as f64 * sc[2 + i]).abs() > 1e-9 {
                            return Err(format!(
                                "scale {} of size {n} is not a whole output size; use `sizes`",
                                sc[2 + i]
                            ));
                        }
                        Dim::Static(o as u64)
                    }
                    None if sc[2 + i].fract() == 0.0 && sc[2 + i] >= 1.0 => {
                        d.mul(&Dim::Static(sc[2 + i] as u64))
                    }
                    None => return Err(format!("scale {} of a symbolic size", sc[2 + i])),
                };
            }
            out
        }
        (None, None) => return Err("needs scales or sizes".into()),
    };
    let x = imp.ir(cx.need(0)?)?;
    imp.add(
        Op::Resize(ResizeAttrs { mode, coord, size }),
        vec![x],
        cx.hint(),
    )
}

fn softmax(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let log = cx.op_type == "LogSoftmax";
    let t = imp.ty(cx.need(0)?)?;
    let rank = t.rank() as i64;
    let x = imp.ir(cx.need(0)?)?;
    let make = |axis| {
        if log {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis }
        }
    };
    if imp.opset >= 13 {
        return imp.add(make(cx.attrs.i("axis", -1)?), vec![x], cx.hint());
    }
    // Before opset 13 the input is viewed as 2-d at `axis`, normalized over the second part.
    let mut axis = cx.attrs.i("axis", 1)?;
    if axis < 0 {
        axis += rank;
    }
    if axis == rank - 1 {
        return imp.add(make(axis), vec![x], cx.hint());
    }
    let flat = imp.add(Op::Flatten { axis }, vec![x], cx.hint())?;
    let s = imp.add(make(1), vec![flat], cx.hint())?;
    let shape = t.shape.0.iter().cloned().map(ReshapeDim::Dim).collect();
    imp.add(Op::Reshape { shape }, vec![s], cx.hint())
}

fn reduce(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let op = match cx.op_type {
        "ReduceMean" => ReduceOp::Mean,
        "ReduceSum" => ReduceOp::Sum,
        "ReduceMax" => ReduceOp::Max,
        "ReduceMin" => ReduceOp::Min,
        _ => ReduceOp::Prod,
    };
    let axes_from_input = imp.opset >= 18 || (cx.op_type == "ReduceSum" && imp.opset >= 13);
    let axes = if axes_from_input {
        cx.input(1).map(|n| imp.ints(n)).transpose()?
    } else {
        cx.attrs.ints("axes")?
    };
    let keepdims = cx.attrs.i("keepdims", 1)? != 0;
    let x = imp.ir(cx.need(0)?)?;
    let axes = axes.unwrap_or_default();
    if axes.is_empty() && cx.attrs.i("noop_with_empty_axes", 0)? != 0 {
        return Ok(x);
    }
    imp.add(
        Op::Reduce(ReduceOverAxes { op, axes, keepdims }),
        vec![x],
        cx.hint(),
    )
}

/// MatMul with numpy semantics: 1-d operands are promoted to matrices and the added dim
/// removed afterwards.
fn matmul(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let (an, bn) = (cx.need(0)?, cx.need(1)?);
    let (ra, rb) = (imp.ty(an)?.rank(), imp.ty(bn)?.rank());
    let h = cx.hint();
    let dt = imp.ty(an)?.dtype;
    let mut a = imp.ir_as(an, dt)?;
    let mut b = imp.ir_as(bn, dt)?;
    if ra == 1 {
        a = imp.add(Op::Unsqueeze { axes: vec![0] }, vec![a], h)?;
    }
    if rb == 1 {
        b = imp.add(Op::Unsqueeze { axes: vec![1] }, vec![b], h)?;
    }
    let mut y = imp.add(Op::MatMul(MatMulAttrs::default()), vec![a, b], h)?;
    if rb == 1 {
        y = imp.add(Op::Squeeze { axes: vec![-1] }, vec![y], h)?;
    }
    if ra == 1 {
        let axis = if rb == 1 { -1 } else { -2 };
        y = imp.add(Op::Squeeze { axes: vec![axis] }, vec![y], h)?;
    }
    Ok(y)
}

fn gemm(imp: &mut Importer, cx: &NodeCx) -> Result<ValueRef, String> {
    let a = &cx.attrs;
    let h = cx.hint();
    let mm = MatMulAttrs {
        transpose_a: a.i("transA", 0)? != 0,
        transpose_b: a.i("transB", 0)? != 0,
    };
    let x = imp.ir(cx.need(0)?)?;
    let w = imp.ir(cx.need(1)?)?;
    let mut y = imp.add(Op::MatMul(mm), vec![x, w], h)?;
    let alpha = a.f("alpha", 1.0)?;
    if alpha != 1.0 {
        let c = scalar(imp, alpha, h)?;
        y = imp.add(Op::Binary(BinaryOp::Mul), vec![y, c], h)?;
    }
    if let Some(cn) = cx.input(2) {
        let mut c = imp.ir_as(cn, oar_ir::DType::F32)?;
        let beta = a.f("beta", 1.0)?;
        if beta != 1.0 {
            let bc = scalar(imp, beta, h)?;
            c = imp.add(Op::Binary(BinaryOp::Mul), vec![c, bc], h)?;
        }
        y = imp.add(Op::Binary(BinaryOp::Add), vec![y, c], h)?;
    }
    Ok(y)
}
