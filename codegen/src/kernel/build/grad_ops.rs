//! Gradient ops (`conv2d_grad_weight`, `pool_grad`, `scatter_add`, `gather_grad`) and
//! `conv_transpose2d` (conv2d's data gradient) as plain loop nests. Each parallel iteration
//! owns one output element and gathers everything that adds into it (no scatter, so no
//! write races between threads). The convolution ones are the fallbacks of the fast forms
//! in `conv_grad` (through the forward conv kernels and the GEMM).

use super::{Arg, Builder};
use crate::kernel::{Body, Cond, Expr, IExpr, Stmt, Un};
use oar_ir::op::{norm_axis, ConvAttrs, ConvTransposeAttrs, GradOp, PoolAttrs, PoolKind};
use oar_ir::DType;

fn and(a: Cond, b: Cond) -> Cond {
    Cond::And(Box::new(a), Box::new(b))
}

fn eq(a: IExpr, b: IExpr) -> Cond {
    and(Cond::Le(a.clone(), b.clone()), Cond::Le(b, a))
}

fn select(c: Cond, a: Expr, b: Expr) -> Expr {
    Expr::Select(c, Box::new(a), Box::new(b))
}

/// The body every kernel here has: per output element `t` (the parallel loop), local 0
/// starts at `init`, is updated by `inner` inside the nested sequential `loops` (variable,
/// extent; outermost first), and is stored at `t`.
fn accumulate(extent: i64, init: Expr, loops: &[(u32, i64)], mut inner: Vec<Stmt>) -> Body {
    for &(var, n) in loops.iter().rev() {
        inner = vec![Stmt::seq(var, n, inner)];
    }
    let mut body = vec![Stmt::Local { id: 0, init }];
    body.extend(inner);
    body.push(Stmt::Store {
        buf: 0,
        idx: IExpr::v(0),
        val: Expr::Local(0),
    });
    Body::Loops(vec![Stmt::par(extent, body)])
}

/// `acc = val` for local 0.
fn set_acc(val: Expr) -> Vec<Stmt> {
    vec![Stmt::Assign { id: 0, val }]
}

fn nchw(a: &Arg, what: &str) -> Result<[i64; 4], String> {
    match a.shape.as_slice() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(format!("{what} must be NCHW, found {:?}", a.shape)),
    }
}

/// Strides of a row-major shape.
fn strides(shape: &[i64]) -> Vec<i64> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `v`'s coordinate along `d` of a linear index into `shape`.
fn coord(v: &IExpr, shape: &[i64], st: &[i64], d: usize) -> IExpr {
    v.clone().div(st[d]).rem(shape[d])
}

/// `index == target`, or `index == target − len` (a negative index counts from the end).
fn index_hits(index: IExpr, target: IExpr, len: i64) -> [Cond; 2] {
    [
        eq(index.clone(), target.clone()),
        eq(index, target.add(IExpr::c(-len))),
    ]
}

pub(crate) fn lower(
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
        GradOp::Conv2dWeight { conv, kernel } => {
            let k = kernel.map(|v| v as i64);
            if super::conv_grad::dense_weight_grad(b, name, conv, k, ins, out)?
                || super::conv_grad::depthwise_weight_grad(b, name, conv, k, ins, out)?
            {
                return Ok(());
            }
            conv_weight(b, name, conv, *kernel, ins, out)
        }
        GradOp::Pool(p) => pool(b, name, p, ins, out),
        GradOp::ScatterAdd { axis } => scatter_add(b, name, *axis, ins, out),
        GradOp::Gather { axis, rows } => gather(b, name, *axis, *rows as i64, ins, out),
        GradOp::DeformConv2d(_) => {
            Err("`deform_conv2d_grad` has no CPU kernel yet (the interpreter runs it)".into())
        }
    }
}

