//! Data movement: transpose, broadcast_to, concat, split, slice and gathers, each a flat parallel loop
//! over its destination that computes the source index.

use super::pointwise::GRAIN;
use super::{Arg, Builder};
use crate::kernel::{Body, Expr, IExpr, Stmt};
use oar_ir::op::{norm_axis, Op};
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
