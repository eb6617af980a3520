//! Grouped convolutions. Depthwise: one plane per parallel iteration, the window an
//! unrolled sum. Strides 1 and 2 run over a zero-padded copy of the plane in scratch
//! (`depthwise_padded`); other strides split the output into the interior (plain loads the
//! vectorizer widens) and the border (loads guarded against the padding). Other groupings:
//! direct loops.

use super::contraction::Tail;
use super::padded::PaddedPlane;
use super::{Arg, Builder};
use crate::kernel::{Body, Cond, Expr, IExpr, Stmt};
use oar_ir::op::ConvAttrs;

/// Output positions `[lo, hi)` along one axis whose whole window is inside the input.
fn interior(out: i64, inp: i64, k: i64, stride: i64, dil: i64, pad: i64) -> (i64, i64) {
    let lo = ((pad + stride - 1) / stride).min(out);
    let last = inp - 1 + pad - (k - 1) * dil;
    let hi = if last < 0 {
        0
    } else {
        (last / stride + 1).min(out)
    };
    (lo, hi.max(lo))
}

/// Depthwise over a zero-padded copy of the plane in scratch: with the output computed on
/// the padded width, every tap is a flat offset, so one long loop per tap-sum vectorizes
/// fully; the valid columns are copied out with the epilogue. Stride 2 (dilation 1) splits
/// the padded plane into its four row/column parity phases, each half as wide and high:
/// then output (oy, ox) reads phase (ki mod 2, kj mod 2) at (oy + ki/2, ox + kj/2), again a
/// flat offset per tap.
#[allow(clippy::too_many_arguments)]
fn depthwise_padded(
    b: &mut Builder,
    name: &str,
    c: &ConvAttrs,
    x: &Arg,
    w: &Arg,
    out: &Arg,
    d: &[i64; 9],
    t: &Tail,
) -> Result<bool, String> {
    let [n, ci, h, wd, co, kh, kw, oh, ow] = *d;
    let Some(pp) = PaddedPlane::new(c, h, wd, kw) else {
        return Ok(false);
    };
    let (wq, padded) = (pp.wq, pp.size());
    let flat = oh * wq;
    if (padded + flat) * 4 > b.tiling.scratch_bytes() as i64 {
        return Ok(false);
    }
    let mult = co / ci;
    let plane = IExpr::v(0);
    let oc = plane.clone().rem(co);
    let in_plane = plane
        .clone()
        .div(co)
        .mul(ci * h * wd)
        .add(oc.clone().div(mult).mul(h * wd));
    let mut args = vec![out.buf, x.buf, w.buf];
    let (bias_at, res_at) = t.push_args(&mut args);
    let scratch = args.len();
    let i = IExpr::v(1);
    // 1. pad: P (zeroed once per call; borders stay 0) gets the plane's rows at
    //    P[(r + py)·wp + q + px] — a contiguous copy per row.
    let zero = Stmt::seq(
        1,
        padded,
        vec![Stmt::Store {
            buf: scratch,
            idx: i.clone(),
            val: Expr::C(0.0),
        }],
    );
    let r = IExpr::v(1);
    let row_in = in_plane.add(r.clone().mul(wd));
    let pad = Stmt::seq(1, h, pp.copy_row(r, 2, (1, row_in), (scratch, IExpr::c(0))));
    // 2. T[o] = Σ taps P[o + tap offset] · w, for o over oh rows of the (phase) width.
    let mut terms = Vec::new();
    for ki in 0..kh {
        for kj in 0..kw {
            let wi = oc.clone().mul(kh * kw).add(IExpr::c(ki * kw + kj));
            let tap = Expr::Load(scratch, i.clone().add(IExpr::c(pp.tap(ki, kj))));
            terms.push(tap.mul(Expr::Load(2, wi)));
        }
    }
    let sum = Expr::sum_of(terms);
    let taps = Stmt::seq(
        1,
        flat,
        vec![Stmt::Store {
            buf: scratch,
            idx: i.clone().add(IExpr::c(padded)),
            val: sum,
        }],
    );
    // 3. out[oy, ox] = act(T[oy·wp + ox] + bias + residual).
    let (oy, ox) = (IExpr::v(1), IExpr::v(2));
    let dst = plane
        .clone()
        .mul(oh * ow)
        .add(oy.clone().mul(ow))
        .add(ox.clone());
    let mut v = Expr::Load(scratch, oy.mul(wq).add(ox).add(IExpr::c(padded)));
    if let Some(k) = bias_at {
        v = v.add(Expr::Load(k, oc.clone()));
    }
    if let Some(k) = res_at {
        v = v.add(Expr::Load(k, dst.clone()));
    }
    let val = t.activate(v);
    let copy = Stmt::seq(
        1,
        oh,
        vec![Stmt::seq(
            2,
            ow,
            vec![Stmt::Store {
                buf: 0,
                idx: dst,
                val,
            }],
        )],
    );
    let body = vec![zero, Stmt::par(n * co, vec![pad, taps, copy])];
    b.kernel(name, &args, Body::Loops(body), n * co, 4)?;
    Ok(true)
}