/// `conv_transpose2d` in gather form: output pixel `oy` receives input row `iy` through
/// kernel row `ky` when `iy·s + ky·d − p = oy`, i.e. when `oy + p − ky·d` is a multiple of
/// the stride (signed division truncates, so negative rows fail the range check).
pub(crate) fn conv_transpose(
    b: &mut Builder,
    name: &str,
    t_attrs: &ConvTransposeAttrs,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    if out.dtype != DType::F32 {
        return Err("conv_transpose2d is compiled for f32 only".into());
    }
    if super::conv_grad::data_grad(b, name, t_attrs, ins, out)? {
        return Ok(());
    }
    let a = &t_attrs.conv;
    let (x, w) = (&ins[0], &ins[1]);
    let [_, c, h, wd] = nchw(x, "input")?;
    let [_, og, kh, kw] = nchw(w, "weight")?;
    let [n, o_ch, ho, wo] = nchw(out, "output")?;
    let g = a.groups as i64;
    let cg = c / g;
    let [sh, sw] = a.stride.map(|v| v as i64);
    let [dh, dw] = a.dilation.map(|v| v as i64);
    let [pt, pl, _, _] = a.padding.map(|v| v as i64);
    let t = IExpr::v(0);
    let ox = t.clone().rem(wo);
    let oy = t.clone().div(wo).rem(ho);
    let oc = t.clone().div(wo * ho).rem(o_ch);
    let bn = t.clone().div(wo * ho * o_ch);
    let ci = oc.clone().div(og).mul(cg).add(IExpr::v(1));
    let (ky, kx) = (IExpr::v(2), IExpr::v(3));
    let ny = oy.add(IExpr::c(pt)).add(ky.clone().mul(-dh));
    let nx = ox.add(IExpr::c(pl)).add(kx.clone().mul(-dw));
    let (iy, ix) = (ny.clone().div(sh), nx.clone().div(sw));
    let hit = and(
        and(eq(ny.rem(sh), IExpr::c(0)), eq(nx.rem(sw), IExpr::c(0))),
        and(Cond::InRange(iy.clone(), h), Cond::InRange(ix.clone(), wd)),
    );
    let x_at = bn.mul(c).add(ci.clone()).mul(h).add(iy).mul(wd).add(ix);
    let w_at = ci
        .mul(og)
        .add(oc.clone().rem(og))
        .mul(kh)
        .add(ky)
        .mul(kw)
        .add(kx);
    let acc = Expr::Local(0);
    let term = Expr::LoadIf(1, x_at, hit).mul(Expr::Load(2, w_at));
    let init = if ins.len() > 2 {
        Expr::Load(3, oc)
    } else {
        Expr::C(0.0)
    };
    let extent = n * o_ch * ho * wo;
    let body = accumulate(
        extent,
        init,
        &[(1, cg), (2, kh), (3, kw)],
        set_acc(acc.add(term)),
    );
    let mut args = vec![out.buf, x.buf, w.buf];
    args.extend(ins.get(2).map(|bias| bias.buf));
    b.kernel(name, &args, body, extent, 16)
}

/// One dW element per iteration: Σ over batch and output pixels.
fn conv_weight(
    b: &mut Builder,
    name: &str,
    a: &ConvAttrs,
    kernel: [u64; 2],
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    let (x, dy) = (&ins[0], &ins[1]);
    let [n, c, h, w] = nchw(x, "input")?;
    let [_, o, ho, wo] = nchw(dy, "cotangent")?;
    let g = a.groups as i64;
    let (cg, og) = (c / g, o / g);
    let [kh, kw] = kernel.map(|v| v as i64);
    let [sh, sw] = a.stride.map(|v| v as i64);
    let [dh, dw] = a.dilation.map(|v| v as i64);
    let [pt, pl, _, _] = a.padding.map(|v| v as i64);
    let t = IExpr::v(0);
    let kx = t.clone().rem(kw);
    let ky = t.clone().div(kw).rem(kh);
    let ci = t.clone().div(kw * kh).rem(cg);
    let oc = t.clone().div(kw * kh * cg);
    let cin = oc.clone().div(og).mul(cg).add(ci);
    let (bn, y, xo) = (IExpr::v(1), IExpr::v(2), IExpr::v(3));
    let iy = y.clone().mul(sh).add(ky.mul(dh)).add(IExpr::c(-pt));
    let ix = xo.clone().mul(sw).add(kx.mul(dw)).add(IExpr::c(-pl));
    let x_at = bn
        .clone()
        .mul(c)
        .add(cin)
        .mul(h)
        .add(iy.clone())
        .mul(w)
        .add(ix.clone());
    let inside = and(Cond::InRange(iy, h), Cond::InRange(ix, w));
    let dy_at = bn.mul(o).add(oc).mul(ho).add(y).mul(wo).add(xo);
    let acc = Expr::Local(0);
    let term = Expr::LoadIf(1, x_at, inside).mul(Expr::Load(2, dy_at));
    let extent = o * cg * kh * kw;
    let body = accumulate(
        extent,
        Expr::C(0.0),
        &[(1, n), (2, ho), (3, wo)],
        set_acc(acc.add(term)),
    );
    b.kernel(name, &[out.buf, x.buf, dy.buf], body, extent, 1)
}

