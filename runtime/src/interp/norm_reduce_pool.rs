//! Normalisation, softmax, reductions, pooling and resizing.

use super::float::{by_float, floats, Real};
use super::{err, norm_axis, Res};
use crate::tensor::{strides, HostTensor};
use oar_ir::dist::ReduceOp;
use oar_ir::op::{CoordMode, PoolAttrs, PoolKind, ReduceOverAxes, ResizeAttrs, ResizeMode};

/// (outer, len, inner) extents around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

pub(crate) fn batch_norm(x: &HostTensor, p: [&HostTensor; 4], eps: f64) -> Res<HostTensor> {
    by_float!(x, batch_norm_t(x, p, eps))
}

fn batch_norm_t<T: Real>(x: &HostTensor, p: [&HostTensor; 4], eps: f64) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let [scale, bias, mean, var] = [
        floats::<T>(p[0])?,
        floats::<T>(p[1])?,
        floats::<T>(p[2])?,
        floats::<T>(p[3])?,
    ];
    if x.shape.len() < 2 {
        return err("batch_norm needs rank ≥ 2");
    }
    let (_, c, inner) = split_at_axis(&x.shape, 1);
    let out = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner) % c;
            (v - mean[ch]) / (var[ch] + T::c(eps)).sqrt() * scale[ch] + bias[ch]
        })
        .collect();
    Ok(T::tensor(x.shape.clone(), out))
}

pub(crate) fn layer_norm(
    x: &HostTensor,
    scale: &HostTensor,
    bias: &HostTensor,
    axis: i64,
    eps: f64,
) -> Res<HostTensor> {
    by_float!(x, layer_norm_t(x, scale, bias, axis, eps))
}

fn layer_norm_t<T: Real>(
    x: &HostTensor,
    scale: &HostTensor,
    bias: &HostTensor,
    axis: i64,
    eps: f64,
) -> Res<HostTensor> {
    let (xv, sv, bv) = (floats::<T>(x)?, floats::<T>(scale)?, floats::<T>(bias)?);
    let a = norm_axis(axis, x.shape.len())?;
    let inner: usize = x.shape[a..].iter().product();
    let mut out = vec![T::zero(); xv.len()];
    for (row, o) in xv.chunks(inner.max(1)).zip(out.chunks_mut(inner.max(1))) {
        let mean = row.iter().map(|&v| v.f64()).sum::<f64>() / inner as f64;
        let var = row.iter().map(|&v| (v.f64() - mean).powi(2)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for j in 0..row.len() {
            o[j] = T::c((row[j].f64() - mean) * inv) * sv[j] + bv[j];
        }
    }
    Ok(T::tensor(x.shape.clone(), out))
}

pub(crate) fn softmax(x: &HostTensor, axis: i64, log: bool) -> Res<HostTensor> {
    by_float!(x, softmax_t(x, axis, log))
}

fn softmax_t<T: Real>(x: &HostTensor, axis: i64, log: bool) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let a = norm_axis(axis, x.shape.len())?;
    let (outer, len, inner) = split_at_axis(&x.shape, a);
    let mut out = vec![T::zero(); xv.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| (o * len + i) * inner + j;
            let m = (0..len).map(|i| xv[at(i)]).fold(T::neg_infinity(), T::max);
            let sum: f64 = (0..len).map(|i| (xv[at(i)] - m).f64().exp()).sum();
            for i in 0..len {
                let z = (xv[at(i)] - m).f64();
                out[at(i)] = if log {
                    T::c(z - sum.ln())
                } else {
                    T::c(z.exp() / sum)
                };
            }
        }
    }
    Ok(T::tensor(x.shape.clone(), out))
}

pub(crate) fn causal_mask(x: &HostTensor, fill: f64) -> Res<HostTensor> {
    by_float!(x, causal_mask_t(x, fill))
}

fn causal_mask_t<T: Real>(x: &HostTensor, fill: f64) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let r = x.shape.len();
    if r < 2 {
        return err("causal_mask needs rank ≥ 2");
    }
    let (m, n) = (x.shape[r - 2], x.shape[r - 1]);
    let out = xv
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let (i, j) = ((k / n) % m, k % n);
            // Rectangular scores (cached keys): query i sees keys up to i + (n - m).
            if j + m <= i + n {
                v
            } else {
                T::c(fill)
            }
        })
        .collect();
    Ok(T::tensor(x.shape.clone(), out))
}

