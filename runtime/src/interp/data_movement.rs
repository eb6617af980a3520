//! Data movement: every op here computes, for each output element, the linear index of the
//! input element it copies, and `take` does the copy for any element type.

use super::{err, norm_axis, Res};
use crate::tensor::{strides, HostTensor, TensorData};
use oar_ir::op::SliceAttrs;

/// Copies `t`'s elements at `idx` into a tensor of `shape`.
pub(crate) fn take(t: &HostTensor, idx: &[usize], shape: Vec<usize>) -> HostTensor {
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(idx.iter().map(|&i| v[i]).collect()),
        TensorData::F64(v) => TensorData::F64(idx.iter().map(|&i| v[i]).collect()),
        TensorData::I64(v) => TensorData::I64(idx.iter().map(|&i| v[i]).collect()),
        TensorData::Bool(v) => TensorData::Bool(idx.iter().map(|&i| v[i]).collect()),
    };
    HostTensor { shape, data }
}

/// Multi-index of each linear position of `shape`, visited in order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

pub(crate) fn transpose(x: &HostTensor, perm: &[usize]) -> Res<HostTensor> {
    if perm.len() != x.shape.len() {
        return err("perm length differs from rank");
    }
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let st = strides(&x.shape);
    let mut idx = Vec::with_capacity(x.numel());
    for_each_index(&shape, |i| {
        idx.push(i.iter().zip(perm).map(|(&v, &p)| v * st[p]).sum())
    });
    Ok(take(x, &idx, shape))
}

/// numpy's `broadcast_to`: dims align to the right; a dim of 1 repeats, others match.
pub(crate) fn broadcast_to(x: &HostTensor, shape: &[usize]) -> Res<HostTensor> {
    let lead = shape
        .len()
        .checked_sub(x.shape.len())
        .ok_or_else(|| "broadcast_to: the input has more dims than the target".to_string())?;
    let st = strides(&x.shape);
    // A repeated dim (size 1 in the input) reads index 0: stride 0.
    let mut bst = vec![0usize; shape.len()];
    for (i, (&d, &s)) in x.shape.iter().zip(&st).enumerate() {
        if d != 1 && d != shape[lead + i] {
            return err("broadcast_to: a dim is neither 1 nor the target's");
        }
        bst[lead + i] = if d == 1 { 0 } else { s };
    }
    let mut idx = Vec::with_capacity(shape.iter().product());
    for_each_index(shape, |i| {
        idx.push(i.iter().zip(&bst).map(|(v, s)| v * s).sum())
    });
    Ok(take(x, &idx, shape.to_vec()))
}

