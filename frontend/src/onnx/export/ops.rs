//! One IR node → ONNX nodes.

use super::{Exporter, A};
use crate::onnx::tensor::{code_of, encode_tensor, OnnxData, OnnxTensor};
use oar_ir::dist::ReduceOp;
use oar_ir::op::{
    BinaryOp, ConvAttrs, CoordMode, Epilogue, GradOp, PoolKind, ReshapeDim, ResizeMode, UnaryOp,
};
use oar_ir::{DType, Dim, NodeId, Op, ValueRef};

pub(super) fn emit(ex: &mut Exporter, id: NodeId) -> Result<(), String> {
    let node = ex.graph().node(id).clone();
    let ins: Vec<String> = node.inputs.iter().map(|&v| ex.name(v)).collect();
    let out = ex.name(ValueRef::new(id, 0));
    let base = node.name.clone();
    let graph = ex.graph();
    let in_types: Vec<_> = node
        .inputs
        .iter()
        .map(|&v| graph.value_type(v).cloned())
        .collect();
    let in_ty = |k: usize| {
        in_types
            .get(k)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("operand {k} is missing"))
    };
    match &node.op {
        Op::Unary(u) => unary(ex, *u, ins[0].clone(), out, &base),
        Op::Binary(b) => {
            let t = match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
                BinaryOp::Max => "Max",
                BinaryOp::Min => "Min",
                BinaryOp::Equal => "Equal",
                BinaryOp::Less => "Less",
                BinaryOp::Greater => "Greater",
            };
            ex.node(t, ins, vec![out], vec![]);
        }
        Op::Where => ex.node("Where", ins, vec![out], vec![]),
        Op::Cast { to } => ex.node("Cast", ins, vec![out], vec![("to", A::I(code_of(*to) as i64))]),
        // ONNX models are inference graphs: dropout is an identity or a fixed scale.
        Op::Dropout { .. } if ex.graph().mode == oar_ir::ExecMode::Training => {
            return Err("dropout in a training graph: ONNX export writes inference graphs".into())
        }
        Op::Dropout { p, mode, .. } => {
            let k = mode.inference_scale(*p);
            if k == 1.0 {
                ex.node("Identity", ins, vec![out], vec![]);
            } else {
                let k = ex.scalar(&base, k);
                ex.node("Mul", vec![ins[0].clone(), k], vec![out], vec![]);
            }
        }
        Op::MatMul(mm) => matmul(ex, mm.transpose_a, mm.transpose_b, &ins, out, &base, in_ty(0)?.rank(), in_ty(1)?.rank()),
        Op::Conv2d(c) => ex.node("Conv", ins, vec![out], conv_attrs(c)),
        Op::ConvTranspose2d(c) => {
            let mut attrs = conv_attrs(&c.conv);
            attrs.push(("output_padding", A::Ints(c.output_padding.iter().map(|&v| v as i64).collect())));
            ex.node("ConvTranspose", ins, vec![out], attrs);
        }
        Op::BatchNorm { momentum: Some(_), .. } => {
            return Err("the training form of batch_norm (batch statistics) has no ONNX inference export".into())
        }
        Op::BatchNorm { eps, momentum: None } => ex.node("BatchNormalization", ins, vec![out], vec![("epsilon", A::F(*eps as f32))]),
        Op::LayerNorm { axis, eps } => ex.node(
            "LayerNormalization",
            ins,
            vec![out],
            vec![("axis", A::I(*axis)), ("epsilon", A::F(*eps as f32))],
        ),
        Op::CausalMask { fill } => causal_mask(ex, &ins[0], out, *fill, &base),
        Op::Softmax { axis } => ex.node("Softmax", ins, vec![out], vec![("axis", A::I(*axis))]),
        Op::LogSoftmax { axis } => ex.node("LogSoftmax", ins, vec![out], vec![("axis", A::I(*axis))]),
        Op::Reduce(r) => {
            let t = match r.op {
                ReduceOp::Sum => "ReduceSum",
                ReduceOp::Mean => "ReduceMean",
                ReduceOp::Max => "ReduceMax",
                ReduceOp::Min => "ReduceMin",
                ReduceOp::Prod => "ReduceProd",
            };
            let mut attrs = vec![("keepdims", A::I(r.keepdims as i64))];
            let mut inputs = ins;
            if !r.axes.is_empty() {
                if r.op == ReduceOp::Sum {
                    inputs.push(ex.ints(&base, r.axes.clone()));
                } else {
                    attrs.push(("axes", A::Ints(r.axes.clone())));
                }
            }
            ex.node(t, inputs, vec![out], attrs);
        }
        Op::Pool(p) => {
            let t = if p.kind == PoolKind::Max { "MaxPool" } else { "AveragePool" };
            let mut attrs = vec![
                ("kernel_shape", A::Ints(p.kernel.iter().map(|&v| v as i64).collect())),
                ("strides", A::Ints(p.stride.iter().map(|&v| v as i64).collect())),
                ("pads", A::Ints(p.padding.iter().map(|&v| v as i64).collect())),
                ("ceil_mode", A::I(p.ceil_mode as i64)),
            ];
            if p.kind == PoolKind::Avg {
                attrs.push(("count_include_pad", A::I(p.count_include_pad as i64)));
            }
            ex.node(t, ins, vec![out], attrs);
        }
        Op::GlobalPool(k) => {
            let t = if *k == PoolKind::Max { "GlobalMaxPool" } else { "GlobalAveragePool" };
            ex.node(t, ins, vec![out], vec![]);
        }
        Op::Resize(r) => {
            let x = in_ty(0)?;
            let sizes = match (r.size[0].as_static(), r.size[1].as_static()) {
                (Some(h), Some(w)) => {
                    let shape = ex.op("Shape", vec![ins[0].clone()], vec![("start", A::I(0)), ("end", A::I(2))], &base);
                    let hw = ex.ints(&base, vec![h as i64, w as i64]);
                    ex.op("Concat", vec![shape, hw], vec![("axis", A::I(0))], &base)
                }
                _ => return Err(format!("resize to symbolic size {:?} of {x}", r.size)),
            };
            let (mode, nearest) = match r.mode {
                ResizeMode::Nearest => ("nearest", if r.coord == CoordMode::Asymmetric { "floor" } else { "round_prefer_floor" }),
                ResizeMode::Bilinear => ("linear", "round_prefer_floor"),
            };
            let coord = match r.coord {
                CoordMode::HalfPixel => "half_pixel",
                CoordMode::AlignCorners => "align_corners",
                CoordMode::Asymmetric => "asymmetric",
                CoordMode::PytorchHalfPixel => "pytorch_half_pixel",
            };
            ex.node(
                "Resize",
                vec![ins[0].clone(), String::new(), String::new(), sizes],
                vec![out],
                vec![("mode", A::S(mode)), ("coordinate_transformation_mode", A::S(coord)), ("nearest_mode", A::S(nearest))],
            );
        }
        Op::Concat { axis } => ex.node("Concat", ins, vec![out], vec![("axis", A::I(*axis))]),
        Op::Split { axis, sizes } => {
            let split = ex.ints(&base, sizes.iter().map(|&s| s as i64).collect());
            let outs = (0..sizes.len()).map(|p| ex.name(ValueRef::new(id, p as u32))).collect();
            ex.node("Split", vec![ins[0].clone(), split], outs, vec![("axis", A::I(*axis))]);
        }
        Op::Slice(s) => {
            let starts = ex.ints(&base, s.starts.clone());
            let ends = ex.ints(&base, s.ends.clone());
            let axes = ex.ints(&base, s.axes.clone());
            let steps = ex.ints(&base, s.steps.clone());
            ex.node("Slice", vec![ins[0].clone(), starts, ends, axes, steps], vec![out], vec![]);
        }
        Op::Reshape { shape } => {
            let target = reshape_target(&in_ty(0)?.shape.0, shape, &node.outputs[0].shape.0)?;
            let t = ex.ints(&base, target);
            ex.node("Reshape", vec![ins[0].clone(), t], vec![out], vec![]);
        }
        Op::Transpose { perm } => ex.node(
            "Transpose",
            ins,
            vec![out],
            vec![("perm", A::Ints(perm.iter().map(|&p| p as i64).collect()))],
        ),
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
            let t = if matches!(node.op, Op::Squeeze { .. }) { "Squeeze" } else { "Unsqueeze" };
            let a = ex.ints(&base, axes.clone());
            ex.node(t, vec![ins[0].clone(), a], vec![out], vec![]);
        }
        Op::Flatten { axis } => ex.node("Flatten", ins, vec![out], vec![("axis", A::I(*axis))]),
        Op::BroadcastTo { shape } => {
            let dims = shape
                .iter()
                .map(|d| d.as_static().map(|s| s as i64))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("broadcast_to a symbolic shape {shape:?}: bind the symbols before export"))?;
            let s = ex.ints(&base, dims);
            ex.node("Expand", vec![ins[0].clone(), s], vec![out], vec![]);
        }
        Op::Gather { axis } => ex.node("Gather", ins, vec![out], vec![("axis", A::I(*axis))]),
        Op::GatherElements { axis } => ex.node("GatherElements", ins, vec![out], vec![("axis", A::I(*axis))]),
        Op::Embedding => ex.node("Gather", ins, vec![out], vec![("axis", A::I(0))]),
        Op::Shape => ex.node("Shape", ins, vec![out], vec![]),
        Op::FusedConv2d { conv, epilogue } => {
            let mut conv_in = ins[..2].to_vec();
            if epilogue.bias {
                conv_in.push(ins[2].clone());
            }
            let y = ex.op("Conv", conv_in, conv_attrs(conv), &base);
            finish_epilogue(ex, y, epilogue, &ins[2 + epilogue.bias as usize..], out, &base, false);
        }
        Op::FusedMatMul { mm, epilogue } => {
            let y = ex.tmp(&base);
            matmul(ex, mm.transpose_a, mm.transpose_b, &ins[..2], y.clone(), &base, in_ty(0)?.rank(), in_ty(1)?.rank());
            finish_epilogue(ex, y, epilogue, &ins[2..], out, &base, true);
        }
        Op::Fused { func } => {
            return Err(format!(
                "fused kernel @{func} has no ONNX form; export the graph before fusion (without --pipeline)"
            ))
        }
        // NonMaxSuppression returns a variable-length index list and no scores: the padded
        // detections have no ONNX operator to map onto.
        Op::Nms(_) => {
            return Err(format!(
                "`{}` has no ONNX export: ONNX NonMaxSuppression returns only a variable-length \
                 index list (export the graph up to the raw head outputs)",
                node.op.name()
            ))
        }
        Op::DeformConv2d(_) => {
            return Err(format!(
                "`deform_conv2d` maps to ONNX DeformConv, which needs opset 19; oar exports opset {}",
                super::EXPORT_OPSET
            ))
        }
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::Send { .. } => return Err(format!("`{}` has no ONNX mapping", node.op.name())),
        // ScatterElements has had reduction=add since opset 16.
        Op::Grad(GradOp::ScatterAdd { axis }) => ex.node(
            "ScatterElements",
            ins,
            vec![out],
            vec![("axis", A::I(*axis)), ("reduction", A::S("add"))],
        ),
        Op::Grad(
            GradOp::Conv2dWeight { .. }
            | GradOp::Pool(_)
            | GradOp::Gather { .. }
            | GradOp::DeformConv2d(_),
        ) => {
            return Err(format!(
                "the gradient op `{}` has no ONNX operator; export the forward graph, not the training step",
                node.op.name()
            ))
        }
    }
    Ok(())
}

