//! Shape ops: the gradient moves back the way the data came.
//!
//! A slice's gradient places the cotangent at the selected positions and zeros elsewhere;
//! it is built from existing ops (a reversing slice for negative steps, interleaving with
//! zeros for steps > 1, zero padding by concatenation), so no scatter op is needed.

use super::{no_rule, InputGrads};
use crate::autodiff::{AutodiffError, GradCx};
use oar_ir::op::{norm_axis, Op, SliceAttrs};
use oar_ir::{NodeId, TensorType, ValueRef};

type G = Result<ValueRef, AutodiffError>;

/// The input's cotangent when it wants one and some output has a cotangent.
fn wanted(want: &[bool], gy: &[Option<ValueRef>]) -> bool {
    want.first().copied().unwrap_or(false) && gy.iter().any(Option::is_some)
}

fn axis_of(cx: &GradCx, node: NodeId, axis: i64, rank: usize) -> Result<usize, AutodiffError> {
    norm_axis(axis, rank).map_err(|e| no_rule(cx, node, &e.0))
}

/// Each input takes its block of the cotangent.
pub(super) fn concat(
    cx: &mut GradCx,
    node: NodeId,
    axis: i64,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let ins = cx.graph().node(node).inputs.clone();
    let Some(g) = gy[0] else {
        return Ok(vec![None; ins.len()]);
    };
    let a = axis_of(cx, node, axis, cx.dims(g).len())?;
    let mut out = Vec::with_capacity(ins.len());
    let mut off = 0i64;
    for (k, &v) in ins.iter().enumerate() {
        let len = cx.dims(v)[a] as i64;
        out.push(if want[k] {
            Some(slice_range(cx, g, a, off, len, node)?)
        } else {
            None
        });
        off += len;
    }
    Ok(out)
}

/// The parts' cotangents concatenated; outputs without one contribute zeros.
pub(super) fn split(
    cx: &mut GradCx,
    node: NodeId,
    axis: i64,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    if !wanted(want, gy) {
        return Ok(vec![None]);
    }
    let x = cx.graph().node(node).inputs[0];
    let a = axis_of(cx, node, axis, cx.dims(x).len())?;
    let mut parts = Vec::with_capacity(gy.len());
    for (k, g) in gy.iter().enumerate() {
        parts.push(match g {
            Some(g) => *g,
            None => {
                let t = cx.ty(ValueRef::new(node, k as u32));
                cx.zeros(&t, node)?
            }
        });
    }
    Ok(vec![Some(cx.concat(parts, a as i64, node)?)])
}

pub(super) fn slice(
    cx: &mut GradCx,
    node: NodeId,
    s: &SliceAttrs,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), true) = (gy[0], wanted(want, gy)) else {
        return Ok(vec![None]);
    };
    let xd = cx.dims(cx.graph().node(node).inputs[0]);
    Ok(vec![Some(slice_grad(cx, node, s, &xd, g)?)])
}

/// Views (reshape, squeeze, unsqueeze, flatten): the cotangent under the input's shape.
pub(super) fn reshape(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), true) = (gy[0], wanted(want, gy)) else {
        return Ok(vec![None]);
    };
    let xd = cx.dims(cx.graph().node(node).inputs[0]);
    Ok(vec![Some(cx.reshape(g, &xd, node)?)])
}

/// The inverse permutation.
pub(super) fn transpose(
    cx: &mut GradCx,
    node: NodeId,
    perm: &[usize],
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), true) = (gy[0], wanted(want, gy)) else {
        return Ok(vec![None]);
    };
    let mut inv = vec![0usize; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        if let Some(slot) = inv.get_mut(p) {
            *slot = i;
        }
    }
    let t = cx.emit(Op::Transpose { perm: inv }, vec![g], node)?;
    Ok(vec![Some(t)])
}

/// Summed over the broadcast dims.
pub(super) fn broadcast_to(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let (Some(g), true) = (gy[0], wanted(want, gy)) else {
        return Ok(vec![None]);
    };
    let t = cx.ty(cx.graph().node(node).inputs[0]);
    Ok(vec![Some(cx.unbroadcast(g, &t, node)?)])
}

/// `v[.., off..off+len, ..]` along axis `a`.
fn slice_range(cx: &mut GradCx, v: ValueRef, a: usize, off: i64, len: i64, of: NodeId) -> G {
    if off == 0 && cx.dims(v)[a] as i64 == len {
        return Ok(v);
    }
    cx.emit(
        Op::Slice(SliceAttrs {
            axes: vec![a as i64],
            starts: vec![off],
            ends: vec![off + len],
            steps: vec![1],
        }),
        vec![v],
        of,
    )
}

/// `v`'s dims with axis `a` replaced by `with`.
fn dims_with(v: &[u64], a: usize, with: &[u64]) -> Vec<u64> {
    let mut d = v[..a].to_vec();
    d.extend_from_slice(with);
    d.extend_from_slice(&v[a + 1..]);
    d
}

