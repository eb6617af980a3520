//! Zero-padded copies of image planes in which every tap of a convolution window is a flat
//! offset from the output position, and the dense convolution that runs over them when
//! the window sum is small (a network's stem: 3 channels × 3 × 3).

use super::contraction::Tail;
use super::{Arg, Builder};
use crate::kernel::{Body, Expr, IExpr, Stmt};
use oar_ir::op::ConvAttrs;
use oar_ir::DType;

/// The layout of one padded plane. Stride 1: the plane with its padding, `wq` = padded
/// width. Stride 2 (dilation 1): the padded plane split into its four row/column parity
/// phases, each `wq` = ⌈padded width / 2⌉ wide; output (oy, ox) then reads phase
/// (ki mod 2, kj mod 2) at (oy + ki/2, ox + kj/2).
pub(super) struct PaddedPlane {
    pub phased: bool,
    /// Row width of the (phase) layout.
    pub wq: i64,
    /// Floats per phase, with slack for the taps of discarded columns.
    pub pz: i64,
    pub phases: i64,
    h: i64,
    wd: i64,
    py: i64,
    px: i64,
    wp: i64,
    dy: i64,
    dx: i64,
}

impl PaddedPlane {
    /// The layout for an `h × wd` input under `c` with a window `kw` wide; `None` for
    /// strides other than 1 and 2, or stride 2 with dilation.
    pub fn new(c: &ConvAttrs, h: i64, wd: i64, kw: i64) -> Option<PaddedPlane> {
        let phased = match (c.stride, c.dilation) {
            ([1, 1], _) => false,
            ([2, 2], [1, 1]) => true,
            _ => return None,
        };
        Some(Self::layout(c, h, wd, kw, phased))
    }

    /// The plane with its padding, unsplit, whatever the stride: for kernels that index
    /// the padded rows themselves (`wq` is then the padded width).
    pub fn unphased(c: &ConvAttrs, h: i64, wd: i64, kw: i64) -> PaddedPlane {
        Self::layout(c, h, wd, kw, false)
    }

    fn layout(c: &ConvAttrs, h: i64, wd: i64, kw: i64, phased: bool) -> PaddedPlane {
        let (py, px) = (c.padding[0] as i64, c.padding[1] as i64);
        let hp = h + py + c.padding[2] as i64;
        let wp = wd + px + c.padding[3] as i64;
        let (dy, dx) = (c.dilation[0] as i64, c.dilation[1] as i64);
        let (wq, pz, phases) = if phased {
            let (hq, wq) = ((hp + 1) / 2, (wp + 1) / 2);
            (wq, hq * wq + wq + 8, 4)
        } else {
            (wp, hp * wp + (kw - 1) * dx + 8, 1)
        };
        PaddedPlane {
            phased,
            wq,
            pz,
            phases,
            h,
            wd,
            py,
            px,
            wp,
            dy,
            dx,
        }
    }

    /// Floats in one padded plane.
    pub fn size(&self) -> i64 {
        self.pz * self.phases
    }

    /// Offset of tap (ki, kj) from the output position's flat index `oy·wq + ox`.
    pub fn tap(&self, ki: i64, kj: i64) -> i64 {
        if self.phased {
            ((ki % 2) * 2 + kj % 2) * self.pz + (ki / 2) * self.wq + kj / 2
        } else {
            ki * self.dy * self.wp + kj * self.dx
        }
    }

    /// Copies input row `r` (starting at `row_in` in buffer `src`) into the padded plane
    /// at `dst_base` of buffer `dst`, looping variable `q` along the row. Borders are not
    /// written: the plane must start zeroed.
    pub fn copy_row(
        &self,
        r: IExpr,
        q: u32,
        (src, row_in): (usize, IExpr),
        (dst, dst_base): (usize, IExpr),
    ) -> Vec<Stmt> {
        let qv = IExpr::v(q);
        let pr = r.add(IExpr::c(self.py));
        if !self.phased {
            let at = dst_base
                .add(pr.mul(self.wp))
                .add(qv.clone())
                .add(IExpr::c(self.px));
            return vec![Stmt::seq(
                q,
                self.wd,
                vec![Stmt::Store {
                    buf: dst,
                    idx: at,
                    val: Expr::Load(src, row_in.add(qv)),
                }],
            )];
        }
        // Padded row pr, column parity par: phase (pr mod 2, par) gets input columns
        // par − px + 2·xq for the xq that land inside the input — one strided copy each.
        let mut parts = Vec::new();
        for par in 0..2 {
            let lo = (self.px - par + 1).div_euclid(2).max(0);
            let hi = (self.wd - 1 + self.px - par).div_euclid(2) + 1;
            if hi <= lo {
                continue;
            }
            let xq = qv.clone().add(IExpr::c(lo));
            let at = dst_base
                .clone()
                .add(pr.clone().rem(2).mul(2).add(IExpr::c(par)).mul(self.pz))
                .add(pr.clone().div(2).mul(self.wq))
                .add(xq.clone());
            let from = row_in.clone().add(xq.mul(2)).add(IExpr::c(par - self.px));
            parts.push(Stmt::seq(
                q,
                hi - lo,
                vec![Stmt::Store {
                    buf: dst,
                    idx: at,
                    val: Expr::Load(src, from),
                }],
            ));
        }
        parts
    }