fn conv_attrs(c: &ConvAttrs) -> Vec<(&'static str, A)> {
    let ints = |v: &[u64]| A::Ints(v.iter().map(|&x| x as i64).collect());
    vec![
        ("strides", ints(&c.stride)),
        ("pads", ints(&c.padding)),
        ("dilations", ints(&c.dilation)),
        ("group", A::I(c.groups as i64)),
    ]
}

/// `activation(y + bias + residual)`; the conv's bias already went into `Conv`.
fn finish_epilogue(
    ex: &mut Exporter,
    y: String,
    e: &Epilogue,
    extra: &[String],
    out: String,
    base: &str,
    add_bias: bool,
) {
    let mut cur = y;
    let mut rest = extra.iter();
    if e.bias && add_bias {
        if let Some(b) = rest.next() {
            cur = ex.op("Add", vec![cur, b.clone()], vec![], base);
        }
    }
    if e.residual {
        if let Some(r) = rest.next() {
            cur = ex.op("Add", vec![cur, r.clone()], vec![], base);
        }
    }
    match e.activation {
        Some(u) => unary(ex, u, cur, out, base),
        None => ex.node("Identity", vec![cur], vec![out], vec![]),
    }
}

#[allow(clippy::too_many_arguments)]
fn matmul(
    ex: &mut Exporter,
    ta: bool,
    tb: bool,
    ins: &[String],
    out: String,
    base: &str,
    ra: usize,
    rb: usize,
) {
    let swap = |ex: &mut Exporter, x: &str, rank: usize| {
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        perm.swap(rank - 2, rank - 1);
        ex.op(
            "Transpose",
            vec![x.to_string()],
            vec![("perm", A::Ints(perm))],
            base,
        )
    };
    let a = if ta {
        swap(ex, &ins[0], ra)
    } else {
        ins[0].clone()
    };
    let b = if tb {
        swap(ex, &ins[1], rb)
    } else {
        ins[1].clone()
    };
    ex.node("MatMul", vec![a, b], vec![out], vec![]);
}