pub(crate) fn reduce(x: &HostTensor, r: &ReduceOverAxes) -> Res<HostTensor> {
    by_float!(x, reduce_t(x, r))
}

/// Accumulates in f64 whatever the element type, so f32 sums do not depend on the order.
fn reduce_t<T: Real>(x: &HostTensor, r: &ReduceOverAxes) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let rank = x.shape.len();
    let mut axes: Vec<usize> = r
        .axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Res<_>>()?;
    if axes.is_empty() {
        axes = (0..rank).collect();
    }
    let kept: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let out_n: usize = kept.iter().product();
    let count = (xv.len() / out_n.max(1)).max(1);
    let init = match r.op {
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    let mut acc = vec![init; out_n];
    let in_st = strides(&x.shape);
    let out_st = strides(&kept);
    for (i, &v) in xv.iter().enumerate() {
        let o: usize = (0..rank)
            .map(|d| {
                if axes.contains(&d) {
                    0
                } else {
                    (i / in_st[d]) % x.shape[d] * out_st[d]
                }
            })
            .sum();
        let v = v.f64();
        acc[o] = match r.op {
            ReduceOp::Sum | ReduceOp::Mean => acc[o] + v,
            ReduceOp::Prod => acc[o] * v,
            ReduceOp::Max => acc[o].max(v),
            ReduceOp::Min => acc[o].min(v),
        };
    }
    if r.op == ReduceOp::Mean {
        acc.iter_mut().for_each(|a| *a /= count as f64);
    }
    let shape = if r.keepdims {
        kept
    } else {
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| x.shape[i])
            .collect()
    };
    Ok(T::tensor(shape, acc.into_iter().map(T::c).collect()))
}

pub(crate) fn pool_out(n: usize, k: usize, s: usize, pb: usize, pe: usize, ceil: bool) -> usize {
    let span = n + pb + pe - k;
    let mut out = if ceil {
        span.div_ceil(s) + 1
    } else {
        span / s + 1
    };
    if ceil && (out - 1) * s >= n + pb {
        out -= 1;
    }
    out
}

pub(crate) fn pool(x: &HostTensor, p: &PoolAttrs) -> Res<HostTensor> {
    by_float!(x, pool_t(x, p))
}

fn pool_t<T: Real>(x: &HostTensor, p: &PoolAttrs) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let &[n, c, h, w] = x.shape.as_slice() else {
        return err("pooling needs NCHW input");
    };
    let [kh, kw] = p.kernel.map(|v| v as usize);
    let [sh, sw] = p.stride.map(|v| v as usize);
    let [pt, pl, pb, pr] = p.padding.map(|v| v as usize);
    let ho = pool_out(h, kh, sh, pt, pb, p.ceil_mode);
    let wo = pool_out(w, kw, sw, pl, pr, p.ceil_mode);
    let mut out = vec![T::zero(); n * c * ho * wo];
    for plane in 0..n * c {
        let src = &xv[plane * h * w..(plane + 1) * h * w];
        for y in 0..ho {
            for xo in 0..wo {
                let (y0, x0) = (
                    (y * sh) as isize - pt as isize,
                    (xo * sw) as isize - pl as isize,
                );
                let (mut acc, mut inside, mut padded) = (
                    if p.kind == PoolKind::Max {
                        T::neg_infinity()
                    } else {
                        T::zero()
                    },
                    0,
                    0,
                );
                for ky in 0..kh as isize {
                    for kx in 0..kw as isize {
                        let (iy, ix) = (y0 + ky, x0 + kx);
                        // Cells in the padding count for count_include_pad; beyond it they never do.
                        if iy < h as isize + pb as isize && ix < w as isize + pr as isize {
                            padded += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        inside += 1;
                        let v = src[iy as usize * w + ix as usize];
                        acc = if p.kind == PoolKind::Max {
                            acc.max(v)
                        } else {
                            acc + v
                        };
                    }
                }
                out[(plane * ho + y) * wo + xo] = match p.kind {
                    PoolKind::Max => acc,
                    PoolKind::Avg => {
                        let count = if p.count_include_pad { padded } else { inside };
                        acc / T::c(count.max(1) as f64)
                    }
                };
            }
        }
    }
    Ok(T::tensor(vec![n, c, ho, wo], out))
}

