//! Modulated deformable convolution (DCNv2) and its gradients, torchvision's
//! `deform_conv2d` semantics: every tap samples the input bilinearly at its displaced
//! position (corners outside the image read zero, a position at or past −1/H or W reads
//! zero), scales the sample by its mask, and the samples contract with the weight as a
//! convolution would.

use super::float::{by_float, floats, Real};
use super::{err, Res};
use crate::tensor::HostTensor;
use oar_ir::op::DeformConvAttrs;

/// Sizes of one deformable convolution.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    groups: usize,
    dg: usize,
}

fn dims(x: &HostTensor, w: &HostTensor, offset: &HostTensor, a: &DeformConvAttrs) -> Res<Dims> {
    let (&[n, c, h, wi], &[o, _, kh, kw], &[_, _, ho, wo]) =
        (&x.shape[..], &w.shape[..], &offset.shape[..])
    else {
        return err(format!(
            "needs NCHW input, OIHW weight and NCHW offset, found {}, {}, {}",
            x.describe(),
            w.describe(),
            offset.describe()
        ));
    };
    Ok(Dims {
        n,
        c,
        h,
        w: wi,
        o,
        kh,
        kw,
        ho,
        wo,
        groups: a.conv.groups.max(1) as usize,
        dg: a.deform_groups.max(1) as usize,
    })
}

/// The four corners of a bilinear sample at `(py, px)` in an `h × w` plane: each a flat
/// index (None outside) and its weight, and the weights' derivatives by py and px.
struct Sample<T> {
    corners: [(Option<usize>, T, T, T); 4],
}

fn sample<T: Real>(py: T, px: T, h: usize, w: usize) -> Sample<T> {
    let zero = (None, T::zero(), T::zero(), T::zero());
    let (hf, wf) = (T::c(h as f64), T::c(w as f64));
    if py <= -T::one() || py >= hf || px <= -T::one() || px >= wf {
        return Sample { corners: [zero; 4] };
    }
    let (y0, x0) = (py.floor(), px.floor());
    let (ly, lx) = (py - y0, px - x0);
    let (hy, hx) = (T::one() - ly, T::one() - lx);
    let at = |y: T, x: T| -> Option<usize> {
        let inside = y >= T::zero() && x >= T::zero() && y < hf && x < wf;
        inside.then(|| y.to_usize().unwrap_or(0) * w + x.to_usize().unwrap_or(0))
    };
    let one = T::one();
    Sample {
        corners: [
            (at(y0, x0), hy * hx, -hx, -hy),
            (at(y0, x0 + one), hy * lx, -lx, hy),
            (at(y0 + one, x0), ly * hx, hx, -ly),
            (at(y0 + one, x0 + one), ly * lx, lx, ly),
        ],
    }
}

/// Where tap `(ki, kj)` of output `(oy, ox)` samples, before its offset.
fn base<T: Real>(a: &DeformConvAttrs, oy: usize, ox: usize, ki: usize, kj: usize) -> (T, T) {
    let c = &a.conv;
    let y = (oy * c.stride[0] as usize + ki * c.dilation[0] as usize) as f64 - c.padding[0] as f64;
    let x = (ox * c.stride[1] as usize + kj * c.dilation[1] as usize) as f64 - c.padding[1] as f64;
    (T::c(y), T::c(x))
}

/// Flat indices of tap `k`'s (dy, dx) offsets and mask for input channel `ch` at output
/// pixel `p` of image `n`.
fn tap_index(d: &Dims, n: usize, ch: usize, k: usize, p: usize) -> (usize, usize, usize) {
    let taps = d.kh * d.kw;
    let g = ch / (d.c / d.dg);
    let plane = d.ho * d.wo;
    let off = ((n * d.dg + g) * 2 * taps + 2 * k) * plane + p;
    (off, off + plane, ((n * d.dg + g) * taps + k) * plane + p)
}

/// The modulated samples `cols[n][c·K + k][p]` (mask applied) and the samples' corner
/// tables, shared by the forward and the gradients.
fn columns<T: Real>(d: &Dims, a: &DeformConvAttrs, x: &[T], offset: &[T], mask: &[T]) -> Vec<T> {
    let (taps, plane) = (d.kh * d.kw, d.ho * d.wo);
    let mut cols = vec![T::zero(); d.n * d.c * taps * plane];
    for n in 0..d.n {
        for ch in 0..d.c {
            let img = &x[(n * d.c + ch) * d.h * d.w..(n * d.c + ch + 1) * d.h * d.w];
            for k in 0..taps {
                for p in 0..plane {
                    let (oi, oj, mi) = tap_index(d, n, ch, k, p);
                    let (by, bx) = base::<T>(a, p / d.wo, p % d.wo, k / d.kw, k % d.kw);
                    let s = sample(by + offset[oi], bx + offset[oj], d.h, d.w);
                    let v: T = s
                        .corners
                        .iter()
                        .filter_map(|&(i, wt, _, _)| i.map(|i| wt * img[i]))
                        .fold(T::zero(), |acc, v| acc + v);
                    cols[((n * d.c + ch) * taps + k) * plane + p] = v * mask[mi];
                }
            }
        }
    }
    cols
}