fn unary(ex: &mut Exporter, u: UnaryOp, x: String, out: String, base: &str) {
    match u {
        UnaryOp::Neg => ex.node("Neg", vec![x], vec![out], vec![]),
        UnaryOp::Exp => ex.node("Exp", vec![x], vec![out], vec![]),
        UnaryOp::Log => ex.node("Log", vec![x], vec![out], vec![]),
        UnaryOp::Sqrt => ex.node("Sqrt", vec![x], vec![out], vec![]),
        UnaryOp::Tanh => ex.node("Tanh", vec![x], vec![out], vec![]),
        UnaryOp::Erf => ex.node("Erf", vec![x], vec![out], vec![]),
        UnaryOp::Abs => ex.node("Abs", vec![x], vec![out], vec![]),
        UnaryOp::Relu => ex.node("Relu", vec![x], vec![out], vec![]),
        UnaryOp::Sigmoid => ex.node("Sigmoid", vec![x], vec![out], vec![]),
        UnaryOp::HardSwish => ex.node("HardSwish", vec![x], vec![out], vec![]),
        UnaryOp::LeakyRelu { alpha } => ex.node(
            "LeakyRelu",
            vec![x],
            vec![out],
            vec![("alpha", A::F(alpha as f32))],
        ),
        UnaryOp::HardSigmoid { alpha, beta } => ex.node(
            "HardSigmoid",
            vec![x],
            vec![out],
            vec![("alpha", A::F(alpha as f32)), ("beta", A::F(beta as f32))],
        ),
        UnaryOp::Relu6 | UnaryOp::Clip { .. } => {
            let (lo, hi) = if let UnaryOp::Clip { min, max } = u {
                (min, max)
            } else {
                (0.0, 6.0)
            };
            let lo = ex.scalar(base, lo);
            let hi = ex.scalar(base, hi);
            ex.node("Clip", vec![x, lo, hi], vec![out], vec![]);
        }
        UnaryOp::Rsqrt => {
            let s = ex.op("Sqrt", vec![x], vec![], base);
            ex.node("Reciprocal", vec![s], vec![out], vec![]);
        }
        UnaryOp::Silu => {
            let s = ex.op("Sigmoid", vec![x.clone()], vec![], base);
            ex.node("Mul", vec![x, s], vec![out], vec![]);
        }
        UnaryOp::Mish => {
            let sp = ex.op("Softplus", vec![x.clone()], vec![], base);
            let t = ex.op("Tanh", vec![sp], vec![], base);
            ex.node("Mul", vec![x, t], vec![out], vec![]);
        }
        UnaryOp::Gelu { tanh } => {
            // 0.5·x·(1 + erf(x/√2))  or  0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            let inner = if tanh {
                let three = ex.scalar(base, 3.0);
                let cube = ex.op("Pow", vec![x.clone(), three], vec![], base);
                let c = ex.scalar(base, 0.044715);
                let scaled = ex.op("Mul", vec![cube, c], vec![], base);
                let sum = ex.op("Add", vec![x.clone(), scaled], vec![], base);
                let k = ex.scalar(base, (2.0 / std::f64::consts::PI).sqrt());
                let arg = ex.op("Mul", vec![sum, k], vec![], base);
                ex.op("Tanh", vec![arg], vec![], base)
            } else {
                let k = ex.scalar(base, std::f64::consts::FRAC_1_SQRT_2);
                let arg = ex.op("Mul", vec![x.clone(), k], vec![], base);
                ex.op("Erf", vec![arg], vec![], base)
            };
            let one = ex.scalar(base, 1.0);
            let p = ex.op("Add", vec![inner, one], vec![], base);
            let half = ex.scalar(base, 0.5);
            let hx = ex.op("Mul", vec![x, half], vec![], base);
            ex.node("Mul", vec![hx, p], vec![out], vec![]);
        }
    }
}