/// `d` = [n, ci, h, w, co, kh, kw, oh, ow].
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    b: &mut Builder,
    name: &str,
    c: &ConvAttrs,
    x: &Arg,
    w: &Arg,
    out: &Arg,
    d: &[i64; 9],
    t: &Tail,
) -> Result<(), String> {
    if depthwise_padded(b, name, c, x, w, out, d, t)? {
        return Ok(());
    }
    let [n, ci, h, wd, co, kh, kw, oh, ow] = *d;
    let mult = co / ci;
    let (sy, sx) = (c.stride[0] as i64, c.stride[1] as i64);
    let (dy, dx) = (c.dilation[0] as i64, c.dilation[1] as i64);
    let (py, px) = (c.padding[0] as i64, c.padding[1] as i64);
    let plane = IExpr::v(0);
    let nn = plane.clone().div(co);
    let oc = plane.clone().rem(co);
    let in_plane = nn.mul(ci * h * wd).add(oc.clone().div(mult).mul(h * wd));
    let mut args = vec![out.buf, x.buf, w.buf];
    let (bias_at, res_at) = t.push_args(&mut args);
    let (ry, rx) = (
        interior(oh, h, kh, sy, dy, py),
        interior(ow, wd, kw, sx, dx, px),
    );
    let spans = |lo: i64, hi: i64, n: i64| -> Vec<(i64, i64, bool)> {
        [(0, lo, true), (lo, hi, false), (hi, n, true)]
            .into_iter()
            .filter(|s| s.1 > s.0)
            .collect()
    };
    let mut regions = Vec::new();
    for (y0, y1, gy) in spans(ry.0, ry.1, oh) {
        for (x0, x1, gx) in spans(rx.0, rx.1, ow) {
            let oy = IExpr::v(1).add(IExpr::c(y0));
            let ox = IExpr::v(2).add(IExpr::c(x0));
            let mut terms: Vec<Expr> = bias_at
                .map(|k| Expr::Load(k, oc.clone()))
                .into_iter()
                .collect();
            for ki in 0..kh {
                for kj in 0..kw {
                    let iy = oy.clone().mul(sy).add(IExpr::c(ki * dy - py));
                    let ix = ox.clone().mul(sx).add(IExpr::c(kj * dx - px));
                    let at = in_plane.clone().add(iy.clone().mul(wd)).add(ix.clone());
                    let v = if gy || gx {
                        let inside = Cond::And(
                            Box::new(Cond::InRange(iy, h)),
                            Box::new(Cond::InRange(ix, wd)),
                        );
                        Expr::LoadIf(1, at, inside)
                    } else {
                        Expr::Load(1, at)
                    };
                    let wi = oc.clone().mul(kh * kw).add(IExpr::c(ki * kw + kj));
                    terms.push(v.mul(Expr::Load(2, wi)));
                }
            }
            let mut sum = Expr::sum_of(terms);
            let dst = plane.clone().mul(oh * ow).add(oy.mul(ow)).add(ox);
            if let Some(k) = res_at {
                sum = sum.add(Expr::Load(k, dst.clone()));
            }
            let val = t.activate(sum);
            regions.push(Stmt::seq(
                1,
                y1 - y0,
                vec![Stmt::seq(
                    2,
                    x1 - x0,
                    vec![Stmt::Store {
                        buf: 0,
                        idx: dst,
                        val,
                    }],
                )],
            ));
        }
    }
    let body = vec![Stmt::par(n * co, regions)];
    b.kernel(name, &args, Body::Loops(body), n * co, 4)
}