/// `deform_conv2d(x, offset, mask, w[, bias])`.
pub(crate) fn deform_conv2d(ins: &[&HostTensor], a: &DeformConvAttrs) -> Res<HostTensor> {
    by_float!(ins[0], deform_t(ins, a))
}

fn deform_t<T: Real>(ins: &[&HostTensor], a: &DeformConvAttrs) -> Res<HostTensor> {
    if ins.len() < 4 {
        return err("needs x, offset, mask and weight");
    }
    let d = dims(ins[0], ins[3], ins[1], a)?;
    let (x, off, mask, w) = (
        floats::<T>(ins[0])?,
        floats::<T>(ins[1])?,
        floats::<T>(ins[2])?,
        floats::<T>(ins[3])?,
    );
    let bias = ins.get(4).map(|b| floats::<T>(b)).transpose()?;
    let cols = columns(&d, a, x, off, mask);
    let (taps, plane) = (d.kh * d.kw, d.ho * d.wo);
    let (cg, og) = (d.c / d.groups, d.o / d.groups);
    let mut y = vec![T::zero(); d.n * d.o * plane];
    for n in 0..d.n {
        for o in 0..d.o {
            let g = o / og;
            let out = &mut y[(n * d.o + o) * plane..(n * d.o + o + 1) * plane];
            if let Some(b) = bias {
                out.iter_mut().for_each(|v| *v = b[o]);
            }
            for ci in 0..cg {
                let ch = g * cg + ci;
                for k in 0..taps {
                    let wv = w[(o * cg + ci) * taps + k];
                    let col = &cols[((n * d.c + ch) * taps + k) * plane..][..plane];
                    for (v, &s) in out.iter_mut().zip(col) {
                        *v += wv * s;
                    }
                }
            }
        }
    }
    Ok(T::tensor(vec![d.n, d.o, d.ho, d.wo], y))
}

/// `deform_conv2d_grad(x, offset, mask, w, dy)` → `(dx, doffset, dmask, dw)`.
pub(crate) fn deform_conv2d_grad(ins: &[&HostTensor], a: &DeformConvAttrs) -> Res<Vec<HostTensor>> {
    by_float!(ins[0], grad_t(ins, a))
}

fn grad_t<T: Real>(ins: &[&HostTensor], a: &DeformConvAttrs) -> Res<Vec<HostTensor>> {
    if ins.len() != 5 {
        return err("needs x, offset, mask, weight and the output cotangent");
    }
    let d = dims(ins[0], ins[3], ins[1], a)?;
    let (x, off, mask, w, dy) = (
        floats::<T>(ins[0])?,
        floats::<T>(ins[1])?,
        floats::<T>(ins[2])?,
        floats::<T>(ins[3])?,
        floats::<T>(ins[4])?,
    );
    let (taps, plane) = (d.kh * d.kw, d.ho * d.wo);
    let (cg, og) = (d.c / d.groups, d.o / d.groups);
    let cols = columns(&d, a, x, off, mask);
    let mut dx = vec![T::zero(); x.len()];
    let mut doff = vec![T::zero(); off.len()];
    let mut dmask = vec![T::zero(); mask.len()];
    let mut dw = vec![T::zero(); w.len()];
    for n in 0..d.n {
        for ch in 0..d.c {
            let (g, ci) = (ch / cg, ch % cg);
            let plane_x = (n * d.c + ch) * d.h * d.w;
            for k in 0..taps {
                let col = &cols[((n * d.c + ch) * taps + k) * plane..][..plane];
                for p in 0..plane {
                    // The cotangent of this modulated sample, and the weight gradient.
                    let mut dcol = T::zero();
                    for o in g * og..(g + 1) * og {
                        let gy = dy[(n * d.o + o) * plane + p];
                        let wi = (o * cg + ci) * taps + k;
                        dcol += w[wi] * gy;
                        dw[wi] += gy * col[p];
                    }
                    let (oi, oj, mi) = tap_index(&d, n, ch, k, p);
                    let (by, bx) = base::<T>(a, p / d.wo, p % d.wo, k / d.kw, k % d.kw);
                    let s = sample(by + off[oi], bx + off[oj], d.h, d.w);
                    let m = mask[mi];
                    let mut val = T::zero();
                    for &(i, wt, dwy, dwx) in &s.corners {
                        if let Some(i) = i {
                            let v = x[plane_x + i];
                            val += wt * v;
                            doff[oi] += dcol * m * dwy * v;
                            doff[oj] += dcol * m * dwx * v;
                            dx[plane_x + i] += dcol * m * wt;
                        }
                    }
                    dmask[mi] += dcol * val;
                }
            }
        }
    }
    Ok(vec![
        T::tensor(ins[0].shape.clone(), dx),
        T::tensor(ins[1].shape.clone(), doff),
        T::tensor(ins[2].shape.clone(), dmask),
        T::tensor(ins[3].shape.clone(), dw),
    ])
}