/// One dx element per iteration: the cotangents of the windows that cover it. Only the
/// ⌈k/s⌉ windows per axis that can reach the cell are visited.
fn pool(b: &mut Builder, name: &str, p: &PoolAttrs, ins: &[Arg], out: &Arg) -> Result<(), String> {
    let (x, dy) = (&ins[0], &ins[1]);
    let [n, c, h, w] = nchw(x, "input")?;
    let [_, _, ho, wo] = nchw(dy, "cotangent")?;
    let [kh, kw] = p.kernel.map(|v| v as i64);
    let [sh, sw] = p.stride.map(|v| v as i64);
    let [pt, pl, pb, pr] = p.padding.map(|v| v as i64);
    let t = IExpr::v(0);
    let plane = t.clone().div(h * w);
    let iy = t.clone().div(w).rem(h);
    let ix = t.clone().rem(w);
    // Window (oy, ox) starts at (oy·s − p); it covers the cell when it starts at or before
    // the cell (true by construction of oy) and ends after it.
    let oy = iy
        .clone()
        .add(IExpr::c(pt))
        .div(sh)
        .add(IExpr::v(1).mul(-1));
    let ox = ix
        .clone()
        .add(IExpr::c(pl))
        .div(sw)
        .add(IExpr::v(2).mul(-1));
    let y0 = oy.clone().mul(sh).add(IExpr::c(-pt));
    let x0 = ox.clone().mul(sw).add(IExpr::c(-pl));
    let cover = and(
        and(Cond::InRange(oy.clone(), ho), Cond::InRange(ox.clone(), wo)),
        and(
            Cond::Le(iy.clone().add(IExpr::c(1)), y0.clone().add(IExpr::c(kh))),
            Cond::Le(ix.clone().add(IExpr::c(1)), x0.clone().add(IExpr::c(kw))),
        ),
    );
    let dy_at = plane.clone().mul(ho).add(oy).mul(wo).add(ox);
    let g = Expr::LoadIf(2, dy_at, cover.clone());
    let acc = Expr::Local(0);
    let mut window = vec![];
    let share = match p.kind {
        PoolKind::Avg => {
            // The forward divisor: cells of the window inside the input, or with
            // count_include_pad inside the padded input (never past it).
            let (lo_y, hi_y, lo_x, hi_x) = if p.count_include_pad {
                (-pt, h + pb, -pl, w + pr)
            } else {
                (0, h, 0, w)
            };
            let span = |start: &IExpr, k: i64, lo: i64, hi: i64| {
                Expr::FromInt(start.clone().add(IExpr::c(k)))
                    .min(Expr::C(hi as f32))
                    .sub(Expr::FromInt(start.clone()).max(Expr::C(lo as f32)))
            };
            let cnt = span(&y0, kh, lo_y, hi_y).mul(span(&x0, kw, lo_x, hi_x));
            g.div(cnt.max(Expr::C(1.0)))
        }
        PoolKind::Max => {
            // The first arg-max of the window in row-major order: a strictly greater value
            // moves it, as the interpreter's fold does.
            let (best, at) = (Expr::Local(1), Expr::Local(2));
            let cy = y0.clone().add(IExpr::v(3));
            let cx = x0.clone().add(IExpr::v(4));
            let inside = and(Cond::InRange(cy.clone(), h), Cond::InRange(cx.clone(), w));
            let pos = cy.mul(w).add(cx);
            let v = Expr::LoadIf(1, plane.clone().mul(h * w).add(pos.clone()), inside.clone());
            let better = and(
                inside,
                Cond::Lt(Box::new(best.clone()), Box::new(v.clone())),
            );
            window = vec![
                Stmt::Local {
                    id: 1,
                    init: Expr::C(f32::NEG_INFINITY),
                },
                Stmt::Local {
                    id: 2,
                    init: Expr::C(-1.0),
                },
                Stmt::seq(
                    3,
                    kh,
                    vec![Stmt::seq(
                        4,
                        kw,
                        vec![
                            Stmt::Assign {
                                id: 2,
                                val: select(better.clone(), Expr::FromInt(pos), at.clone()),
                            },
                            Stmt::Assign {
                                id: 1,
                                val: select(better, v, best),
                            },
                        ],
                    )],
                ),
            ];
            let me = Expr::FromInt(iy.mul(w).add(ix));
            let hit = Cond::Lt(Box::new(at.sub(me).un(Un::Abs)), Box::new(Expr::C(0.5)));
            select(hit, g, Expr::C(0.0))
        }
    };
    window.push(Stmt::Assign {
        id: 0,
        val: acc.clone().add(select(cover, share, Expr::C(0.0))),
    });
    let (ny, nx) = ((kh + sh - 1) / sh, (kw + sw - 1) / sw);
    let extent = n * c * h * w;
    let body = accumulate(extent, Expr::C(0.0), &[(1, ny), (2, nx)], window);
    b.kernel(name, &[out.buf, x.buf, dy.buf], body, extent, 16)
}