/// Grouped (depthwise included) convolution as direct loops: one output plane per
/// parallel iteration, accumulating over the group's input channels and the window.
#[allow(clippy::too_many_arguments)]
pub(super) fn direct_conv(
    b: &mut Builder,
    name: &str,
    c: &ConvAttrs,
    x: &Arg,
    w: &Arg,
    out: &Arg,
    d: &[i64; 10],
    t: Tail,
) -> Result<(), String> {
    let [n, ci, h, wd, co, cig, kh, kw, oh, ow] = *d;
    let g = c.groups as i64;
    let cog = co / g;
    let plane = IExpr::v(0);
    let (oy, ox, icv, ki, kj) = (
        IExpr::v(1),
        IExpr::v(2),
        IExpr::v(3),
        IExpr::v(4),
        IExpr::v(5),
    );
    let nn = plane.clone().div(co);
    let oc = plane.clone().rem(co);
    let cin = oc.clone().div(cog).mul(cig).add(icv.clone());
    let iy = oy
        .clone()
        .mul(c.stride[0] as i64)
        .add(ki.clone().mul(c.dilation[0] as i64))
        .add(IExpr::c(-(c.padding[0] as i64)));
    let ix = ox
        .clone()
        .mul(c.stride[1] as i64)
        .add(kj.clone().mul(c.dilation[1] as i64))
        .add(IExpr::c(-(c.padding[1] as i64)));
    let src = nn
        .mul(ci * h * wd)
        .add(cin.mul(h * wd))
        .add(iy.clone().mul(wd))
        .add(ix.clone());
    let widx = oc
        .clone()
        .mul(cig * kh * kw)
        .add(icv.mul(kh * kw))
        .add(ki.mul(kw))
        .add(kj);
    let cond = Cond::And(
        Box::new(Cond::InRange(iy, h)),
        Box::new(Cond::InRange(ix, wd)),
    );
    let acc = Expr::Local(0);
    let dst = plane.clone().mul(oh * ow).add(oy.mul(ow)).add(ox);
    // Buffers: 0 out, 1 x, 2 w, then bias, residual.
    let mut args = vec![out.buf, x.buf, w.buf];
    let mut val = acc.clone();
    if let Some(bias) = &t.bias {
        args.push(bias.buf);
        val = val.add(Expr::Load(args.len() - 1, oc.clone()));
    }
    if let Some(res) = &t.residual {
        args.push(res.buf);
        val = val.add(Expr::Load(args.len() - 1, dst.clone()));
    }
    val = t.activate(val);
    let window = Stmt::seq(
        3,
        cig,
        vec![Stmt::seq(
            4,
            kh,
            vec![Stmt::seq(
                5,
                kw,
                vec![Stmt::Assign {
                    id: 0,
                    val: acc
                        .clone()
                        .add(Expr::LoadIf(1, src, cond).mul(Expr::Load(2, widx))),
                }],
            )],
        )],
    );
    let body = vec![Stmt::par(
        n * co,
        vec![Stmt::seq(
            1,
            oh,
            vec![Stmt::seq(
                2,
                ow,
                vec![
                    Stmt::Local {
                        id: 0,
                        init: Expr::C(0.0),
                    },
                    window,
                    Stmt::Store {
                        buf: 0,
                        idx: dst,
                        val,
                    },
                ],
            )],
        )],
    )];
    b.kernel(name, &args, Body::Loops(body), n * co, 4)
}
