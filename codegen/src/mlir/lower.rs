//! One IR node → TOSA ops. NCHW convolutions and pools are wrapped in transposes (TOSA is
//! NHWC); ops TOSA lacks (softmax, norms, GELU, hard-swish) are written as compositions.

use super::emit::{tensor_ty, Emitter, V};
use super::gather::{gather_axis, gather_elements};
use super::pointwise::{binary, unary};
use super::MlirError;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{ConvAttrs, Epilogue, Literal, PoolKind};
use oar_ir::{DType, Graph, Node, Op, ValueRef};
use std::collections::{BTreeMap, HashMap};

pub(super) fn module(g: &Graph, b: &BTreeMap<String, u64>) -> Result<String, MlirError> {
    let mut e = Emitter::new();
    let mut args = Vec::new();
    let mut vals: HashMap<ValueRef, V> = HashMap::new();
    for (id, node) in g.iter() {
        let shape = node.outputs[0].shape.eval(b, 1);
        let attr = match &node.op {
            Op::Input => Some(format!("oar.input = \"{}\"", node.name)),
            Op::Param(p) => Some(format!("oar.param = \"{}\"", p.name.escape_default())),
            Op::Constant(_)
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
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Grad(_)
            | Op::Send { .. } => None,
        };
        if let Some(attr) = attr {
            let v = V {
                name: format!("%arg{}", args.len()),
                shape,
                dtype: node.outputs[0].dtype,
            };
            args.push(format!("{}: {} {{{attr}}}", v.name, v.ty()));
            vals.insert(id.into(), v);
            continue;
        }
        let ins: Vec<V> = node.inputs.iter().map(|v| vals[v].clone()).collect();
        let outs = lower_node(&mut e, g, node, &ins, b).map_err(|message| MlirError::Lower {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            message,
        })?;
        for (k, v) in outs.into_iter().enumerate() {
            vals.insert(ValueRef::new(id, k as u32), v);
        }
    }
    let rets: Vec<&V> = g.outputs().iter().map(|o| &vals[o]).collect();
    let names: Vec<&str> = rets.iter().map(|v| v.name.as_str()).collect();
    let types: Vec<String> = rets.iter().map(|v| v.ty()).collect();
    Ok(format!(
        "module {{\n  func.func @\"{}\"({}) -> ({}) {{\n{}    return {} : {}\n  }}\n}}\n",
        g.name.escape_default(),
        args.join(", "),
        types.join(", "),
        e.body,
        names.join(", "),
        types.join(", ")
    ))
}

/// Lowers a function body (fused kernels) inline.
fn lower_function(
    e: &mut Emitter,
    f: &Graph,
    ins: &[V],
    b: &BTreeMap<String, u64>,
) -> Result<Vec<V>, String> {
    let mut vals: HashMap<ValueRef, V> = HashMap::new();
    for (k, &i) in f.inputs().iter().enumerate() {
        vals.insert(i.into(), ins.get(k).cloned().ok_or("fused kernel arity")?);
    }
    for (id, node) in f.iter() {
        if matches!(node.op, Op::Input) {
            continue;
        }
        let args: Vec<V> = node.inputs.iter().map(|v| vals[v].clone()).collect();
        for (k, v) in lower_node(e, f, node, &args, b)?.into_iter().enumerate() {
            vals.insert(ValueRef::new(id, k as u32), v);
        }
    }
    Ok(f.outputs().iter().map(|o| vals[o].clone()).collect())
}