/// Keeps `x[..., i, j]` where `j ≤ i + (n − m)`: Trilu over a ones matrix of the last two
/// dims with `k = n − m`, then Where.
fn causal_mask(ex: &mut Exporter, x: &str, out: String, fill: f64, base: &str) {
    let mn = ex.op(
        "Shape",
        vec![x.to_string()],
        vec![("start", A::I(-2))],
        base,
    );
    let one = OnnxTensor {
        dtype: DType::I64,
        dims: vec![1],
        data: OnnxData::I64(vec![1]),
    };
    let ones = ex.op(
        "ConstantOfShape",
        vec![mn.clone()],
        vec![("value", A::T(Box::new(encode_tensor("", &one))))],
        base,
    );
    let n = ex.op(
        "Shape",
        vec![x.to_string()],
        vec![("start", A::I(-1))],
        base,
    );
    let m = ex.op(
        "Shape",
        vec![x.to_string()],
        vec![("start", A::I(-2)), ("end", A::I(-1))],
        base,
    );
    let k1 = ex.op("Sub", vec![n, m], vec![], base);
    let axes = ex.ints(base, vec![0]);
    let k = ex.op("Squeeze", vec![k1, axes], vec![], base);
    let tri = ex.op("Trilu", vec![ones, k], vec![("upper", A::I(0))], base);
    let mask = ex.op(
        "Cast",
        vec![tri],
        vec![("to", A::I(code_of(DType::Bool) as i64))],
        base,
    );
    let f = ex.scalar(base, fill);
    ex.node("Where", vec![mask, x.to_string(), f], vec![out], vec![]);
}

/// A Reshape target ONNX can hold: static sizes, `0` to copy an input dim at the same
/// position, and one `-1` for the rest.
fn reshape_target(input: &[Dim], shape: &[ReshapeDim], output: &[Dim]) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    let mut inferred = false;
    for (i, d) in output.iter().enumerate() {
        let explicit_infer = matches!(shape.get(i), Some(ReshapeDim::Infer));
        match d.as_static() {
            Some(v) if !explicit_infer && v != 0 => out.push(v as i64),
            _ if input.get(i) == Some(d) && d.as_static() != Some(0) => out.push(0),
            _ if !inferred => {
                inferred = true;
                out.push(-1);
            }
            _ => {
                return Err(format!(
                    "reshape to {output:?} needs two inferred dims; ONNX allows one"
                ))
            }
        }
    }
    Ok(out)
}
