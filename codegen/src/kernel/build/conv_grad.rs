//! Fast convolution gradients. The reference loop nests in `grad_ops` compute one output
//! element per iteration with a guarded, scalar window sum; the training step spends most
//! of its backward time there. Here:
//!
//! - the data gradient (`conv_transpose2d`) is a forward convolution of the cotangent —
//!   zero-inserted between rows and columns when the stride is above 1 — with the weight
//!   flipped in both spatial axes and its two channel axes swapped per group, padded by
//!   `window − 1 − pad`. It then runs through the forward kernels: 1×1 GEMM, im2col + GEMM,
//!   the depthwise kernels.
//! - the dense weight gradient is one GEMM: `dW[o, (c, ki, kj)] = Σ_(n, p) dy[n, o, p] ·
//!   col[n, p, (c, ki, kj)]` with `col` the input's windows written transposed (im2colᵀ),
//!   split over a few batch slices so that both threads have work, then the slices summed.
//! - the depthwise weight gradient: one channel per parallel iteration, each tap a sum
//!   over the padded input plane's rows that LLVM vectorizes (reassociation is on).
//!
//! Each function returns whether it applied; the caller falls back to the reference kernel.

use super::padded::PaddedPlane;
use super::{Arg, Builder};
use crate::kernel::{Body, Cond, Expr, IExpr, Stmt};
use oar_ir::op::{ConvAttrs, ConvTransposeAttrs, MatMulAttrs, Op};
use oar_ir::DType;

fn nchw(a: &Arg) -> Option<[i64; 4]> {
    match a.shape.as_slice() {
        &[n, c, h, w] => Some([n, c, h, w]),
        _ => None,
    }
}

fn eq0(e: IExpr, m: i64) -> Cond {
    let r = e.rem(m);
    Cond::And(
        Box::new(Cond::Le(r.clone(), IExpr::c(0))),
        Box::new(Cond::Le(IExpr::c(0), r)),
    )
}

fn f32_temp(b: &mut Builder, name: &str, shape: &[i64]) -> Arg {
    Arg {
        buf: b.temp(name, shape, DType::F32),
        shape: shape.to_vec(),
        dtype: DType::F32,
    }
}

/// `conv_transpose2d(dy, w)` (bias optional) as a forward convolution; see the module doc.
pub(super) fn data_grad(
    b: &mut Builder,
    name: &str,
    t: &ConvTransposeAttrs,
    ins: &[Arg],
    out: &Arg,
) -> Result<bool, String> {
    let a = &t.conv;
    let (dy, w) = (&ins[0], &ins[1]);
    let (Some([n, o, ho, wo]), Some([wo_ch, og, kh, kw]), Some([on, c, h, wd])) =
        (nchw(dy), nchw(w), nchw(out))
    else {
        return Ok(false);
    };
    let g = a.groups as i64;
    if g == 0 || wo_ch != o || on != n || o % g != 0 || og * g != c {
        return Ok(false);
    }
    let [sh, sw] = a.stride.map(|v| v as i64);
    let [dh, dw] = a.dilation.map(|v| v as i64);
    let [pt, pl, _, _] = a.padding.map(|v| v as i64);
    let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
    // The zero-inserted cotangent's size, and the padding that gives the output's size.
    let (hd, wdd) = ((ho - 1) * sh + 1, (wo - 1) * sw + 1);
    let (qt, ql) = (eh - 1 - pt, ew - 1 - pl);
    let (qb, qr) = (h - hd - qt + eh - 1, wd - wdd - ql + ew - 1);
    if qt < 0 || ql < 0 || qb < 0 || qr < 0 || sh < 1 || sw < 1 {
        return Ok(false);
    }
    // 1. The cotangent, zero-inserted at stride > 1 (every element written: no zeroing).
    let src = if sh == 1 && sw == 1 {
        dy.clone()
    } else {
        let up = f32_temp(b, &format!("{name}.dilated"), &[n, o, hd, wdd]);
        let (row, x) = (IExpr::v(0), IExpr::v(1));
        let (plane, y) = (row.clone().div(hd), row.clone().rem(hd));
        let at = plane
            .mul(ho)
            .add(y.clone().div(sh))
            .mul(wo)
            .add(x.clone().div(sw));
        let hit = Cond::And(Box::new(eq0(y, sh)), Box::new(eq0(x.clone(), sw)));
        let body = vec![Stmt::par(
            n * o * hd,
            vec![Stmt::seq(
                1,
                wdd,
                vec![Stmt::Store {
                    buf: 0,
                    idx: row.mul(wdd).add(x),
                    val: Expr::LoadIf(1, at, hit),
                }],
            )],
        )];
        let rows = n * o * hd;
        b.kernel(
            &format!("{name}.dilate"),
            &[up.buf, dy.buf],
            Body::Loops(body),
            rows,
            32,
        )?;
        up
    };
    // 2. W'[gi·og + j, i, ki, kj] = W[gi·(o/g) + i, j, kh−1−ki, kw−1−kj]: the forward
    //    weight of the equivalent convolution, [c, o/g, kh, kw].
    let ig = o / g;
    let wf = f32_temp(b, &format!("{name}.wflip"), &[c, ig, kh, kw]);
    let e = IExpr::v(0);
    let kj = e.clone().rem(kw);
    let ki = e.clone().div(kw).rem(kh);
    let i = e.clone().div(kw * kh).rem(ig);
    let oc = e.clone().div(kw * kh * ig);
    let (gi, j) = (oc.clone().div(og), oc.rem(og));
    let from = gi
        .mul(ig)
        .add(i)
        .mul(og)
        .add(j)
        .mul(kh)
        .add(ki.mul(-1).add(IExpr::c(kh - 1)))
        .mul(kw)
        .add(kj.mul(-1).add(IExpr::c(kw - 1)));
    let total = c * ig * kh * kw;
    let body = vec![Stmt::par(
        total,
        vec![Stmt::Store {
            buf: 0,
            idx: e,
            val: Expr::Load(1, from),
        }],
    )];
    b.kernel(
        &format!("{name}.wflip"),
        &[wf.buf, w.buf],
        Body::Loops(body),
        total,
        256,
    )?;
    // 3. The forward convolution (the bias, per output channel, is the conv's bias).
    let conv = ConvAttrs {
        stride: [1, 1],
        padding: [qt, ql, qb, qr].map(|v| v as u64),
        dilation: a.dilation,
        groups: a.groups,
    };
    let mut args = vec![src, wf];
    args.extend(ins.get(2).cloned());
    super::contraction::lower(b, name, &Op::Conv2d(conv), &args, out)?;
    Ok(true)
}

