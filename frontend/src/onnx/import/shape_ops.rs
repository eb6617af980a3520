//! Shape ops. Each folds when its operands are known (shape sub-graphs), otherwise becomes
//! the IR op with constant attributes.

use super::known::{reshape_target, Elems, Known, SInt};
use super::{Importer, NodeCx, Val};
use crate::onnx::tensor::decode_tensor;
use oar_ir::op::{norm_axis, Literal, SliceAttrs};
use oar_ir::{DType, Dim, Op, TensorType, ValueRef};

const OPS: &[&str] = &[
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Expand",
    "Flatten",
    "Gather",
    "Reshape",
    "Shape",
    "Slice",
    "Split",
    "Squeeze",
    "Transpose",
    "Trilu",
    "Unsqueeze",
];

pub(super) fn handles(op: &str) -> bool {
    OPS.contains(&op)
}

pub(super) fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let a = &cx.attrs;
    match cx.op_type {
        "Constant" => {
            let out = cx.hint().to_string();
            let k = if let Some(t) = a.tensor("value")? {
                return Ok(vec![imp.tensor_val(
                    &out,
                    decode_tensor(t, cx.base).map_err(|e| e.to_string())?,
                )?]);
            } else if a.has("value_float") {
                scalar_known(DType::F32, Elems::F(vec![a.f("value_float", 0.0)?]))
            } else if a.has("value_int") {
                scalar_known(DType::I64, Elems::I(vec![SInt::N(a.i("value_int", 0)?)]))
            } else if let Some(v) = a.floats("value_floats")? {
                Known {
                    dtype: DType::F32,
                    dims: vec![v.len() as u64],
                    elems: Elems::F(v.iter().map(|&x| x as f64).collect()),
                }
            } else if let Some(v) = a.ints("value_ints")? {
                Known::ints_1d(v.into_iter().map(SInt::N).collect())
            } else {
                return Err(
                    "no supported value attribute (value, value_float(s), value_int(s))".into(),
                );
            };
            Ok(vec![Val::known(k)])
        }
        "Shape" => {
            let t = imp.ty(cx.need(0)?)?;
            let rank = t.rank() as i64;
            let clampi = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clampi(a.i("start", 0)?);
            let end = clampi(a.i("end", rank)?);
            let dims = &t.shape.0[start..end.max(start)];
            Ok(vec![Val::known(Known::sizes(dims))])
        }
        "Concat" => {
            let names: Vec<&str> = (0..cx.inputs.len()).filter_map(|k| cx.input(k)).collect();
            let axis = a.i("axis", 0)?;
            let all_known: Option<Vec<&Known>> = names.iter().map(|n| imp.known(n)).collect();
            if let Some(ks) = all_known.filter(|ks| ks.iter().all(|k| k.dims.len() == 1)) {
                if let Some(k) = concat_known(&ks) {
                    return Ok(vec![Val::known(k)]);
                }
            }
            let dt = names
                .iter()
                .find(|n| imp.known(n).is_none())
                .map(|n| imp.ty(n))
                .unwrap_or_else(|| imp.ty(names[0]))?
                .dtype;
            let mut vals = Vec::new();
            for n in &names {
                // Empty tensors contribute nothing (exporters emit them for optional parts).
                if imp.ty(n)?.shape.numel().as_static() == Some(0) && names.len() > 1 {
                    continue;
                }
                vals.push(imp.ir_as(n, dt)?);
            }
            ir(imp.add(Op::Concat { axis }, vals, cx.hint())?)
        }
        "Reshape" => {
            let x = cx.need(0)?;
            let target = imp
                .known(cx.need(1)?)
                .and_then(|k| k.sints().map(<[SInt]>::to_vec))
                .ok_or("the target shape must be computable while importing (a constant or a shape expression)")?;
            let in_dims = imp.ty(x)?.shape.0;
            let shape = reshape_target(&target, &in_dims, a.i("allowzero", 0)? != 0)?;
            if let Some(k) = imp.known(x).cloned() {
                if let Some(dims) = static_reshape(&shape, k.len()) {
                    return Ok(vec![Val::known(Known { dims, ..k })]);
                }
            }
            let xv = imp.ir(x)?;
            ir(imp.add(Op::Reshape { shape }, vec![xv], cx.hint())?)
        }
        "Flatten" => {
            let x = cx.need(0)?;
            let rank = imp.ty(x)?.rank();
            let mut axis = a.i("axis", 1)?;
            if axis < 0 {
                axis += rank as i64;
            }
            let xv = imp.ir(x)?;
            ir(imp.add(Op::Flatten { axis }, vec![xv], cx.hint())?)
        }
        "Transpose" => {
            let x = cx.need(0)?;
            let rank = imp.ty(x)?.rank();
            let perm = match a.ints("perm")? {
                Some(p) => p
                    .iter()
                    .map(|&i| norm_axis(i, rank).map_err(|e| e.0))
                    .collect::<Result<Vec<_>, _>>()?,
                None => (0..rank).rev().collect(),
            };
            let xv = imp.ir(x)?;
            ir(imp.add(Op::Transpose { perm }, vec![xv], cx.hint())?)
        }
        "Squeeze" | "Unsqueeze" => {
            let x = cx.need(0)?;
            let axes = if imp.opset >= 13 {
                cx.input(1).map(|n| imp.ints(n)).transpose()?
            } else {
                a.ints("axes")?
            };
            let t = imp.ty(x)?;
            let squeeze = cx.op_type == "Squeeze";
            let axes = match axes {
                Some(v) => v,
                None if squeeze => t
                    .shape
                    .0
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.as_static() == Some(1))
                    .map(|(i, _)| i as i64)
                    .collect(),
                None => return Err("Unsqueeze needs axes".into()),
            };
            let op = if squeeze {
                Op::Squeeze { axes }
            } else {
                Op::Unsqueeze { axes }
            };
            if let Some(k) = imp.known(x).cloned() {
                let ty = oar_ir::op::infer_types(&op, &[t], &[], &Default::default())
                    .map_err(|e| e.0)?;
                if let Some(dims) = ty[0].shape.as_static() {
                    return Ok(vec![Val::known(Known { dims, ..k })]);
                }
            }
            let xv = imp.ir(x)?;
            ir(imp.add(op, vec![xv], cx.hint())?)
        }
        "Slice" => slice(imp, cx),
        "Gather" => gather(imp, cx),
        "Split" => split(imp, cx),
        "Expand" => {
            let x = cx.need(0)?;
            let shape = imp.ints(cx.need(1)?)?;
            let xt = imp.ty(x)?.clone();
            // ONNX broadcasts both ways: a 1 in `shape` keeps the input's dim.
            let rank = shape.len().max(xt.rank());
            let dims: Vec<Dim> = (0..rank)
                .map(|i| {
                    let s = (i + shape.len())
                        .checked_sub(rank)
                        .map(|j| shape[j].max(0) as u64);
                    let d = (i + xt.rank())
                        .checked_sub(rank)
                        .map(|j| xt.shape.0[j].clone());
                    match (s, d) {
                        (Some(1), Some(d)) | (None, Some(d)) => d,
                        (Some(s), _) => Dim::Static(s),
                        (None, None) => Dim::Static(1),
                    }
                })
                .collect();
            checked_numel(&dims.iter().filter_map(Dim::as_static).collect::<Vec<_>>())?;
            let xv = imp.ir(x)?;
            ir(imp.add(Op::BroadcastTo { shape: dims }, vec![xv], cx.hint())?)
        }
        "Trilu" => {
            let k = cx
                .input(1)
                .map(|n| imp.ints(n))
                .transpose()?
                .and_then(|v| v.first().copied())
                .unwrap_or(0);
            let upper = a.i("upper", 1)? != 0;
            let keep = |i: i64, j: i64| if upper { j - i >= k } else { j - i <= k };
            let Some(x) = imp.known(cx.need(0)?).cloned() else {
                // Where(mask, x, 0) with a constant mask of the last two (static) dims.
                let t = imp.ty(cx.need(0)?)?;
                let r = t.rank();
                let (Some(m), Some(n)) = (
                    t.shape.0.get(r.wrapping_sub(2)).and_then(Dim::as_static),
                    t.shape.0.get(r.wrapping_sub(1)).and_then(Dim::as_static),
                ) else {
                    return Err(format!("needs static last two dims, input is {t}"));
                };
                checked_numel(&[m, n])?;
                let mask: Vec<i64> = (0..m as i64)
                    .flat_map(|i| (0..n as i64).map(move |j| (i, j)))
                    .map(|(i, j)| keep(i, j) as i64)
                    .collect();
                let h = cx.hint();
                let mty = TensorType::new(DType::Bool, vec![Dim::Static(m), Dim::Static(n)]);
                let mv = imp.constant(mty, Literal::Ints(mask), h)?;
                let zero = if t.dtype.is_float() {
                    Literal::Floats(vec![0.0])
                } else {
                    Literal::Ints(vec![0])
                };
                let zv = imp.constant(TensorType::new(t.dtype, vec![]), zero, h)?;
                let xv = imp.ir(cx.need(0)?)?;
                return ir(imp.add(Op::Where, vec![mv, xv, zv], h)?);
            };
            let r = x.dims.len();
            if r < 2 {
                return Err("needs rank ≥ 2".into());
            }
            let (m, n) = (x.dims[r - 2] as i64, x.dims[r - 1] as i64);
            let mut out = x.clone();
            let zero = |e: &mut Elems, idx: usize| match e {
                Elems::F(v) => v[idx] = 0.0,
                Elems::I(v) => v[idx] = SInt::N(0),
            };
            for idx in 0..x.len() {
                let (i, j) = ((idx as i64 / n) % m, idx as i64 % n);
                if !keep(i, j) {
                    zero(&mut out.elems, idx);
                }
            }
            Ok(vec![Val::known(out)])
        }
        "ConstantOfShape" => {
            let dims: Vec<u64> = imp
                .ints(cx.need(0)?)?
                .iter()
                .map(|&d| d.max(0) as u64)
                .collect();
            let n = checked_numel(&dims)?;
            let value = match a.tensor("value")? {
                Some(t) => decode_tensor(t, cx.base).map_err(|e| e.to_string())?,
                None => crate::onnx::OnnxTensor {
                    dtype: DType::F32,
                    dims: vec![1],
                    data: crate::onnx::OnnxData::F32(vec![0.0]),
                },
            };
            let dtype = super::compute_dtype(value.dtype);
            let v = Known::from_tensor(&value, dtype);
            let idx = vec![0usize; n as usize];
            Ok(vec![Val::known(v.pick(dims, &idx))])
        }
        other => Err(format!("internal: {other} routed to shape ops")),
    }
}

