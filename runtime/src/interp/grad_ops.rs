//! Reference semantics of the gradient ops autodiff emits, as plain loops that mirror the
//! forward loops of `linalg::conv2d` and `norm_reduce_pool::pool` (same window walk, same
//! bounds), so a gradient and its forward op cannot disagree on which cells a window covers.

use super::data_movement::{for_each_index, index_list};
use super::float::{by_float, floats, Real};
use super::norm_reduce_pool::pool_out;
use super::{err, norm_axis, Res};
use crate::tensor::{strides, HostTensor};
use oar_ir::op::{ConvAttrs, PoolAttrs, PoolKind};

fn nchw(t: &HostTensor, what: &str) -> Res<[usize; 4]> {
    match t.shape.as_slice() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        _ => err(format!("{what} must be NCHW, found {}", t.describe())),
    }
}

/// `dW[o, c, ky, kx] = Σ x[n, g·C/g + c, oy·sh + ky·dh − pt, ox·sw + kx·dw − pl] · dy[n, o, oy, ox]`.
pub(crate) fn conv2d_grad_weight(
    x: &HostTensor,
    dy: &HostTensor,
    a: &ConvAttrs,
    kernel: [u64; 2],
) -> Res<HostTensor> {
    by_float!(x, conv2d_grad_weight_t(x, dy, a, kernel))
}

fn conv2d_grad_weight_t<T: Real>(
    x: &HostTensor,
    dy: &HostTensor,
    a: &ConvAttrs,
    kernel: [u64; 2],
) -> Res<HostTensor> {
    let (xv, gv) = (floats::<T>(x)?, floats::<T>(dy)?);
    let [n, c, h, w] = nchw(x, "input")?;
    let [n2, o_ch, ho, wo] = nchw(dy, "cotangent")?;
    let g = a.groups as usize;
    if n != n2 || g == 0 || c % g != 0 || o_ch % g != 0 {
        return err(format!(
            "conv2d_grad_weight: input {} and cotangent {} do not match groups={g}",
            x.describe(),
            dy.describe()
        ));
    }
    let (cg, og) = (c / g, o_ch / g);
    let [kh, kw] = kernel.map(|v| v as usize);
    let [sh, sw] = a.stride.map(|v| v as usize);
    let [dh, dw] = a.dilation.map(|v| v as usize);
    let [pt, pl, _, _] = a.padding.map(|v| v as isize);
    let mut out = vec![T::zero(); o_ch * cg * kh * kw];
    for o in 0..o_ch {
        let grp = o / og;
        for ci in 0..cg {
            let cin = grp * cg + ci;
            for ky in 0..kh {
                for kx in 0..kw {
                    let mut acc = T::zero();
                    for b in 0..n {
                        for y in 0..ho {
                            let iy = (y * sh + ky * dh) as isize - pt;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for xo in 0..wo {
                                let ix = (xo * sw + kx * dw) as isize - pl;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                acc += xv[((b * c + cin) * h + iy as usize) * w + ix as usize]
                                    * gv[((b * o_ch + o) * ho + y) * wo + xo];
                            }
                        }
                    }
                    out[((o * cg + ci) * kh + ky) * kw + kx] = acc;
                }
            }
        }
    }
    Ok(T::tensor(vec![o_ch, cg, kh, kw], out))
}

/// The input gradient of a windowed pooling: max sends each cotangent to the first
/// arg-max of its window, avg spreads it with the forward divisor.
pub(crate) fn pool_grad(x: &HostTensor, dy: &HostTensor, p: &PoolAttrs) -> Res<HostTensor> {
    by_float!(x, pool_grad_t(x, dy, p))
}