    /// A kernel copying `planes` consecutive `h × wd` planes of buffer `x`
    /// into a temp of this layout, one input row per parallel iteration; returns the temp.
    /// The temp is zeroed once and its borders are never written, so they stay zero.
    pub fn copy_planes(
        &self,
        b: &mut Builder,
        name: &str,
        x: usize,
        planes: i64,
    ) -> Result<usize, String> {
        let xp = b.temp(
            &format!("{name}.padded"),
            &[planes, self.size()],
            DType::F32,
        );
        b.program.zeroed.push(xp);
        let row = IExpr::v(0);
        let plane = row.clone().div(self.h);
        let copy = self.copy_row(
            row.clone().rem(self.h),
            1,
            (1, row.mul(self.wd)),
            (0, plane.mul(self.size())),
        );
        let rows = planes * self.h;
        let body = vec![Stmt::par(rows, copy)];
        b.kernel(
            &format!("{name}.pad"),
            &[xp, x],
            Body::Loops(body),
            rows,
            32,
        )?;
        Ok(xp)
    }
}

/// The widest window sum (input channels × kh × kw) run directly; deeper ones go through
/// im2col and the GEMM, which reuses each loaded input across output channels.
const MAX_DIRECT_TAPS: i64 = 32;

/// A dense convolution whose window sum is small (`ci·kh·kw` ≤ 32) and whose output rows
/// are wide enough to vectorize: im2col would copy the input kh·kw times to feed a GEMM too
/// shallow to pay for it. Instead the input is padded once into a zeroed temp (split into
/// parity phases at stride 2), and each output plane is one loop per row over the unrolled
/// window sum, the epilogue applied as it stores. Returns whether it applied.
/// `d` = [n, ci, h, w, co, kh, kw, oh, ow].
#[allow(clippy::too_many_arguments)]
pub(super) fn small_window_conv(
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
    if c.groups != 1 || ci * kh * kw > MAX_DIRECT_TAPS || kh * kw == 1 || ow < 16 {
        return Ok(false);
    }
    let Some(pp) = PaddedPlane::new(c, h, wd, kw) else {
        return Ok(false);
    };
    // 1. The padded (phase-split) copy.
    let xp = pp.copy_planes(b, name, x.buf, n * ci)?;
    // 2. out[n, o, oy, ox] = act(Σ_{c, ki, kj} P[n, c][oy·wq + ox + tap] · w[o, c, ki, kj]
    //    + bias + residual), one output plane per parallel iteration. (Blocks of four
    //    output channels sharing each input load measured slower: their 108 weights spill.)
    let mut args = vec![out.buf, xp, w.buf];
    let (bias_at, res_at) = t.push_args(&mut args);
    let plane = IExpr::v(0);
    let (nn, oc) = (plane.clone().div(co), plane.clone().rem(co));
    let (oy, ox) = (IExpr::v(1), IExpr::v(2));
    let at = oy.clone().mul(pp.wq).add(ox.clone());
    let mut terms = Vec::new();
    for cc in 0..ci {
        let base = nn.clone().mul(ci).add(IExpr::c(cc)).mul(pp.size());
        for ki in 0..kh {
            for kj in 0..kw {
                let tap = base.clone().add(at.clone()).add(IExpr::c(pp.tap(ki, kj)));
                let wi = oc
                    .clone()
                    .mul(ci * kh * kw)
                    .add(IExpr::c((cc * kh + ki) * kw + kj));
                terms.push(Expr::Load(1, tap).mul(Expr::Load(2, wi)));
            }
        }
    }
    let mut sum = Expr::sum_of(terms);
    let dst = plane.mul(oh * ow).add(oy.mul(ow)).add(ox);
    if let Some(k) = bias_at {
        sum = sum.add(Expr::Load(k, oc));
    }
    if let Some(k) = res_at {
        sum = sum.add(Expr::Load(k, dst.clone()));
    }
    let store = Stmt::Store {
        buf: 0,
        idx: dst,
        val: t.activate(sum),
    };
    let blocks = n * co;
    let body = vec![Stmt::par(
        blocks,
        vec![Stmt::seq(1, oh, vec![Stmt::seq(2, ow, vec![store])])],
    )];
    b.kernel(name, &args, Body::Loops(body), blocks, 1)?;
    Ok(true)
}