/// Constants the importer materializes are capped, so a corrupted shape cannot exhaust
/// memory.
const MAX_CONSTANT_ELEMENTS: u64 = 1 << 24;

fn checked_numel(dims: &[u64]) -> Result<u64, String> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_CONSTANT_ELEMENTS)
        .ok_or_else(|| {
            format!("a constant of shape {dims:?} is too large to build while importing")
        })
}

fn ir(v: ValueRef) -> Result<Vec<Val>, String> {
    Ok(vec![Val::ir(v)])
}

fn scalar_known(dtype: DType, elems: Elems) -> Known {
    Known {
        dtype,
        dims: vec![],
        elems,
    }
}

fn concat_known(ks: &[&Known]) -> Option<Known> {
    let dtype = ks.first()?.dtype;
    let mut out = Vec::new();
    for k in ks {
        out.extend(k.cast(dtype).sints()?.iter().cloned());
    }
    Some(Known {
        dtype,
        ..Known::ints_1d(out)
    })
}

/// Static dims of a reshape of `numel` elements, when every target dim is static.
fn static_reshape(shape: &[oar_ir::op::ReshapeDim], numel: usize) -> Option<Vec<u64>> {
    use oar_ir::op::ReshapeDim;
    let mut dims = Vec::new();
    let mut infer = None;
    for (i, d) in shape.iter().enumerate() {
        match d {
            ReshapeDim::Infer => {
                infer = Some(i);
                dims.push(1);
            }
            ReshapeDim::Dim(d) => dims.push(d.as_static()?),
        }
    }
    let known: u64 = dims.iter().product();
    if let Some(i) = infer {
        if known == 0 || !(numel as u64).is_multiple_of(known) {
            return None;
        }
        dims[i] = numel as u64 / known;
    }
    (dims.iter().product::<u64>() == numel as u64).then_some(dims)
}