pub(crate) fn global_pool(x: &HostTensor, kind: PoolKind) -> Res<HostTensor> {
    by_float!(x, global_pool_t(x, kind))
}

fn global_pool_t<T: Real>(x: &HostTensor, kind: PoolKind) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    if x.shape.len() < 3 {
        return err("global pooling needs rank ≥ 3");
    }
    let planes = x.shape[0] * x.shape[1];
    let area: usize = x.shape[2..].iter().product();
    let out = (0..planes)
        .map(|p| {
            let s = &xv[p * area..(p + 1) * area];
            match kind {
                PoolKind::Max => s.iter().copied().fold(T::neg_infinity(), T::max),
                PoolKind::Avg => T::c(s.iter().map(|&v| v.f64()).sum::<f64>() / area as f64),
            }
        })
        .collect();
    let mut shape = x.shape[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, x.shape.len() - 2));
    Ok(T::tensor(shape, out))
}

/// Resize along one axis as a matrix `[out_len, in_len]` (row-major): output `o` is
/// `Σ_i m[o][i] · x[i]`, with the taps `resize` uses. Resize is separable, so
/// `y = R_h · x · R_wᵀ` per plane, and autodiff builds the input gradient
/// `R_hᵀ · dy · R_w` from these matrices. The taps are f64, as the f64 kernel uses them
/// (taps rounded to f32 put a 1e-5 relative error into an f64 gradient check).
pub fn resize_matrix(
    mode: ResizeMode,
    coord: CoordMode,
    in_len: usize,
    out_len: usize,
) -> Vec<f64> {
    let mut m = vec![0f64; out_len * in_len];
    if in_len == 0 {
        return m;
    }
    for o in 0..out_len {
        let row = &mut m[o * in_len..(o + 1) * in_len];
        match mode {
            ResizeMode::Nearest => row[coord.nearest_index(o, in_len, out_len)] = 1.0,
            ResizeMode::Bilinear => {
                let (i0, i1, f) = coord.linear_taps(o, in_len, out_len);
                row[i0] += 1.0 - f;
                row[i1] += f;
            }
        }
    }
    m
}

pub(crate) fn resize(x: &HostTensor, r: &ResizeAttrs, out_hw: [usize; 2]) -> Res<HostTensor> {
    by_float!(x, resize_t(x, r, out_hw))
}

fn resize_t<T: Real>(x: &HostTensor, r: &ResizeAttrs, out_hw: [usize; 2]) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let &[n, c, h, w] = x.shape.as_slice() else {
        return err("resize needs NCHW input");
    };
    let [ho, wo] = out_hw;
    let mut out = vec![T::zero(); n * c * ho * wo];
    let one = T::one();
    for plane in 0..n * c {
        let src = &xv[plane * h * w..(plane + 1) * h * w];
        for y in 0..ho {
            for xo in 0..wo {
                out[(plane * ho + y) * wo + xo] = match r.mode {
                    ResizeMode::Nearest => {
                        src[r.coord.nearest_index(y, h, ho) * w + r.coord.nearest_index(xo, w, wo)]
                    }
                    ResizeMode::Bilinear => {
                        let (y0, y1, fy) = r.coord.linear_taps(y, h, ho);
                        let (x0, x1, fx) = r.coord.linear_taps(xo, w, wo);
                        let (fy, fx) = (T::c(fy), T::c(fx));
                        let top = src[y0 * w + x0] * (one - fx) + src[y0 * w + x1] * fx;
                        let bot = src[y1 * w + x0] * (one - fx) + src[y1 * w + x1] * fx;
                        top * (one - fy) + bot * fy
                    }
                };
            }
        }
    }
    Ok(T::tensor(vec![n, c, ho, wo], out))
}