pub(crate) fn concat(xs: &[&HostTensor], axis: i64) -> Res<HostTensor> {
    let first = xs.first().ok_or_else(|| "concat of nothing".to_string())?;
    let a = norm_axis(axis, first.shape.len())?;
    let outer: usize = first.shape[..a].iter().product();
    let inner: usize = first.shape[a + 1..].iter().product();
    if xs.iter().any(|t| t.dtype() != first.dtype()) {
        return err("concat inputs differ in dtype");
    }
    let mut shape = first.shape.clone();
    shape[a] = xs.iter().map(|t| t.shape[a]).sum();
    // (which input, which element) for each output element, in order.
    let mut src: Vec<(usize, usize)> = Vec::new();
    for o in 0..outer {
        for (k, t) in xs.iter().enumerate() {
            let len = t.shape[a] * inner;
            src.extend((o * len..(o + 1) * len).map(|i| (k, i)));
        }
    }
    let missing = || "concat inputs differ in dtype".to_string();
    let data = match &first.data {
        TensorData::F32(_) => TensorData::F32(
            src.iter()
                .map(|&(k, i)| xs[k].as_f32().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(missing)?,
        ),
        TensorData::F64(_) => TensorData::F64(
            src.iter()
                .map(|&(k, i)| xs[k].as_f64().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(missing)?,
        ),
        TensorData::I64(_) => TensorData::I64(
            src.iter()
                .map(|&(k, i)| xs[k].as_i64().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(missing)?,
        ),
        TensorData::Bool(_) => TensorData::Bool(
            src.iter()
                .map(|&(k, i)| xs[k].as_bool().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(missing)?,
        ),
    };
    Ok(HostTensor { shape, data })
}

pub(crate) fn split(x: &HostTensor, axis: i64, sizes: &[u64]) -> Res<Vec<HostTensor>> {
    let a = norm_axis(axis, x.shape.len())?;
    let mut start = 0;
    let mut outs = Vec::new();
    for &s in sizes {
        let s = s as usize;
        outs.push(slice_range(x, a, start, s, 1)?);
        start += s as isize;
    }
    Ok(outs)
}

/// `len` elements along `axis` from `start` with `step`.
fn slice_range(
    x: &HostTensor,
    axis: usize,
    start: isize,
    len: usize,
    step: isize,
) -> Res<HostTensor> {
    let mut shape = x.shape.clone();
    shape[axis] = len;
    let st = strides(&x.shape);
    let mut idx = Vec::with_capacity(shape.iter().product());
    for_each_index(&shape, |i| {
        let lin: isize = i
            .iter()
            .enumerate()
            .map(|(d, &v)| {
                if d == axis {
                    (start + v as isize * step) * st[d] as isize
                } else {
                    (v * st[d]) as isize
                }
            })
            .sum();
        idx.push(lin as usize);
    });
    Ok(take(x, &idx, shape))
}

pub(crate) fn slice(x: &HostTensor, s: &SliceAttrs) -> Res<HostTensor> {
    let mut cur = x.clone();
    for i in 0..s.axes.len() {
        let a = norm_axis(s.axes[i], x.shape.len())?;
        let n = cur.shape[a] as i64;
        let step = s.steps[i];
        if step == 0 {
            return err("slice step 0");
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let (start, len) = if step > 0 {
            let b = norm(s.starts[i]).clamp(0, n);
            let e = norm(s.ends[i]).clamp(0, n);
            (b, if e > b { (e - b + step - 1) / step } else { 0 })
        } else {
            let b = norm(s.starts[i]).clamp(-1, n - 1);
            let e = norm(s.ends[i]).clamp(-1, n - 1);
            (b, if b > e { (b - e - step - 1) / -step } else { 0 })
        };
        cur = slice_range(&cur, a, start as isize, len as usize, step as isize)?;
    }
    Ok(cur)
}

pub(crate) fn index_list(idx: &HostTensor, bound: usize, what: &str) -> Res<Vec<usize>> {
    let v = idx
        .as_i64()
        .ok_or_else(|| format!("{what} must be integers"))?;
    v.iter()
        .map(|&i| {
            let j = if i < 0 { i + bound as i64 } else { i };
            if (0..bound as i64).contains(&j) {
                Ok(j as usize)
            } else {
                err(format!("{what} {i} is out of range for a dim of {bound}"))
            }
        })
        .collect()
}

pub(crate) fn gather(data: &HostTensor, indices: &HostTensor, axis: i64) -> Res<HostTensor> {
    let a = norm_axis(axis, data.shape.len())?;
    let idx = index_list(indices, data.shape[a], "index")?;
    let outer: usize = data.shape[..a].iter().product();
    let inner: usize = data.shape[a + 1..].iter().product();
    let len = data.shape[a];
    let mut lin = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in &idx {
            lin.extend((0..inner).map(|j| (o * len + i) * inner + j));
        }
    }
    let mut shape = data.shape[..a].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[a + 1..]);
    Ok(take(data, &lin, shape))
}

pub(crate) fn gather_elements(
    data: &HostTensor,
    indices: &HostTensor,
    axis: i64,
) -> Res<HostTensor> {
    let a = norm_axis(axis, data.shape.len())?;
    let idx = index_list(indices, data.shape[a], "index")?;
    let st = strides(&data.shape);
    let mut lin = Vec::with_capacity(idx.len());
    let mut k = 0;
    for_each_index(&indices.shape, |i| {
        lin.push(
            i.iter()
                .enumerate()
                .map(|(d, &v)| if d == a { idx[k] } else { v } * st[d])
                .sum(),
        );
        k += 1;
    });
    Ok(take(data, &lin, indices.shape.clone()))
}

pub(crate) fn embedding(table: &HostTensor, ids: &HostTensor) -> Res<HostTensor> {
    gather(table, ids, 0)
}
