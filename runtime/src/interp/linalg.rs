//! Matrix products and convolutions, as plain loops.

use super::elementwise::{broadcast_index, broadcast_shape};
use super::float::{by_float, floats, Real};
use super::{err, Res};
use crate::tensor::HostTensor;
use oar_ir::op::{ConvAttrs, MatMulAttrs};

pub(crate) fn matmul(a: &HostTensor, b: &HostTensor, attrs: &MatMulAttrs) -> Res<HostTensor> {
    by_float!(a, matmul_t(a, b, attrs))
}

fn matmul_t<T: Real>(a: &HostTensor, b: &HostTensor, attrs: &MatMulAttrs) -> Res<HostTensor> {
    let (av, bv) = (floats::<T>(a)?, floats::<T>(b)?);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return err("matmul needs rank ≥ 2");
    }
    let (m, k) = if attrs.transpose_a {
        (a.shape[ra - 1], a.shape[ra - 2])
    } else {
        (a.shape[ra - 2], a.shape[ra - 1])
    };
    let (k2, n) = if attrs.transpose_b {
        (b.shape[rb - 1], b.shape[rb - 2])
    } else {
        (b.shape[rb - 2], b.shape[rb - 1])
    };
    if k != k2 {
        return err(format!(
            "inner dims differ: {} vs {}",
            a.describe(),
            b.describe()
        ));
    }
    let batch = broadcast_shape(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = broadcast_index(&batch, &a.shape[..ra - 2]);
    let ib = broadcast_index(&batch, &b.shape[..rb - 2]);
    let mut out = vec![T::zero(); ia.len() * m * n];
    // Transposed operands are copied to row-major [m, k] and [k, n] first, so the inner loop
    // always walks contiguous memory.
    let row_major = |src: &[T], rows: usize, cols: usize, transposed: bool| -> Vec<T> {
        if !transposed {
            return src.to_vec();
        }
        let mut t = vec![T::zero(); rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[r * cols + c] = src[c * rows + r];
            }
        }
        t
    };
    for (bi, (&pa, &pb)) in ia.iter().zip(&ib).enumerate() {
        let a0 = row_major(&av[pa * m * k..(pa + 1) * m * k], m, k, attrs.transpose_a);
        let b0 = row_major(&bv[pb * k * n..(pb + 1) * k * n], k, n, attrs.transpose_b);
        let o = &mut out[bi * m * n..(bi + 1) * m * n];
        for i in 0..m {
            let row = &mut o[i * n..(i + 1) * n];
            for p in 0..k {
                let x = a0[i * k + p];
                for (r, y) in row.iter_mut().zip(&b0[p * n..(p + 1) * n]) {
                    *r += x * *y;
                }
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    Ok(T::tensor(shape, out))
}

struct ConvDims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
}

fn conv_dims(x: &HostTensor, w: &HostTensor) -> Res<ConvDims> {
    match (x.shape.as_slice(), w.shape.as_slice()) {
        (&[n, c, h, wd], &[_, _, kh, kw]) => Ok(ConvDims {
            n,
            c,
            h,
            w: wd,
            kh,
            kw,
        }),
        _ => err(format!(
            "conv needs NCHW input and a 4-d weight, found {} and {}",
            x.describe(),
            w.describe()
        )),
    }
}

pub(crate) fn conv2d(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    a: &ConvAttrs,
) -> Res<HostTensor> {
    by_float!(x, conv2d_t(x, w, bias, a))
}

fn conv2d_t<T: Real>(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    a: &ConvAttrs,
) -> Res<HostTensor> {
    let (xv, wv) = (floats::<T>(x)?, floats::<T>(w)?);
    let d = conv_dims(x, w)?;
    let (o_ch, g) = (w.shape[0], a.groups as usize);
    let cg = d.c / g;
    let og = o_ch / g;
    let [sh, sw] = a.stride.map(|v| v as usize);
    let [dh, dw] = a.dilation.map(|v| v as usize);
    let [pt, pl, pb, pr] = a.padding.map(|v| v as usize);
    let ho = (d.h + pt + pb - dh * (d.kh - 1) - 1) / sh + 1;
    let wo = (d.w + pl + pr - dw * (d.kw - 1) - 1) / sw + 1;
    let bv = bias.map(floats::<T>).transpose()?;
    let mut out = vec![T::zero(); d.n * o_ch * ho * wo];
    for n in 0..d.n {
        for o in 0..o_ch {
            let grp = o / og;
            let b0 = bv.map(|b| b[o]).unwrap_or(T::zero());
            for y in 0..ho {
                for xo in 0..wo {
                    let mut acc = b0;
                    for c in 0..cg {
                        let ci = grp * cg + c;
                        for ky in 0..d.kh {
                            let iy = (y * sh + ky * dh) as isize - pt as isize;
                            if iy < 0 || iy >= d.h as isize {
                                continue;
                            }
                            for kx in 0..d.kw {
                                let ix = (xo * sw + kx * dw) as isize - pl as isize;
                                if ix < 0 || ix >= d.w as isize {
                                    continue;
                                }
                                let xi = ((n * d.c + ci) * d.h + iy as usize) * d.w + ix as usize;
                                let wi = ((o * cg + c) * d.kh + ky) * d.kw + kx;
                                acc += xv[xi] * wv[wi];
                            }
                        }
                    }
                    out[((n * o_ch + o) * ho + y) * wo + xo] = acc;
                }
            }
        }
    }
    Ok(T::tensor(vec![d.n, o_ch, ho, wo], out))
}

pub(crate) fn conv_transpose2d(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    a: &ConvAttrs,
    output_padding: [u64; 2],
) -> Res<HostTensor> {
    by_float!(x, conv_transpose2d_t(x, w, bias, a, output_padding))
}

fn conv_transpose2d_t<T: Real>(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    a: &ConvAttrs,
    output_padding: [u64; 2],
) -> Res<HostTensor> {
    let (xv, wv) = (floats::<T>(x)?, floats::<T>(w)?);
    let d = conv_dims(x, w)?;
    let g = a.groups as usize;
    let og = w.shape[1];
    let o_ch = og * g;
    let cg = d.c / g;
    let [sh, sw] = a.stride.map(|v| v as usize);
    let [dh, dw] = a.dilation.map(|v| v as usize);
    let [pt, pl, pb, pr] = a.padding.map(|v| v as isize);
    let full_h = ((d.h - 1) * sh + dh * (d.kh - 1) + 1 + output_padding[0] as usize) as isize;
    let full_w = ((d.w - 1) * sw + dw * (d.kw - 1) + 1 + output_padding[1] as usize) as isize;
    let (ho, wo) = (full_h - pt - pb, full_w - pl - pr);
    if ho <= 0 || wo <= 0 {
        return err("conv_transpose2d output would be empty");
    }
    let (ho, wo) = (ho as usize, wo as usize);
    let mut out = vec![T::zero(); d.n * o_ch * ho * wo];
    for n in 0..d.n {
        for ci in 0..d.c {
            let grp = ci / cg;
            for y in 0..d.h {
                for xi in 0..d.w {
                    let v = xv[((n * d.c + ci) * d.h + y) * d.w + xi];
                    for o in 0..og {
                        let oc = grp * og + o;
                        for ky in 0..d.kh {
                            let oy = (y * sh + ky * dh) as isize - pt;
                            if oy < 0 || oy >= ho as isize {
                                continue;
                            }
                            for kx in 0..d.kw {
                                let ox = (xi * sw + kx * dw) as isize - pl;
                                if ox < 0 || ox >= wo as isize {
                                    continue;
                                }
                                out[((n * o_ch + oc) * ho + oy as usize) * wo + ox as usize] +=
                                    v * wv[((ci * og + o) * d.kh + ky) * d.kw + kx];
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(b) = bias {
        let bv = floats::<T>(b)?;
        for (i, e) in out.iter_mut().enumerate() {
            *e += bv[(i / (ho * wo)) % o_ch];
        }
    }
    Ok(T::tensor(vec![d.n, o_ch, ho, wo], out))
}