fn lower_node(
    e: &mut Emitter,
    g: &Graph,
    node: &Node,
    ins: &[V],
    b: &BTreeMap<String, u64>,
) -> Result<Vec<V>, String> {
    let out_shape = |k: usize| node.outputs[k].shape.eval(b, 1);
    let out_dtype = node.outputs[0].dtype;
    let one = |v: V| Ok(vec![v]);
    match &node.op {
        Op::Constant(lit) => {
            let vals: Vec<f64> = match lit {
                Literal::Floats(v) => v.clone(),
                Literal::Ints(v) => v.iter().map(|&x| x as f64).collect(),
            };
            if out_shape(0).is_empty() {
                return one(e.splat(vals[0], vec![], out_dtype));
            }
            one(e.dense(&vals, out_shape(0), out_dtype))
        }
        Op::Unary(u) => one(unary(e, *u, &ins[0])?),
        Op::Binary(op) => one(binary(e, *op, &ins[0], &ins[1])?),
        Op::Where => one(e.select(&ins[0], &ins[1], &ins[2])),
        Op::Cast { to } => one(e.cast(&ins[0], *to)),
        Op::Dropout { .. } if g.mode == oar_ir::ExecMode::Training => Err(
            "dropout in a training graph draws a random mask; MLIR export lowers inference graphs"
                .into(),
        ),
        // Inference forms: identity or a 1 - p scale.
        Op::Dropout { p, mode, .. } => {
            let k = mode.inference_scale(*p);
            if k == 1.0 {
                one(ins[0].clone())
            } else {
                let s = e.scalar(k, ins[0].shape.len(), ins[0].dtype);
                one(e.binary("mul", &ins[0], &s, None)?)
            }
        }
        Op::MatMul(mm) => one(matmul(
            e,
            &ins[0],
            &ins[1],
            mm.transpose_a,
            mm.transpose_b,
            out_shape(0),
        )?),
        Op::FusedMatMul { mm, epilogue } => {
            let y = matmul(
                e,
                &ins[0],
                &ins[1],
                mm.transpose_a,
                mm.transpose_b,
                out_shape(0),
            )?;
            one(apply_epilogue(e, y, epilogue, &ins[2..], false)?)
        }
        Op::Conv2d(c) => one(conv(e, &ins[0], &ins[1], ins.get(2), c, out_shape(0))?),
        Op::FusedConv2d { conv: c, epilogue } => {
            let bias = if epilogue.bias { ins.get(2) } else { None };
            let y = conv(e, &ins[0], &ins[1], bias, c, out_shape(0))?;
            one(apply_epilogue(
                e,
                y,
                epilogue,
                &ins[2 + epilogue.bias as usize..],
                true,
            )?)
        }
        Op::BatchNorm {
            momentum: Some(_), ..
        } => Err("the training form of batch_norm (batch statistics) is not lowered".into()),
        Op::BatchNorm {
            eps,
            momentum: None,
        } => {
            let x = &ins[0];
            let r = x.shape.len();
            let mut cshape = vec![1; r];
            cshape[1] = x.shape[1];
            let [scale, bias, mean, var] = [1, 2, 3, 4].map(|k| e.reshape(&ins[k], cshape.clone()));
            let eps = e.scalar(*eps, r, x.dtype);
            let ve = e.binary("add", &var, &eps, None)?;
            let inv = e.unary("rsqrt", &ve);
            let k = e.binary("mul", &scale, &inv, None)?;
            let d = e.binary("sub", x, &mean, None)?;
            let y = e.binary("mul", &d, &k, None)?;
            one(e.binary("add", &y, &bias, None)?)
        }
        Op::LayerNorm { axis, eps } => {
            let x = &ins[0];
            let r = x.shape.len();
            let first = oar_ir::op::norm_axis(*axis, r).map_err(|e| e.0)?;
            let axes: Vec<usize> = (first..r).collect();
            let mean = mean_over(e, x, &axes)?;
            let d = e.binary("sub", x, &mean, None)?;
            let sq = e.binary("mul", &d, &d, None)?;
            let var = mean_over(e, &sq, &axes)?;
            let eps = e.scalar(*eps, r, x.dtype);
            let ve = e.binary("add", &var, &eps, None)?;
            let inv = e.unary("rsqrt", &ve);
            let n = e.binary("mul", &d, &inv, None)?;
            let s = e.binary("mul", &n, &ins[1], None)?;
            one(e.binary("add", &s, &ins[2], None)?)
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let x = &ins[0];
            let ax = oar_ir::op::norm_axis(*axis, x.shape.len()).map_err(|e| e.0)?;
            let m = e.reduce("reduce_max", x, ax);
            let d = e.binary("sub", x, &m, None)?;
            let ex = e.unary("exp", &d);
            let s = e.reduce("reduce_sum", &ex, ax);
            if matches!(node.op, Op::LogSoftmax { .. }) {
                let l = e.unary("log", &s);
                return one(e.binary("sub", &d, &l, None)?);
            }
            let inv = e.unary("reciprocal", &s);
            one(e.binary("mul", &ex, &inv, None)?)
        }
        Op::Reduce(r) => {
            let x = &ins[0];
            let rank = x.shape.len();
            let mut axes: Vec<usize> = r
                .axes
                .iter()
                .map(|&a| oar_ir::op::norm_axis(a, rank).map_err(|e| e.0))
                .collect::<Result<_, _>>()?;
            if axes.is_empty() {
                axes = (0..rank).collect();
            }
            let y = match r.op {
                ReduceOp::Mean => mean_over(e, x, &axes)?,
                op => {
                    let name = match op {
                        ReduceOp::Sum => "reduce_sum",
                        ReduceOp::Max => "reduce_max",
                        ReduceOp::Min => "reduce_min",
                        _ => "reduce_product",
                    };
                    let mut y = x.clone();
                    for &a in &axes {
                        y = e.reduce(name, &y, a);
                    }
                    y
                }
            };
            one(e.reshape(&y, out_shape(0)))
        }
        Op::GlobalPool(kind) => {
            let x = &ins[0];
            let axes: Vec<usize> = (2..x.shape.len()).collect();
            if *kind == PoolKind::Avg {
                return one(mean_over(e, x, &axes)?);
            }
            let mut y = x.clone();
            for &a in &axes {
                y = e.reduce("reduce_max", &y, a);
            }
            one(y)
        }
        Op::Pool(p) => {
            if p.kind == PoolKind::Avg && p.count_include_pad && p.padding.iter().any(|&v| v > 0) {
                return Err("average pooling that counts padding has no TOSA form".into());
            }
            let out = out_shape(0);
            let (x, pads) = fit_window(e, &ins[0], p.kernel, p.stride, [1, 1], p.padding, &out)?;
            let nhwc = e.transpose(&x, &[0, 2, 3, 1]);
            let oshape = vec![out[0], out[2], out[3], out[1]];
            let t = tensor_ty(&oshape, x.dtype);
            let attrs = format!(
                "kernel = array<i64: {}, {}>, stride = array<i64: {}, {}>, pad = array<i64: {}, {}, {}, {}>",
                p.kernel[0], p.kernel[1], p.stride[0], p.stride[1], pads[0], pads[1], pads[2], pads[3]
            );
            let y = if p.kind == PoolKind::Max {
                e.op(
                    &format!("tosa.max_pool2d {} {{{attrs}}}", nhwc.name),
                    &format!("({}) -> {t}", nhwc.ty()),
                    oshape,
                    x.dtype,
                )
            } else {
                let zp = e.zero_point(x.dtype);
                e.op(
                    &format!(
                        "tosa.avg_pool2d {}, {}, {} {{{attrs}, acc_type = f32}}",
                        nhwc.name, zp.name, zp.name
                    ),
                    &format!("({}, {}, {}) -> {t}", nhwc.ty(), zp.ty(), zp.ty()),
                    oshape,
                    x.dtype,
                )
            };
            one(e.transpose(&y, &[0, 3, 1, 2]))
        }
        Op::Concat { .. } => {
            let out = out_shape(0);
            let axis = concat_axis(&ins[0].shape, &out);
            let names: Vec<&str> = ins.iter().map(|v| v.name.as_str()).collect();
            let tys: Vec<String> = ins.iter().map(V::ty).collect();
            let t = tensor_ty(&out, out_dtype);
            one(e.op(
                &format!("tosa.concat {} {{axis = {axis} : i32}}", names.join(", ")),
                &format!("({}) -> {t}", tys.join(", ")),
                out,
                out_dtype,
            ))
        }
        Op::Split { axis, sizes } => {
            let x = &ins[0];
            let ax = oar_ir::op::norm_axis(*axis, x.shape.len()).map_err(|e| e.0)?;
            let mut start = vec![0u64; x.shape.len()];
            let mut outs = Vec::new();
            for &s in sizes {
                let mut size = x.shape.clone();
                size[ax] = s;
                outs.push(slice(e, x, &start, &size));
                start[ax] += s;
            }
            Ok(outs)
        }
        Op::Slice(s) => {
            let x = &ins[0];
            if s.steps.iter().any(|&st| st != 1) {
                return Err("slices with steps other than 1 have no TOSA form".into());
            }
            let mut start = vec![0u64; x.shape.len()];
            for (&a, &st) in s.axes.iter().zip(&s.starts) {
                let ax = oar_ir::op::norm_axis(a, x.shape.len()).map_err(|e| e.0)?;
                let n = x.shape[ax] as i64;
                start[ax] = (if st < 0 { st + n } else { st }).clamp(0, n) as u64;
            }
            one(slice(e, x, &start, &out_shape(0)))
        }
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            one(e.reshape(&ins[0], out_shape(0)))
        }
        Op::Transpose { perm } => one(e.transpose(&ins[0], perm)),
        Op::BroadcastTo { .. } => one(e.broadcast_to(&ins[0], &out_shape(0))),
        Op::Embedding => one(gather_rows(e, &ins[0], &ins[1], out_shape(0))?),
        Op::Gather { axis }
            if ins[0].shape.len() == 2 && oar_ir::op::norm_axis(*axis, 2) == Ok(0) =>
        {
            one(gather_rows(e, &ins[0], &ins[1], out_shape(0))?)
        }
        Op::GatherElements { axis } => {
            let ax = oar_ir::op::norm_axis(*axis, ins[0].shape.len()).map_err(|e| e.0)?;
            one(gather_elements(e, &ins[0], &ins[1], ax))
        }
        Op::Gather { axis } => {
            let ax = oar_ir::op::norm_axis(*axis, ins[0].shape.len()).map_err(|e| e.0)?;
            one(gather_axis(e, &ins[0], &ins[1], ax, out_shape(0)))
        }
        Op::CausalMask { fill } => {
            let x = &ins[0];
            let r = x.shape.len();
            let (m, n) = (x.shape[r - 2], x.shape[r - 1]);
            let mask: Vec<f64> = (0..m)
                .flat_map(|i| (0..n).map(move |j| (j + m <= i + n) as u8 as f64))
                .collect();
            let mk = e.dense(&mask, vec![m, n], DType::Bool);
            let f = e.scalar(*fill, r, x.dtype);
            one(e.select(&mk, x, &f))
        }
        Op::Shape => {
            let dims: Vec<f64> = ins[0].shape.iter().map(|&d| d as f64).collect();
            one(e.dense(&dims, vec![dims.len() as u64], DType::I64))
        }
        Op::Fused { func } => {
            let f = g
                .functions
                .get(func)
                .ok_or_else(|| format!("unknown function @{func}"))?;
            lower_function(e, f, ins, b)
        }
        Op::Input
        | Op::Param(_)
        | Op::Recv { .. }
        | Op::ConvTranspose2d(_)
        | Op::Resize(_)
        | Op::Nms(_)
        | Op::DeformConv2d(_)
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::Grad(_)
        | Op::Send { .. } => Err(format!("`{}` has no TOSA lowering", node.op.name())),
    }
}