/// `conv2d_grad_weight(x, dy)` for `groups == 1` as im2colᵀ and one (batch-sliced) GEMM.
pub(super) fn dense_weight_grad(
    b: &mut Builder,
    name: &str,
    a: &ConvAttrs,
    [kh, kw]: [i64; 2],
    ins: &[Arg],
    out: &Arg,
) -> Result<bool, String> {
    let (x, dy) = (&ins[0], &ins[1]);
    let (Some([n, c, h, wd]), Some([dn, o, ho, wo])) = (nchw(x), nchw(dy)) else {
        return Ok(false);
    };
    if a.groups != 1 || dn != n || out.shape.iter().product::<i64>() != o * c * kh * kw {
        return Ok(false);
    }
    let p = ho * wo;
    let kk = c * kh * kw;
    // Slices of the batch, one GEMM each (parallel units for small layers), then summed.
    let slices = [4, 2, 1]
        .into_iter()
        .find(|s| n % s == 0 && n >= *s)
        .unwrap_or(1);
    let per = n / slices;
    // 1. colT[n, q, (ci, ki, kj)] = x[n, ci, oy·s − pt + ki·d, ox·s − pl + kj·d], q = (oy, ox).
    let one_by_one = kh == 1 && kw == 1 && a.stride == [1, 1] && a.padding == [0; 4];
    let col = f32_temp(b, &format!("{name}.im2colT"), &[slices, per * p, kk]);
    {
        let row = IExpr::v(0);
        let (nn, q) = (row.clone().div(p), row.clone().rem(p));
        let (oy, ox) = (q.clone().div(wo), q.rem(wo));
        let r = IExpr::v(1);
        let ci = r.clone().div(kh * kw);
        let ki = r.clone().div(kw).rem(kh);
        let kj = r.clone().rem(kw);
        let [sh, sw] = a.stride.map(|v| v as i64);
        let [dh, dw] = a.dilation.map(|v| v as i64);
        let [pt, pl, _, _] = a.padding.map(|v| v as i64);
        let iy = oy.mul(sh).add(ki.mul(dh)).add(IExpr::c(-pt));
        let ix = ox.mul(sw).add(kj.mul(dw)).add(IExpr::c(-pl));
        let at = nn
            .mul(c)
            .add(ci)
            .mul(h)
            .add(iy.clone())
            .mul(wd)
            .add(ix.clone());
        let val = if one_by_one {
            Expr::Load(1, at)
        } else {
            let inside = Cond::And(
                Box::new(Cond::InRange(iy, h)),
                Box::new(Cond::InRange(ix, wd)),
            );
            Expr::LoadIf(1, at, inside)
        };
        let body = vec![Stmt::par(
            n * p,
            vec![Stmt::seq(
                1,
                kk,
                vec![Stmt::Store {
                    buf: 0,
                    idx: row.mul(kk).add(r),
                    val,
                }],
            )],
        )];
        b.kernel(
            &format!("{name}.im2colT"),
            &[col.buf, x.buf],
            Body::Loops(body),
            n * p,
            16,
        )?;
    }
    // 2. dyT[s, o, (n', q)] = dy[s·per + n', o, q]: the cotangent with its batch and channel
    //    axes swapped within each slice.
    let dyt = f32_temp(b, &format!("{name}.dyT"), &[slices, o, per * p]);
    {
        let row = IExpr::v(0);
        let (s, oc) = (row.clone().div(o), row.clone().rem(o));
        let (m, q) = (IExpr::v(1), IExpr::v(2));
        let from = s
            .mul(per)
            .add(m.clone())
            .mul(o)
            .add(oc)
            .mul(p)
            .add(q.clone());
        let body = vec![Stmt::par(
            slices * o,
            vec![Stmt::seq(
                1,
                per,
                vec![Stmt::seq(
                    2,
                    p,
                    vec![Stmt::Store {
                        buf: 0,
                        idx: row.mul(per).add(m).mul(p).add(q),
                        val: Expr::Load(1, from),
                    }],
                )],
            )],
        )];
        b.kernel(
            &format!("{name}.dyT"),
            &[dyt.buf, dy.buf],
            Body::Loops(body),
            slices * o,
            1,
        )?;
    }
    // 3. The GEMM per slice, then the sum over slices.
    let mm = Op::MatMul(MatMulAttrs::default());
    if slices == 1 {
        let target = Arg {
            shape: vec![1, o, kk],
            ..out.clone()
        };
        super::contraction::lower(b, name, &mm, &[dyt, col], &target)?;
        return Ok(true);
    }
    let part = f32_temp(b, &format!("{name}.parts"), &[slices, o, kk]);
    super::contraction::lower(b, name, &mm, &[dyt, col], &part)?;
    let e = IExpr::v(0);
    let terms = (0..slices).map(|s| Expr::Load(1, e.clone().add(IExpr::c(s * o * kk))));
    let body = vec![Stmt::par(
        o * kk,
        vec![Stmt::Store {
            buf: 0,
            idx: e.clone(),
            val: Expr::sum_of(terms),
        }],
    )];
    b.kernel(
        &format!("{name}.sum"),
        &[out.buf, part.buf],
        Body::Loops(body),
        o * kk,
        256,
    )?;
    Ok(true)
}