fn slice(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let a = &cx.attrs;
    let x = cx.need(0)?;
    let (starts, ends, axes, steps) = if imp.opset < 10 {
        (
            a.ints("starts")?.ok_or("needs starts")?,
            a.ints("ends")?.ok_or("needs ends")?,
            a.ints("axes")?,
            None,
        )
    } else {
        let opt = |k: usize| cx.input(k).map(|n| imp.ints(n)).transpose();
        (
            imp.ints(cx.need(1)?)?,
            imp.ints(cx.need(2)?)?,
            opt(3)?,
            opt(4)?,
        )
    };
    let rank = imp.ty(x)?.rank();
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if axes.len() != starts.len() || ends.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    if steps.contains(&0) {
        return Err("a step is 0".into());
    }
    // A 1-d known tensor (a shape) slices while importing.
    if let Some(k) = imp
        .known(x)
        .filter(|k| k.dims.len() == 1 && rank == 1)
        .cloned()
    {
        let n = k.dims[0] as i64;
        let (s, e, st) = (starts[0], ends[0], steps[0]);
        let idx = slice_indices(n, s, e, st);
        return Ok(vec![Val::known(k.pick(vec![idx.len() as u64], &idx))]);
    }
    let xv = imp.ir(x)?;
    let attrs = SliceAttrs {
        axes,
        starts,
        ends,
        steps,
    };
    ir(imp.add(Op::Slice(attrs), vec![xv], cx.hint())?)
}