fn pool_grad_t<T: Real>(x: &HostTensor, dy: &HostTensor, p: &PoolAttrs) -> Res<HostTensor> {
    let (xv, gv) = (floats::<T>(x)?, floats::<T>(dy)?);
    let [n, c, h, w] = nchw(x, "input")?;
    let [kh, kw] = p.kernel.map(|v| v as usize);
    let [sh, sw] = p.stride.map(|v| v as usize);
    let [pt, pl, pb, pr] = p.padding.map(|v| v as usize);
    let ho = pool_out(h, kh, sh, pt, pb, p.ceil_mode);
    let wo = pool_out(w, kw, sw, pl, pr, p.ceil_mode);
    if dy.shape != [n, c, ho, wo] {
        return err(format!(
            "pool_grad: cotangent {} is not the pooling's output [{n}, {c}, {ho}, {wo}]",
            dy.describe()
        ));
    }
    let mut out = vec![T::zero(); n * c * h * w];
    for plane in 0..n * c {
        let src = &xv[plane * h * w..(plane + 1) * h * w];
        let dst = &mut out[plane * h * w..(plane + 1) * h * w];
        for y in 0..ho {
            for xo in 0..wo {
                let g = gv[(plane * ho + y) * wo + xo];
                let (y0, x0) = (
                    (y * sh) as isize - pt as isize,
                    (xo * sw) as isize - pl as isize,
                );
                // The cells of the window inside the input, and how many count as padded.
                let mut cells = Vec::with_capacity(kh * kw);
                let mut padded = 0usize;
                for ky in 0..kh as isize {
                    for kx in 0..kw as isize {
                        let (iy, ix) = (y0 + ky, x0 + kx);
                        if iy < h as isize + pb as isize && ix < w as isize + pr as isize {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            cells.push(iy as usize * w + ix as usize);
                        }
                    }
                }
                match p.kind {
                    PoolKind::Max => {
                        // Strictly greater keeps the first maximum in row-major window order.
                        let best =
                            cells
                                .iter()
                                .copied()
                                .fold(None, |b: Option<usize>, i| match b {
                                    Some(j) if src[j] >= src[i] => Some(j),
                                    _ => Some(i),
                                });
                        if let Some(i) = best {
                            dst[i] += g;
                        }
                    }
                    PoolKind::Avg => {
                        let div = if p.count_include_pad {
                            padded
                        } else {
                            cells.len()
                        };
                        let share = g / T::c(div.max(1) as f64);
                        for i in cells {
                            dst[i] += share;
                        }
                    }
                }
            }
        }
    }
    Ok(T::tensor(vec![n, c, h, w], out))
}

/// ONNX ScatterElements with `reduction=add`.
pub(crate) fn scatter_add(
    data: &HostTensor,
    indices: &HostTensor,
    updates: &HostTensor,
    axis: i64,
) -> Res<HostTensor> {
    by_float!(data, scatter_add_t(data, indices, updates, axis))
}

fn scatter_add_t<T: Real>(
    data: &HostTensor,
    indices: &HostTensor,
    updates: &HostTensor,
    axis: i64,
) -> Res<HostTensor> {
    let a = norm_axis(axis, data.shape.len())?;
    let mut out = floats::<T>(data)?.to_vec();
    let uv = floats::<T>(updates)?;
    if indices.shape != updates.shape || indices.shape.len() != data.shape.len() {
        return err(format!(
            "scatter_add: indices {} and updates {} must share a shape of data's rank {}",
            indices.describe(),
            updates.describe(),
            data.describe()
        ));
    }
    if indices
        .shape
        .iter()
        .zip(&data.shape)
        .enumerate()
        .any(|(d, (i, s))| d != a && i > s)
    {
        return err(format!(
            "scatter_add: indices {} exceed data {} off the axis",
            indices.describe(),
            data.describe()
        ));
    }
    let idx = index_list(indices, data.shape[a], "index")?;
    let st = strides(&data.shape);
    let mut k = 0;
    for_each_index(&indices.shape, |i| {
        let lin: usize = i
            .iter()
            .enumerate()
            .map(|(d, &v)| if d == a { idx[k] } else { v } * st[d])
            .sum();
        out[lin] += uv[k];
        k += 1;
    });
    Ok(T::tensor(data.shape.clone(), out))
}

/// The data gradient of `gather(data, indices) {axis}`: `dy`'s slices summed into a zero
/// tensor with `rows` entries along `axis`.
pub(crate) fn gather_grad(
    indices: &HostTensor,
    dy: &HostTensor,
    axis: i64,
    rows: u64,
) -> Res<HostTensor> {
    by_float!(dy, gather_grad_t(indices, dy, axis, rows))
}

fn gather_grad_t<T: Real>(
    indices: &HostTensor,
    dy: &HostTensor,
    axis: i64,
    rows: u64,
) -> Res<HostTensor> {
    let gv = floats::<T>(dy)?;
    let rank = (dy.shape.len() + 1)
        .checked_sub(indices.shape.len())
        .filter(|&r| r > 0)
        .ok_or_else(|| format!("gather_grad: cotangent {} too small", dy.describe()))?;
    let a = norm_axis(axis, rank)?;
    let rows = rows as usize;
    let idx = index_list(indices, rows, "index")?;
    let outer: usize = dy.shape[..a].iter().product();
    let inner: usize = dy.shape[a + indices.shape.len()..].iter().product();
    let mut out = vec![T::zero(); outer * rows * inner];
    for o in 0..outer {
        for (j, &r) in idx.iter().enumerate() {
            let src = &gv[(o * idx.len() + j) * inner..(o * idx.len() + j + 1) * inner];
            let dst = &mut out[(o * rows + r) * inner..(o * rows + r + 1) * inner];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += *s;
            }
        }
    }
    let mut shape = dy.shape[..a].to_vec();
    shape.push(rows);
    shape.extend(&dy.shape[a + indices.shape.len()..]);
    Ok(T::tensor(shape, out))
}
