//! Row-wise and windowed kernels: layer norm, softmax, reductions, pooling. Each parallel
//! iteration owns one row (or output element / plane) and keeps its running values in
//! locals.

use super::{Arg, Builder};
use crate::kernel::{Bin, Body, Cond, Expr, IExpr, Stmt, Un};
use oar_ir::dist::ReduceOp;
use oar_ir::op::{norm_axis, Op, PoolKind};
use oar_ir::DType;

/// The parallel loop as a kernel body.
fn vec_par(extent: i64, body: Vec<Stmt>) -> Vec<Stmt> {
    vec![Stmt::par(extent, body)]
}

fn assign(id: u32, val: Expr) -> Stmt {
    Stmt::Assign { id, val }
}

fn local(id: u32, init: Expr) -> Stmt {
    Stmt::Local { id, init }
}

const NEG_INF: f32 = f32::NEG_INFINITY;

pub(crate) fn lower(
    b: &mut Builder,
    name: &str,
    op: &Op,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    if out.dtype != DType::F32 || ins[0].dtype != DType::F32 {
        return Err("only f32 is compiled".into());
    }
    let x = &ins[0];
    let rank = x.shape.len();
    match op {
        Op::LayerNorm { axis, eps } => {
            let ax = norm_axis(*axis, rank).map_err(|e| e.0)?;
            let rows: i64 = x.shape[..ax].iter().product();
            let cols: i64 = x.shape[ax..].iter().product();
            let t = IExpr::v(0);
            let j = IExpr::v(1);
            let at = t.clone().mul(cols).add(j.clone());
            let xv = Expr::Load(1, at.clone());
            let (mean, var) = (Expr::Local(0), Expr::Local(1));
            let inv = Expr::C(1.0).div(
                var.clone()
                    .div(Expr::C(cols as f32))
                    .add(Expr::C(*eps as f32))
                    .un(Un::Sqrt),
            );
            let body = vec_par(
                rows,
                vec![
                    local(0, Expr::C(0.0)),
                    Stmt::seq(1, cols, vec![assign(0, mean.clone().add(xv.clone()))]),
                    assign(0, mean.clone().div(Expr::C(cols as f32))),
                    local(1, Expr::C(0.0)),
                    Stmt::seq(
                        1,
                        cols,
                        vec![assign(
                            1,
                            var.clone().add(
                                xv.clone()
                                    .sub(mean.clone())
                                    .mul(xv.clone().sub(mean.clone())),
                            ),
                        )],
                    ),
                    local(2, inv),
                    Stmt::seq(
                        1,
                        cols,
                        vec![Stmt::Store {
                            buf: 0,
                            idx: at.clone(),
                            val: xv
                                .clone()
                                .sub(mean.clone())
                                .mul(Expr::Local(2))
                                .mul(Expr::Load(2, j.clone()))
                                .add(Expr::Load(3, j.clone())),
                        }],
                    ),
                ],
            );
            b.kernel(
                name,
                &[out.buf, x.buf, ins[1].buf, ins[2].buf],
                Body::Loops(body),
                rows,
                16,
            )
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let ax = norm_axis(*axis, rank).map_err(|e| e.0)?;
            let outer: i64 = x.shape[..ax].iter().product();
            let len = x.shape[ax];
            let inner: i64 = x.shape[ax + 1..].iter().product();
            let t = IExpr::v(0);
            let base = t
                .clone()
                .div(inner)
                .mul(len * inner)
                .add(t.clone().rem(inner));
            let at = base.add(IExpr::v(1).mul(inner));
            let xv = Expr::Load(1, at.clone());
            let (m, s) = (Expr::Local(0), Expr::Local(1));
            let shifted = xv.clone().sub(m.clone());
            let val = if matches!(op, Op::LogSoftmax { .. }) {
                shifted.clone().sub(s.clone().un(Un::Log))
            } else {
                shifted.clone().un(Un::Exp).div(s.clone())
            };
            let body = vec_par(
                outer * inner,
                vec![
                    local(0, Expr::C(NEG_INF)),
                    Stmt::seq(1, len, vec![assign(0, m.clone().max(xv.clone()))]),
                    local(1, Expr::C(0.0)),
                    Stmt::seq(1, len, vec![assign(1, s.clone().add(shifted.un(Un::Exp)))]),
                    Stmt::seq(
                        1,
                        len,
                        vec![Stmt::Store {
                            buf: 0,
                            idx: at,
                            val,
                        }],
                    ),
                ],
            );
            b.kernel(
                name,
                &[out.buf, x.buf],
                Body::Loops(body),
                outer * inner,
                16,
            )
        }
        Op::Reduce(r) => {
            let mut axes: Vec<usize> = r
                .axes
                .iter()
                .map(|&a| norm_axis(a, rank).map_err(|e| e.0))
                .collect::<Result<_, _>>()?;
            if axes.is_empty() {
                axes = (0..rank).collect();
            }
            reduce(b, name, x, out, &axes, r.op)
        }
        Op::GlobalPool(kind) => {
            let axes: Vec<usize> = (2..rank).collect();
            let op = if *kind == PoolKind::Avg {
                ReduceOp::Mean
            } else {
                ReduceOp::Max
            };
            reduce(b, name, x, out, &axes, op)
        }
        Op::Pool(p) => {
            let [n, c, h, w] = x.shape[..] else {
                return Err("pool input must be NCHW".into());
            };
            let (oh, ow) = (out.shape[2], out.shape[3]);
            let (oy, ox, ki, kj) = (IExpr::v(1), IExpr::v(2), IExpr::v(3), IExpr::v(4));
            let iy = oy
                .clone()
                .mul(p.stride[0] as i64)
                .add(ki)
                .add(IExpr::c(-(p.padding[0] as i64)));
            let ix = ox
                .clone()
                .mul(p.stride[1] as i64)
                .add(kj)
                .add(IExpr::c(-(p.padding[1] as i64)));
            let plane = IExpr::v(0);
            let src = plane
                .clone()
                .mul(h * w)
                .add(iy.clone().mul(w))
                .add(ix.clone());
            let cond = Cond::And(
                Box::new(Cond::InRange(iy, h)),
                Box::new(Cond::InRange(ix, w)),
            );
            let dst = plane.mul(oh * ow).add(oy.mul(ow)).add(ox);
            let (acc, cnt) = (Expr::Local(0), Expr::Local(1));
            let (init, step, fin) = if p.kind == PoolKind::Max {
                let v = Expr::Select(
                    cond.clone(),
                    Box::new(Expr::LoadIf(1, src, cond)),
                    Box::new(Expr::C(NEG_INF)),
                );
                (NEG_INF, assign(0, acc.clone().max(v)), acc.clone())
            } else {
                let divisor = cnt.clone();
                (
                    0.0,
                    assign(0, acc.clone().add(Expr::LoadIf(1, src, cond))),
                    acc.clone().div(divisor),
                )
            };
            // The divisor counts input cells, or with count_include_pad the cells inside the
            // padded input (never cells past the padding that ceil mode adds).
            let count = if p.kind == PoolKind::Avg {
                let cond2 = {
                    let (oy_pad, ox_pad) = if p.count_include_pad {
                        (0, 0)
                    } else {
                        (p.padding[0] as i64, p.padding[1] as i64)
                    };
                    let (hh, ww) = if p.count_include_pad {
                        (
                            h + (p.padding[0] + p.padding[2]) as i64,
                            w + (p.padding[1] + p.padding[3]) as i64,
                        )
                    } else {
                        (h, w)
                    };
                    let iy = IExpr::v(1)
                        .mul(p.stride[0] as i64)
                        .add(IExpr::v(3))
                        .add(IExpr::c(-oy_pad));
                    let ix = IExpr::v(2)
                        .mul(p.stride[1] as i64)
                        .add(IExpr::v(4))
                        .add(IExpr::c(-ox_pad));
                    Cond::And(
                        Box::new(Cond::InRange(iy, hh)),
                        Box::new(Cond::InRange(ix, ww)),
                    )
                };
                vec![assign(
                    1,
                    cnt.clone().add(Expr::Select(
                        cond2,
                        Box::new(Expr::C(1.0)),
                        Box::new(Expr::C(0.0)),
                    )),
                )]
            } else {
                vec![]
            };
            let mut inner = vec![step];
            inner.extend(count);
            let body = vec_par(
                n * c,
                vec![Stmt::seq(
                    1,
                    oh,
                    vec![Stmt::seq(
                        2,
                        ow,
                        vec![
                            local(0, Expr::C(init)),
                            local(1, Expr::C(0.0)),
                            Stmt::seq(
                                3,
                                p.kernel[0] as i64,
                                vec![Stmt::seq(4, p.kernel[1] as i64, inner)],
                            ),
                            Stmt::Store {
                                buf: 0,
                                idx: dst,
                                val: fin,
                            },
                        ],
                    )],
                )],
            );
            b.kernel(name, &[out.buf, x.buf], Body::Loops(body), n * c, 4)
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
        | Op::CausalMask { .. }
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
        | Op::Send { .. } => Err(format!(
            "internal: {} routed to norm_reduce_pool",
            op.name()
        )),
    }
}

/// Reduces `axes` of `x`; the output keeps the other dims in order (with or without 1s).
fn reduce(
    b: &mut Builder,
    name: &str,
    x: &Arg,
    out: &Arg,
    axes: &[usize],
    op: ReduceOp,
) -> Result<(), String> {
    let rank = x.shape.len();
    let lead = axes.len();
    if lead < rank && axes.iter().all(|&a| a < lead) {
        return reduce_leading(b, name, x, out, lead, op);
    }
    let mut in_stride = vec![1i64; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_stride[d] = in_stride[d + 1] * x.shape[d + 1];
    }
    let kept: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
    let n_out: i64 = kept.iter().map(|&d| x.shape[d]).product();
    let t = IExpr::v(0);
    let mut base = IExpr::c(0);
    let mut stride = 1i64;
    for &d in kept.iter().rev() {
        base = base.add(t.clone().div(stride).rem(x.shape[d]).mul(in_stride[d]));
        stride *= x.shape[d];
    }
    let mut at = base;
    for (k, &a) in axes.iter().enumerate() {
        at = at.add(IExpr::v(1 + k as u32).mul(in_stride[a]));
    }
    let acc = Expr::Local(0);
    let xv = Expr::Load(1, at);
    let (init, upd) = match op {
        ReduceOp::Sum | ReduceOp::Mean => (0.0, acc.clone().add(xv)),
        ReduceOp::Max => (NEG_INF, acc.clone().max(xv)),
        ReduceOp::Min => (f32::INFINITY, acc.clone().min(xv)),
        ReduceOp::Prod => (1.0, acc.clone().bin(Bin::Mul, xv)),
    };
    let count: i64 = axes.iter().map(|&a| x.shape[a]).product();
    let mut nest = vec![assign(0, upd)];
    for (k, &a) in axes.iter().enumerate().rev() {
        nest = vec![Stmt::seq(1 + k as u32, x.shape[a], nest)];
    }
    let fin = if op == ReduceOp::Mean {
        acc.clone().div(Expr::C(count as f32))
    } else {
        acc
    };
    let mut body = vec![local(0, Expr::C(init))];
    body.extend(nest);
    body.push(Stmt::Store {
        buf: 0,
        idx: t,
        val: fin,
    });
    b.kernel(
        name,
        &[out.buf, x.buf],
        Body::Loops(vec_par(n_out, body)),
        n_out,
        16,
    )
}

/// Reduces the leading `lead` dims of `x` (a bias or norm-scale gradient: `[rows, cols]`
/// summed over rows). Per-output loops would stride a whole row between loads; here each
/// parallel unit owns a run of columns, accumulated in the output row by row, so every
/// load is contiguous.
fn reduce_leading(
    b: &mut Builder,
    name: &str,
    x: &Arg,
    out: &Arg,
    lead: usize,
    op: ReduceOp,
) -> Result<(), String> {
    let rows: i64 = x.shape[..lead].iter().product();
    let cols: i64 = x.shape[lead..].iter().product();
    // Runs of up to 64 columns, at least 4 units when the columns allow.
    let w = [64, 32, 16, 8, 4, 2]
        .into_iter()
        .find(|w| cols % w == 0 && cols / w >= 4)
        .unwrap_or(1);
    let (t, r, j) = (IExpr::v(0), IExpr::v(1), IExpr::v(2));
    let col = t.mul(w).add(j);
    let acc = Expr::Load(0, col.clone());
    let xv = Expr::Load(1, r.mul(cols).add(col.clone()));
    let (init, upd) = match op {
        ReduceOp::Sum | ReduceOp::Mean => (0.0, acc.clone().add(xv)),
        ReduceOp::Max => (NEG_INF, acc.clone().max(xv)),
        ReduceOp::Min => (f32::INFINITY, acc.clone().min(xv)),
        ReduceOp::Prod => (1.0, acc.clone().bin(Bin::Mul, xv)),
    };
    let store = |val: Expr| Stmt::Store {
        buf: 0,
        idx: col.clone(),
        val,
    };
    let mut body = vec![
        Stmt::seq(2, w, vec![store(Expr::C(init))]),
        Stmt::seq(1, rows, vec![Stmt::seq(2, w, vec![store(upd)])]),
    ];
    if op == ReduceOp::Mean {
        body.push(Stmt::seq(2, w, vec![store(acc.div(Expr::C(rows as f32)))]));
    }
    let units = cols / w;
    let grain = (16 * 1024 / (rows * w).max(1)).max(1);
    b.kernel(
        name,
        &[out.buf, x.buf],
        Body::Loops(vec_par(units, body)),
        units,
        grain,
    )
}
