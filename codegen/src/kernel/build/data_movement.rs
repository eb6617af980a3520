//! Data movement: transpose, broadcast_to, concat, split, slice and gathers, each a flat parallel loop
//! over its destination that computes the source index.

use super::pointwise::GRAIN;
use super::{Arg, Builder};
use crate::kernel::{Body, Cond, Expr, IExpr, Stmt};
use oar_ir::op::{norm_axis, GradOp, Op};
use oar_ir::DType;

fn strides(shape: &[i64]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Coordinate `d` of flat index `t` in `shape`.
fn coord(t: &IExpr, shape: &[i64], st: &[i64], d: usize) -> IExpr {
    t.clone().div(st[d]).rem(shape[d])
}

/// `dst[t] = src[index(t)]` for `n` elements; extra buffers (index tensors) follow `src`.
pub(super) fn gather_copy(
    b: &mut Builder,
    name: &str,
    dst: usize,
    src: usize,
    extra: &[usize],
    n: i64,
    index: IExpr,
) -> Result<(), String> {
    let body = vec![Stmt::par(
        n,
        vec![Stmt::Store {
            buf: 0,
            idx: IExpr::v(0),
            val: Expr::Load(1, index),
        }],
    )];
    let mut args = vec![dst, src];
    args.extend(extra);
    b.kernel(name, &args, Body::Loops(body), n, GRAIN)
}

/// As [`gather_copy`] but writing `dst[dst_index(t)]` for the `n` source elements.
fn scatter_copy(
    b: &mut Builder,
    name: &str,
    dst: usize,
    src: usize,
    n: i64,
    dst_index: IExpr,
) -> Result<(), String> {
    let body = vec![Stmt::par(
        n,
        vec![Stmt::Store {
            buf: 0,
            idx: dst_index,
            val: Expr::Load(1, IExpr::v(0)),
        }],
    )];
    b.kernel(name, &[dst, src], Body::Loops(body), n, GRAIN)
}

pub(crate) fn lower(
    b: &mut Builder,
    name: &str,
    op: &Op,
    ins: &[Arg],
    outs: &[Arg],
) -> Result<(), String> {
    if outs.iter().any(|o| o.dtype != DType::F32) {
        return Err("only f32 data movement is compiled".into());
    }
    let t = IExpr::v(0);
    let out = &outs[0];
    let n_out: i64 = out.shape.iter().product();
    match op {
        Op::Transpose { perm } => {
            let x = &ins[0];
            let (ost, ist) = (strides(&out.shape), strides(&x.shape));
            let mut src = IExpr::c(0);
            for (d, &p) in perm.iter().enumerate() {
                src = src.add(coord(&t, &out.shape, &ost, d).mul(ist[p]));
            }
            gather_copy(b, name, out.buf, x.buf, &[], n_out, src)
        }
        Op::BroadcastTo { .. } => {
            // Dims align to the right; a repeated dim (1 in the input) contributes nothing
            // to the source index.
            let x = &ins[0];
            let lead = out.shape.len().saturating_sub(x.shape.len());
            let (ost, ist) = (strides(&out.shape), strides(&x.shape));
            let mut src = IExpr::c(0);
            for (i, &d) in x.shape.iter().enumerate() {
                if d != 1 {
                    src = src.add(coord(&t, &out.shape, &ost, lead + i).mul(ist[i]));
                }
            }
            gather_copy(b, name, out.buf, x.buf, &[], n_out, src)
        }
        Op::Concat { axis } => {
            let ax = norm_axis(*axis, out.shape.len()).map_err(|e| e.0)?;
            let total = out.shape[ax];
            let inner: i64 = out.shape[ax + 1..].iter().product();
            let mut off = 0;
            for (k, x) in ins.iter().enumerate() {
                let len = x.shape[ax];
                let n: i64 = x.shape.iter().product();
                let o = t.clone().div(len * inner);
                let j = t.clone().div(inner).rem(len);
                let i = t.clone().rem(inner);
                let dst = o
                    .mul(total * inner)
                    .add(j.add(IExpr::c(off)).mul(inner))
                    .add(i);
                if n > 0 {
                    scatter_copy(b, &format!("{name}.{k}"), out.buf, x.buf, n, dst)?;
                }
                off += len;
            }
            Ok(())
        }
        Op::Split { axis, sizes } => {
            let x = &ins[0];
            let ax = norm_axis(*axis, x.shape.len()).map_err(|e| e.0)?;
            let total = x.shape[ax];
            let inner: i64 = x.shape[ax + 1..].iter().product();
            let mut off = 0;
            for (p, (o, &len)) in outs.iter().zip(sizes).enumerate() {
                let len = len as i64;
                let n: i64 = o.shape.iter().product();
                let oo = t.clone().div(len * inner);
                let j = t.clone().div(inner).rem(len);
                let i = t.clone().rem(inner);
                let src = oo
                    .mul(total * inner)
                    .add(j.add(IExpr::c(off)).mul(inner))
                    .add(i);
                if n > 0 {
                    gather_copy(b, &format!("{name}.{p}"), o.buf, x.buf, &[], n, src)?;
                }
                off += len;
            }
            Ok(())
        }
        Op::Slice(s) => {
            let x = &ins[0];
            let r = x.shape.len();
            let (ost, ist) = (strides(&out.shape), strides(&x.shape));
            let mut start = vec![0i64; r];
            let mut step = vec![1i64; r];
            for (k, &a) in s.axes.iter().enumerate() {
                let d = norm_axis(a, r).map_err(|e| e.0)?;
                let n = x.shape[d];
                let st = s.steps[k];
                let v = s.starts[k];
                let v = if v < 0 { v.saturating_add(n) } else { v };
                start[d] = if st > 0 {
                    v.clamp(0, n)
                } else {
                    v.clamp(-1, n - 1)
                };
                step[d] = st;
            }
            let mut src = IExpr::c(0);
            for d in 0..r {
                let c = coord(&t, &out.shape, &ost, d)
                    .mul(step[d])
                    .add(IExpr::c(start[d]));
                src = src.add(c.mul(ist[d]));
            }
            gather_copy(b, name, out.buf, x.buf, &[], n_out, src)
        }
        Op::Embedding => {
            let (table, ids) = (&ins[0], &ins[1]);
            let d = table.shape[1];
            let row = IExpr::Load(2, Box::new(t.clone().div(d)));
            let src = row.mul(d).add(t.clone().rem(d));
            gather_copy(b, name, out.buf, table.buf, &[ids.buf], n_out, src)
        }
        Op::Gather { axis } => {
            let (x, idx) = (&ins[0], &ins[1]);
            let ax = norm_axis(*axis, x.shape.len()).map_err(|e| e.0)?;
            let len = x.shape[ax];
            let inner: i64 = x.shape[ax + 1..].iter().product();
            let ni: i64 = idx.shape.iter().product();
            let o = t.clone().div(ni * inner);
            let q = t.clone().div(inner).rem(ni);
            let i = t.clone().rem(inner);
            let src = o
                .mul(len * inner)
                .add(IExpr::Load(2, Box::new(q)).mul(inner))
                .add(i);
            gather_copy(b, name, out.buf, x.buf, &[idx.buf], n_out, src)
        }
        Op::GatherElements { axis } => {
            let (x, idx) = (&ins[0], &ins[1]);
            let ax = norm_axis(*axis, x.shape.len()).map_err(|e| e.0)?;
            let (ost, ist) = (strides(&out.shape), strides(&x.shape));
            let mut src = IExpr::Load(2, Box::new(t.clone())).mul(ist[ax]);
            for (d, &stride) in ist.iter().enumerate().take(out.shape.len()) {
                if d != ax {
                    src = src.add(coord(&t, &out.shape, &ost, d).mul(stride));
                }
            }
            gather_copy(b, name, out.buf, x.buf, &[idx.buf], n_out, src)
        }
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
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
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
        | Op::Send { .. } => Err(format!("internal: {} routed to data_movement", op.name())),
    }
}

/// The gradient ops: `scatter_add` and `gather_grad` as linear-time scatters here (each
/// parallel unit owns the output elements it adds into, so threads never race), the rest
/// (convolution and pooling gradients) in `grad_ops`.
pub(crate) fn lower_grad(
    b: &mut Builder,
    name: &str,
    g: &GradOp,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    if out.dtype != DType::F32 {
        return Err(format!("`{}` is compiled for f32 only", g.name()));
    }
    match g {
        GradOp::ScatterAdd { axis } => scatter_add(b, name, *axis, ins, out),
        GradOp::Gather { axis, rows } => gather_grad(b, name, *axis, *rows as i64, ins, out),
        GradOp::Conv2dWeight { .. } | GradOp::Pool(_) | GradOp::DeformConv2d(_) => {
            super::grad_ops::lower(b, name, g, ins, out)
        }
    }
}

/// An index along an axis of `len` entries, negative ones counted from the end, and
/// whether it is in range. Out-of-range indices (which the interpreter rejects) add
/// nothing and write inside the tensor, never past it.
fn checked_index(raw: IExpr, len: i64) -> (IExpr, Cond) {
    let adj = IExpr::Select(
        Box::new(Cond::Le(IExpr::c(0), raw.clone())),
        Box::new(raw.clone()),
        Box::new(raw.add(IExpr::c(len))),
    );
    let ok = Cond::InRange(adj.clone(), len);
    let at = IExpr::Select(Box::new(ok.clone()), Box::new(adj), Box::new(IExpr::c(0)));
    (at, ok)
}

/// `out[t] = val` over `n` elements, in parallel.
fn fill(b: &mut Builder, name: &str, args: &[usize], n: i64, val: Expr) -> Result<(), String> {
    let body = vec![Stmt::par(
        n,
        vec![Stmt::Store {
            buf: 0,
            idx: IExpr::v(0),
            val,
        }],
    )];
    b.kernel(name, args, Body::Loops(body), n, GRAIN)
}

/// The widest of 16, 8, 4, 2, 1 that divides `n`: contiguous runs a unit handles together.
fn run_of(n: i64) -> i64 {
    [16, 8, 4, 2].into_iter().find(|w| n % w == 0).unwrap_or(1)
}

/// `out = data`, then `out[.., idx[i], ..] += upd[i]` along `axis`. Updates that differ in
/// a coordinate other than `axis` never meet, so each parallel unit is one line of `idx`
/// along `axis` (all its other coordinates fixed), walked in order.
fn scatter_add(
    b: &mut Builder,
    name: &str,
    axis: i64,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    let (data, idx, upd) = (&ins[0], &ins[1], &ins[2]);
    let rank = data.shape.len();
    let a = norm_axis(axis, rank).map_err(|e| e.0)?;
    if idx.shape.len() != rank {
        return Err("scatter_add: indices and data differ in rank".into());
    }
    let n: i64 = data.shape.iter().product();
    fill(
        b,
        &format!("{name}.copy"),
        &[out.buf, data.buf],
        n,
        Expr::Load(1, IExpr::v(0)),
    )?;
    let (dst, ist) = (strides(&data.shape), strides(&idx.shape));
    let others: Vec<usize> = (0..rank).filter(|&d| d != a).collect();
    let lines: i64 = others.iter().map(|&d| idx.shape[d]).product();
    let len = idx.shape[a];
    // Line t's coordinates: t in the row-major order of idx's other dims.
    let t = IExpr::v(0);
    let (mut base_i, mut base_o, mut step) = (IExpr::c(0), IExpr::c(0), 1i64);
    for &d in others.iter().rev() {
        let c = t.clone().div(step).rem(idx.shape[d]);
        base_i = base_i.add(c.clone().mul(ist[d]));
        base_o = base_o.add(c.mul(dst[d]));
        step *= idx.shape[d];
    }
    let i = base_i.add(IExpr::v(1).mul(ist[a]));
    let (at, ok) = checked_index(IExpr::Load(1, Box::new(i.clone())), data.shape[a]);
    let tgt = base_o.add(at.mul(dst[a]));
    let add = Expr::Load(0, tgt.clone()).add(Expr::Select(
        ok,
        Box::new(Expr::Load(2, i)),
        Box::new(Expr::C(0.0)),
    ));
    let body = vec![Stmt::par(
        lines,
        vec![Stmt::seq(
            1,
            len,
            vec![Stmt::Store {
                buf: 0,
                idx: tgt,
                val: add,
            }],
        )],
    )];
    let grain = (GRAIN / len.max(1)).max(1);
    b.kernel(
        name,
        &[out.buf, idx.buf, upd.buf],
        Body::Loops(body),
        lines,
        grain,
    )
}

/// The data gradient of `gather(data, idx) {axis}`: zeros `[outer, rows, inner]`, then
/// each cotangent slice `dy[o, k, :]` added at row `idx[k]`. A parallel unit owns a run of
/// `inner` columns of one `o` and walks every index in order.
fn gather_grad(
    b: &mut Builder,
    name: &str,
    axis: i64,
    rows: i64,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    let (idx, dy) = (&ins[0], &ins[1]);
    let a = norm_axis(axis, out.shape.len()).map_err(|e| e.0)?;
    let outer: i64 = out.shape[..a].iter().product();
    let inner: i64 = out.shape[a + 1..].iter().product();
    let ni: i64 = idx.shape.iter().product();
    let n: i64 = out.shape.iter().product();
    fill(b, &format!("{name}.zero"), &[out.buf], n, Expr::C(0.0))?;
    let w = run_of(inner);
    let runs = inner / w;
    let (t, k, jj) = (IExpr::v(0), IExpr::v(1), IExpr::v(2));
    let o = t.clone().div(runs);
    let j = t.rem(runs).mul(w).add(jj);
    let (r, ok) = checked_index(IExpr::Load(1, Box::new(k.clone())), rows);
    let tgt = o.clone().mul(rows).add(r).mul(inner).add(j.clone());
    let src = o.mul(ni).add(k).mul(inner).add(j);
    let add = Expr::Load(0, tgt.clone()).add(Expr::Select(
        ok,
        Box::new(Expr::Load(2, src)),
        Box::new(Expr::C(0.0)),
    ));
    let units = outer * runs;
    let body = vec![Stmt::par(
        units,
        vec![Stmt::seq(
            1,
            ni,
            vec![Stmt::seq(
                2,
                w,
                vec![Stmt::Store {
                    buf: 0,
                    idx: tgt,
                    val: add,
                }],
            )],
        )],
    )];
    let grain = (GRAIN / (ni * w).max(1)).max(1);
    b.kernel(
        name,
        &[out.buf, idx.buf, dy.buf],
        Body::Loops(body),
        units,
        grain,
    )
}