/// Zeros shaped like `v` but `len` long along axis `a` (`None` for an empty block).
fn zero_block(
    cx: &mut GradCx,
    v: ValueRef,
    a: usize,
    len: u64,
    of: NodeId,
) -> Result<Option<ValueRef>, AutodiffError> {
    if len == 0 {
        return Ok(None);
    }
    let mut t: TensorType = cx.ty(v);
    let d = dims_with(&cx.dims(v), a, &[len]);
    t.shape = oar_ir::Shape(d.into_iter().map(oar_ir::Dim::Static).collect());
    Ok(Some(cx.zeros(&t, of)?))
}

/// One axis of a forward slice: the dim before it, the first selected index, the count
/// and the step (the interpreter's clamping, `runtime/src/interp/data_movement.rs`).
struct AxisCut {
    axis: usize,
    n: i64,
    start: i64,
    len: i64,
    step: i64,
}

fn slice_grad(cx: &mut GradCx, node: NodeId, s: &SliceAttrs, xd: &[u64], g: ValueRef) -> G {
    // Replay the forward's per-axis cuts to know each dim before its cut.
    let mut dims: Vec<i64> = xd.iter().map(|&d| d as i64).collect();
    let mut cuts = Vec::with_capacity(s.axes.len());
    for i in 0..s.axes.len() {
        let axis = norm_axis(s.axes[i], dims.len()).map_err(|e| no_rule(cx, node, &e.0))?;
        let n = dims[axis];
        let step = s.steps.get(i).copied().unwrap_or(1);
        let (Some(&st), Some(&en)) = (s.starts.get(i), s.ends.get(i)) else {
            return Err(no_rule(cx, node, "slice starts/ends shorter than its axes"));
        };
        let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let (start, len) = if step > 0 {
            let b = norm(st).clamp(0, n);
            let e = norm(en).clamp(0, n);
            (b, if e > b { (e - b + step - 1) / step } else { 0 })
        } else if step < 0 {
            let b = norm(st).clamp(-1, n - 1);
            let e = norm(en).clamp(-1, n - 1);
            (b, if b > e { (b - e - step - 1) / -step } else { 0 })
        } else {
            return Err(no_rule(cx, node, "slice step 0"));
        };
        cuts.push(AxisCut {
            axis,
            n,
            start,
            len,
            step,
        });
        dims[axis] = len;
    }
    let mut cur = g;
    for c in cuts.iter().rev() {
        cur = unslice_axis(cx, cur, c, node)?;
    }
    Ok(cur)
}

/// Undoes one axis cut: `cur` (length `len` on the axis) placed at the selected indices of
/// a zero tensor of length `n`.
fn unslice_axis(cx: &mut GradCx, cur: ValueRef, c: &AxisCut, of: NodeId) -> G {
    let a = c.axis;
    let cd = cx.dims(cur);
    if c.len == 0 {
        let mut t = cx.ty(cur);
        let d = dims_with(&cd, a, &[c.n as u64]);
        t.shape = oar_ir::Shape(d.into_iter().map(oar_ir::Dim::Static).collect());
        return cx.zeros(&t, of);
    }
    // Ascending order: a negative step selected its indices from the top down.
    let (mut v, first, step) = if c.step < 0 {
        let rev = cx.emit(
            Op::Slice(SliceAttrs {
                axes: vec![a as i64],
                starts: vec![c.len - 1],
                ends: vec![-(c.len + 1)],
                steps: vec![-1],
            }),
            vec![cur],
            of,
        )?;
        (rev, c.start + (c.len - 1) * c.step, -c.step)
    } else {
        (cur, c.start, c.step)
    };
    // Interleave step − 1 zeros after each element, then drop the trailing ones.
    let span = (c.len - 1) * step + 1;
    if step > 1 && c.len > 1 {
        let (len, s) = (c.len as u64, step as u64);
        let col = cx.reshape(v, &dims_with(&cd, a, &[len, 1]), of)?;
        let zt = TensorType::new(
            cx.ty(cur).dtype,
            dims_with(&cd, a, &[len, s - 1])
                .into_iter()
                .map(oar_ir::Dim::Static)
                .collect(),
        );
        let z = cx.zeros(&zt, of)?;
        let wide = cx.concat(vec![col, z], a as i64 + 1, of)?;
        let flat = cx.reshape(wide, &dims_with(&cd, a, &[len * s]), of)?;
        v = slice_range(cx, flat, a, 0, span, of)?;
    }
    let mut parts = Vec::with_capacity(3);
    if let Some(z) = zero_block(cx, v, a, first as u64, of)? {
        parts.push(z);
    }
    parts.push(v);
    if let Some(z) = zero_block(cx, v, a, (c.n - first - span) as u64, of)? {
        parts.push(z);
    }
    cx.concat(parts, a as i64, of)
}