/// Mean over `axes`, keeping them as size 1.
fn mean_over(e: &mut Emitter, x: &V, axes: &[usize]) -> Result<V, String> {
    let mut y = x.clone();
    let mut count = 1u64;
    for &a in axes {
        count *= x.shape[a];
        y = e.reduce("reduce_sum", &y, a);
    }
    let inv = e.scalar(1.0 / count.max(1) as f64, x.shape.len(), x.dtype);
    e.binary("mul", &y, &inv, None)
}

fn slice(e: &mut Emitter, x: &V, start: &[u64], size: &[u64]) -> V {
    let n = x.shape.len();
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let shape_const = |e: &mut Emitter, v: &[u64]| {
        e.op(
            &format!(
                "tosa.const_shape {{values = dense<[{}]> : tensor<{n}xindex>}}",
                list(v)
            ),
            &format!("() -> !tosa.shape<{n}>"),
            vec![],
            DType::I64,
        )
    };
    let st = shape_const(e, start);
    let sz = shape_const(e, size);
    let t = tensor_ty(size, x.dtype);
    e.op(
        &format!("tosa.slice {}, {}, {}", x.name, st.name, sz.name),
        &format!("({}, !tosa.shape<{n}>, !tosa.shape<{n}>) -> {t}", x.ty()),
        size.to_vec(),
        x.dtype,
    )
}