/// One output element per iteration: data plus every update whose target it is.
fn scatter_add(
    b: &mut Builder,
    name: &str,
    axis: i64,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    let (data, idx, upd) = (&ins[0], &ins[1], &ins[2]);
    let a = norm_axis(axis, data.shape.len()).map_err(|e| e.0)?;
    let (dst, ist) = (strides(&data.shape), strides(&idx.shape));
    let (t, k) = (IExpr::v(0), IExpr::v(1));
    let mut same = Vec::new();
    for d in 0..data.shape.len() {
        if d != a {
            same.push(eq(
                coord(&k, &idx.shape, &ist, d),
                coord(&t, &data.shape, &dst, d),
            ));
        }
    }
    let hits = index_hits(
        IExpr::Load(2, Box::new(k.clone())),
        coord(&t, &data.shape, &dst, a),
        data.shape[a],
    );
    let acc = Expr::Local(0);
    let mut add = acc.clone();
    for hit in hits {
        let c = same.iter().cloned().fold(hit, and);
        add = add.add(select(c, Expr::Load(3, k.clone()), Expr::C(0.0)));
    }
    let extent: i64 = data.shape.iter().product();
    let n_upd = idx.shape.iter().product();
    let body = accumulate(extent, Expr::Load(1, t), &[(1, n_upd)], set_acc(add));
    let args = [out.buf, data.buf, idx.buf, upd.buf];
    b.kernel(name, &args, body, extent, 16)
}

/// One element of the data gradient per iteration: the cotangent slices whose index is
/// its row.
fn gather(
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
    let (t, k) = (IExpr::v(0), IExpr::v(1));
    let o = t.clone().div(rows * inner);
    let r = t.clone().div(inner).rem(rows);
    let j = t.clone().rem(inner);
    let src = o.mul(ni).add(k.clone()).mul(inner).add(j);
    let acc = Expr::Local(0);
    let mut add = acc.clone();
    for hit in index_hits(IExpr::Load(1, Box::new(k)), r, rows) {
        add = add.add(select(hit, Expr::Load(2, src.clone()), Expr::C(0.0)));
    }
    let extent = outer * rows * inner;
    let body = accumulate(extent, Expr::C(0.0), &[(1, ni)], set_acc(add));
    b.kernel(name, &[out.buf, idx.buf, dy.buf], body, extent, 16)
}