/// `conv2d_grad_weight(x, dy)` of a depthwise convolution (one input channel per group,
/// any channel multiplier), strides 1 and 2 or any other, over a zero-padded copy of x.
pub(super) fn depthwise_weight_grad(
    b: &mut Builder,
    name: &str,
    a: &ConvAttrs,
    [kh, kw]: [i64; 2],
    ins: &[Arg],
    out: &Arg,
) -> Result<bool, String> {
    let (x, dy) = (&ins[0], &ins[1]);
    let (Some([n, c, h, wd]), Some([dn, o, ho, wo])) = (nchw(x), nchw(dy)) else {
        return Ok(false);
    };
    let g = a.groups as i64;
    if g != c || dn != n || o % c != 0 || out.shape.iter().product::<i64>() != o * kh * kw {
        return Ok(false);
    }
    let mult = o / c;
    let pp = PaddedPlane::unphased(a, h, wd, kw);
    let xp = pp.copy_planes(b, name, x.buf, n * c)?;
    let [sh, sw] = a.stride.map(|v| v as i64);
    let [dh, dw] = a.dilation.map(|v| v as i64);
    // Per output channel (the parallel loop): one local per tap, summed over the batch and
    // the output rows; each tap's row sum is an inner loop over contiguous dy.
    let oc = IExpr::v(0);
    let (nn, oy, ox) = (IExpr::v(1), IExpr::v(2), IExpr::v(3));
    let x_plane = nn.clone().mul(c).add(oc.clone().div(mult)).mul(pp.size());
    let dy_row = nn.mul(o).add(oc.clone()).mul(ho).add(oy.clone()).mul(wo);
    let mut per_row = Vec::new();
    let mut body = Vec::new();
    for ki in 0..kh {
        for kj in 0..kw {
            let tap = (ki * kw + kj) as u32;
            body.push(Stmt::Local {
                id: tap,
                init: Expr::C(0.0),
            });
            let at = x_plane
                .clone()
                .add(oy.clone().mul(sh).add(IExpr::c(ki * dh)).mul(pp.wq))
                .add(ox.clone().mul(sw).add(IExpr::c(kj * dw)));
            let term = Expr::Load(1, at).mul(Expr::Load(2, dy_row.clone().add(ox.clone())));
            per_row.push(Stmt::seq(
                3,
                wo,
                vec![Stmt::Assign {
                    id: tap,
                    val: Expr::Local(tap).add(term),
                }],
            ));
        }
    }
    body.push(Stmt::seq(1, n, vec![Stmt::seq(2, ho, per_row)]));
    for t in 0..kh * kw {
        body.push(Stmt::Store {
            buf: 0,
            idx: oc.clone().mul(kh * kw).add(IExpr::c(t)),
            val: Expr::Local(t as u32),
        });
    }
    b.kernel(
        name,
        &[out.buf, xp, dy.buf],
        Body::Loops(vec![Stmt::par(o, body)]),
        o,
        1,
    )?;
    Ok(true)
}