fn concat_axis(first: &[u64], out: &[u64]) -> usize {
    first.iter().zip(out).position(|(a, b)| a != b).unwrap_or(0)
}

/// Row gather (embedding): table [V, D], ids [...] → [..., D] via tosa.gather on [1, V, D].
fn gather_rows(e: &mut Emitter, table: &V, ids: &V, out: Vec<u64>) -> Result<V, String> {
    let (v, d) = (table.shape[0], table.shape[1]);
    let w: u64 = ids.shape.iter().product();
    let t3 = e.reshape(table, vec![1, v, d]);
    let i32s = e.cast(ids, DType::I32);
    let idx = e.reshape(&i32s, vec![1, w]);
    let ty = tensor_ty(&[1, w, d], table.dtype);
    let g = e.op(
        &format!("tosa.gather {}, {}", t3.name, idx.name),
        &format!("({}, {}) -> {ty}", t3.ty(), idx.ty()),
        vec![1, w, d],
        table.dtype,
    );
    Ok(e.reshape(&g, out))
}

/// Batched matmul as TOSA's [B, M, K] × [B, K, N].
fn matmul(e: &mut Emitter, a: &V, b: &V, ta: bool, tb: bool, out: Vec<u64>) -> Result<V, String> {
    let swap_last = |e: &mut Emitter, x: &V| {
        let r = x.shape.len();
        let mut p: Vec<usize> = (0..r).collect();
        p.swap(r - 2, r - 1);
        e.transpose(x, &p)
    };
    let a = if ta { swap_last(e, a) } else { a.clone() };
    let b = if tb { swap_last(e, b) } else { b.clone() };
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (k, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    let m = a.shape[ra - 2];
    let batch_a: u64 = a.shape[..ra - 2].iter().product();
    let batch_b: u64 = b.shape[..rb - 2].iter().product();
    let (a3, b3, bsz, rows) = if batch_b == 1 {
        // Weights shared by every batch: fold the batch into the rows.
        (
            e.reshape(&a, vec![1, batch_a * m, k]),
            e.reshape(&b, vec![1, k, n]),
            1,
            batch_a * m,
        )
    } else if batch_a == batch_b {
        (
            e.reshape(&a, vec![batch_a, m, k]),
            e.reshape(&b, vec![batch_b, k, n]),
            batch_a,
            m,
        )
    } else {
        return Err(format!(
            "matmul batch broadcast {:?} × {:?}",
            a.shape, b.shape
        ));
    };
    let zp = e.zero_point(a.dtype);
    let t = tensor_ty(&[bsz, rows, n], a.dtype);
    let y = e.op(
        &format!(
            "tosa.matmul {}, {}, {}, {}",
            a3.name, b3.name, zp.name, zp.name
        ),
        &format!(
            "({}, {}, {}, {}) -> {t}",
            a3.ty(),
            b3.ty(),
            zp.ty(),
            zp.ty()
        ),
        vec![bsz, rows, n],
        a.dtype,
    );
    Ok(e.reshape(&y, out))
}

/// TOSA needs `(in − 1 + pads − (k − 1)·d)` divisible by the stride. The trailing padding
/// is set to exactly what the IR's output size needs; input rows no output reads are
/// sliced off. Returns the input and TOSA's [top, bottom, left, right].
fn fit_window(
    e: &mut Emitter,
    x: &V,
    kernel: [u64; 2],
    stride: [u64; 2],
    dil: [u64; 2],
    pad: [u64; 4],
    out: &[u64],
) -> Result<(V, [u64; 4]), String> {
    let mut x = x.clone();
    let mut tosa = [pad[0], 0, pad[1], 0];
    for i in 0..2 {
        let (n, o) = (x.shape[2 + i] as i64, out[2 + i] as i64);
        let span = (o - 1) * stride[i] as i64 + (kernel[i] as i64 - 1) * dil[i] as i64 + 1;
        let end = span - n - pad[i] as i64;
        if end >= 0 {
            tosa[2 * i + 1] = end as u64;
        } else {
            let mut size = x.shape.clone();
            size[2 + i] = (n + end) as u64;
            x = slice(e, &x, &vec![0; x.shape.len()], &size);
        }
    }
    Ok((x, tosa))
}

fn conv(
    e: &mut Emitter,
    x: &V,
    w: &V,
    bias: Option<&V>,
    c: &ConvAttrs,
    out: Vec<u64>,
) -> Result<V, String> {
    let (cin, cout) = (x.shape[1], w.shape[0]);
    let (kh, kw) = (w.shape[2], w.shape[3]);
    let (x, pads) = fit_window(e, x, [kh, kw], c.stride, c.dilation, c.padding, &out)?;
    let nhwc = e.transpose(&x, &[0, 2, 3, 1]);
    let bias = match bias {
        Some(b) => e.reshape(b, vec![cout]),
        None => e.splat(0.0, vec![cout], x.dtype),
    };
    let depthwise = c.groups > 1 && c.groups == cin && w.shape[1] == 1;
    let (op, wt) = if c.groups == 1 {
        ("conv2d", e.transpose(w, &[0, 2, 3, 1]))
    } else if depthwise {
        let mult = cout / cin;
        let w4 = e.reshape(w, vec![cin, mult, kh, kw]);
        ("depthwise_conv2d", e.transpose(&w4, &[2, 3, 0, 1]))
    } else {
        return Err(format!(
            "grouped convolution ({} groups of {cin} channels) has no TOSA form",
            c.groups
        ));
    };
    let oshape = vec![out[0], out[2], out[3], out[1]];
    let zp = e.zero_point(x.dtype);
    let t = tensor_ty(&oshape, x.dtype);
    let y = e.op(
        &format!(
            "tosa.{op} {}, {}, {}, {}, {} {{acc_type = f32, pad = array<i64: {}, {}, {}, {}>, stride = array<i64: {}, {}>, dilation = array<i64: {}, {}>}}",
            nhwc.name, wt.name, bias.name, zp.name, zp.name,
            pads[0], pads[1], pads[2], pads[3], c.stride[0], c.stride[1], c.dilation[0], c.dilation[1]
        ),
        &format!("({}, {}, {}, {}, {}) -> {t}", nhwc.ty(), wt.ty(), bias.ty(), zp.ty(), zp.ty()),
        oshape,
        x.dtype,
    );
    Ok(e.transpose(&y, &[0, 3, 1, 2]))
}

/// `activation(y + bias + residual)`; a conv's bias is already in the conv.
fn apply_epilogue(
    e: &mut Emitter,
    y: V,
    ep: &Epilogue,
    extra: &[V],
    bias_done: bool,
) -> Result<V, String> {
    let mut cur = y;
    let mut rest = extra.iter();
    if ep.bias && !bias_done {
        if let Some(b) = rest.next() {
            cur = e.binary("add", &cur, b, None)?;
        }
    }
    if ep.residual {
        if let Some(r) = rest.next() {
            cur = e.binary("add", &cur, r, None)?;
        }
    }
    match ep.activation {
        Some(u) => unary(e, u, &cur),
        None => Ok(cur),
    }
}