/// The indices ONNX Slice picks from a dim of length `n`.
fn slice_indices(n: i64, start: i64, end: i64, step: i64) -> Vec<usize> {
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (s, e) = (norm(start), norm(end));
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, e) = (s.clamp(0, n), e.clamp(0, n));
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (mut i, e) = (s.clamp(-1, n - 1), e.clamp(-1, n - 1));
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

fn gather(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let x = cx.need(0)?;
    let idx = cx.need(1)?;
    let axis = cx.attrs.i("axis", 0)?;
    let t = imp.ty(x)?;
    let ax = norm_axis(axis, t.rank()).map_err(|e| e.0)?;
    let dim = t.shape.0[ax].as_static();
    if let (Some(k), Some(ik)) = (imp.known(x).cloned(), imp.known(idx).cloned()) {
        if k.dims.len() == 1 {
            let n = k.dims[0] as i64;
            let ids = ik.static_ints().ok_or("symbolic gather indices")?;
            let picked: Vec<usize> = ids
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n } else { i };
                    (0..n)
                        .contains(&j)
                        .then_some(j as usize)
                        .ok_or(format!("index {i} is out of range for {n}"))
                })
                .collect::<Result<_, _>>()?;
            return Ok(vec![Val::known(k.pick(ik.dims.clone(), &picked))]);
        }
    }
    // Negative constant indices are made positive here: the IR gathers in range only.
    if let (Some(ik), Some(n)) = (imp.known(idx).cloned(), dim) {
        if let Some(ids) = ik.static_ints() {
            let fixed: Vec<i64> = ids
                .iter()
                .map(|&i| if i < 0 { i + n as i64 } else { i })
                .collect();
            if let Some(bad) = fixed.iter().find(|&&i| i < 0 || i >= n as i64) {
                return Err(format!("index {bad} is out of range for a dim of {n}"));
            }
            let ty = TensorType::new(
                DType::I64,
                ik.dims.iter().map(|&d| Dim::Static(d)).collect(),
            );
            let iv = imp.constant(ty, Literal::Ints(fixed), &format!("{}.idx", cx.hint()))?;
            let xv = imp.ir(x)?;
            return ir(imp.add(Op::Gather { axis }, vec![xv, iv], cx.hint())?);
        }
    }
    let xv = imp.ir(x)?;
    let iv = imp.ir_as(idx, DType::I64)?;
    ir(imp.add(Op::Gather { axis }, vec![xv, iv], cx.hint())?)
}

fn split(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let x = cx.need(0)?;
    let axis = cx.attrs.i("axis", 0)?;
    let t = imp.ty(x)?;
    let ax = norm_axis(axis, t.rank()).map_err(|e| e.0)?;
    let given = if imp.opset >= 13 {
        cx.input(1).map(|n| imp.ints(n)).transpose()?
    } else {
        cx.attrs.ints("split")?
    };
    let sizes: Vec<u64> = match given {
        Some(v) => v.iter().map(|&s| s.max(0) as u64).collect(),
        None => {
            let n = t.shape.0[ax]
                .as_static()
                .ok_or("an even split of a symbolic dim")?;
            let parts = if cx.attrs.has("num_outputs") {
                cx.attrs.i("num_outputs", 1)? as u64
            } else {
                cx.outputs.len() as u64
            };
            if parts == 0 {
                return Err("zero outputs".into());
            }
            // ONNX: ceil-sized chunks, the last one smaller.
            let chunk = n.div_ceil(parts);
            (0..parts)
                .map(|i| chunk.min(n.saturating_sub(i * chunk)))
                .collect()
        }
    };
    let xv = imp.ir(x)?;
    let node = imp.add_multi(
        Op::Split {
            axis,
            sizes: sizes.clone(),
        },
        vec![xv],
        cx.hint(),
    )?;
    Ok((0..sizes.len())
        .map(|p| Val::ir(ValueRef::new(node, p as u32)))
        .collect())
}
