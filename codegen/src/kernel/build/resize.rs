//! `resize` (NCHW f32, nearest or bilinear, every `CoordMode`). The source taps depend only
//! on the shapes, so they are computed here, once, into constant tables (row offsets, column
//! indices, weights): the kernel is loads and FMAs. One output row per parallel iteration
//! (threads split over N·C·Ho).
//!
//! - nearest: a contiguous row copy where the columns map one to one; where every input
//!   column repeats `s` times (an integer upscale with `asymmetric` floor, as in
//!   PP-OCR's and FPN necks' ×2/×4/×8 upsampling), one load and `s` interleaved stores per
//!   input column, which LLVM vectorizes as an interleaved store group; otherwise a gather
//!   through the column table.
//! - bilinear: with `Wo ≥ W`, the two source rows are first blended into one row in scratch
//!   (contiguous, vectorized), then each output column blends two entries of that row; when
//!   downscaling along W, the four taps directly.
//!
//! The taps follow the interpreter's (`runtime/src/interp/norm_reduce_pool.rs`): ONNX's
//! `coordinate_transformation_mode` formulas, `round_prefer_floor` for nearest except
//! `asymmetric`, which floors (ONNX `nearest_mode = floor`, PyTorch's and Paddle's nearest).

use super::{Arg, Builder};
use crate::kernel::{Body, Expr, IExpr, Stmt};
use oar_ir::op::{CoordMode, ResizeAttrs, ResizeMode};
use oar_ir::DType;
use oar_runtime::program::{BufferDecl, BufferRole};

/// Output elements per thread slice below which a resize stays on one thread.
const GRAIN_ELEMS: i64 = 4096;

/// Largest repeat count lowered as interleaved stores (beyond it, the gather).
const MAX_REPEAT: i64 = 16;

/// Per-axis taps: output `o` reads `lo[o]` with weight `w_lo[o]` and `hi[o]` with `w_hi[o]`.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    lo: Vec<i64>,
    hi: Vec<i64>,
    w_lo: Vec<f32>,
    w_hi: Vec<f32>,
}

/// The linear taps along one axis (the coordinate clamped to the input, the upper tap
/// clamped to the last element).
fn linear_taps(mode: CoordMode, in_len: i64, out_len: i64) -> Taps {
    let mut t = Taps {
        lo: Vec::new(),
        hi: Vec::new(),
        w_lo: Vec::new(),
        w_hi: Vec::new(),
    };
    for o in 0..out_len {
        let (lo, hi, f) = mode.linear_taps(o as usize, in_len as usize, out_len as usize);
        t.lo.push(lo as i64);
        t.hi.push(hi as i64);
        t.w_lo.push((1.0 - f) as f32);
        t.w_hi.push(f as f32);
    }
    t
}

/// The nearest source indices along one axis.
fn nearest_taps(mode: CoordMode, in_len: i64, out_len: i64) -> Vec<i64> {
    (0..out_len)
        .map(|o| mode.nearest_index(o as usize, in_len as usize, out_len as usize) as i64)
        .collect()
}

/// `s` when `ix[j] == j / s` for every output column (each input column repeated `s`
/// times, in order); 1 is the identity.
fn repeat_factor(ix: &[i64], in_len: i64) -> Option<i64> {
    let out_len = ix.len() as i64;
    if in_len == 0 || out_len % in_len != 0 {
        return None;
    }
    let s = out_len / in_len;
    (s <= MAX_REPEAT && ix.iter().enumerate().all(|(j, &i)| i == j as i64 / s)).then_some(s)
}

/// A constant table buffer (loaded with the weights; shared with an identical table).
fn table(b: &mut Builder, name: &str, dtype: DType, bytes: Vec<u8>, len: usize) -> usize {
    let same = b.program.buffers.iter().position(|d| {
        d.dtype == dtype
            && d.shape == [len]
            && matches!(&d.role, BufferRole::Constant(c) if *c == bytes)
    });
    if let Some(k) = same {
        return k;
    }
    b.program.buffers.push(BufferDecl {
        name: name.to_string(),
        dtype,
        shape: vec![len],
        role: BufferRole::Constant(bytes),
    });
    let k = b.program.buffers.len() - 1;
    b.fixed_bufs.insert(k);
    k
}

fn i64_table(b: &mut Builder, name: &str, v: &[i64]) -> usize {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    table(b, name, DType::I64, bytes, v.len())
}

fn f32_table(b: &mut Builder, name: &str, v: &[f32]) -> usize {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    table(b, name, DType::F32, bytes, v.len())
}

fn store(buf: usize, idx: IExpr, val: Expr) -> Stmt {
    Stmt::Store { buf, idx, val }
}

pub(crate) fn lower(
    b: &mut Builder,
    name: &str,
    r: &ResizeAttrs,
    x: &Arg,
    out: &Arg,
) -> Result<(), String> {
    if x.dtype != DType::F32 || out.dtype != DType::F32 {
        return Err(format!(
            "only f32 is compiled (found {} → {})",
            x.dtype.name(),
            out.dtype.name()
        ));
    }
    let (&[n, c, h, w], &[on, oc, ho, wo]) = (x.shape.as_slice(), out.shape.as_slice()) else {
        return Err(format!(
            "needs NCHW input and output, found {:?} → {:?}",
            x.shape, out.shape
        ));
    };
    if (n, c) != (on, oc) {
        return Err(format!(
            "output {:?} must keep the input's N and C {:?}",
            out.shape, x.shape
        ));
    }
    let rows = n * c * ho;
    if rows * wo == 0 {
        return Ok(()); // nothing to write
    }
    if h == 0 || w == 0 {
        return Err(format!(
            "an empty input {:?} has no taps for a non-empty output {:?}",
            x.shape, out.shape
        ));
    }
    let grain = (GRAIN_ELEMS / wo).max(1);
    // Variable 0: the output row (plane · Ho + y); variable 1: a column.
    let row = IExpr::v(0);
    let y = row.clone().rem(ho);
    let plane_base = row.clone().div(ho).mul(h * w);
    let out_row = row.clone().mul(wo);
    let j = IExpr::v(1);
    match r.mode {
        ResizeMode::Nearest => {
            let iy: Vec<i64> = nearest_taps(r.coord, h, ho).iter().map(|i| i * w).collect();
            let ix = nearest_taps(r.coord, w, wo);
            let ry = i64_table(b, &format!("{name}.rows"), &iy);
            let mut args = vec![out.buf, x.buf, ry];
            let src_row = plane_base.add(IExpr::Load(2, Box::new(y)));
            let inner = match repeat_factor(&ix, w) {
                Some(s) => {
                    let v = Expr::Load(1, src_row.add(j.clone()));
                    let at = out_row.add(j.mul(s));
                    let stores = (0..s)
                        .map(|k| store(0, at.clone().add(IExpr::c(k)), v.clone()))
                        .collect();
                    Stmt::seq(1, w, stores)
                }
                None => {
                    let cx = i64_table(b, &format!("{name}.cols"), &ix);
                    args.push(cx);
                    let src = src_row.add(IExpr::Load(3, Box::new(j.clone())));
                    Stmt::seq(1, wo, vec![store(0, out_row.add(j), Expr::Load(1, src))])
                }
            };
            let body = vec![Stmt::par(rows, vec![inner])];
            b.kernel(name, &args, Body::Loops(body), rows, grain)
        }
        ResizeMode::Bilinear => {
            let ty = linear_taps(r.coord, h, ho);
            let tx = linear_taps(r.coord, w, wo);
            let offsets = |v: &[i64]| v.iter().map(|i| i * w).collect::<Vec<_>>();
            let tabs = [
                i64_table(b, &format!("{name}.rows_lo"), &offsets(&ty.lo)),
                i64_table(b, &format!("{name}.rows_hi"), &offsets(&ty.hi)),
                f32_table(b, &format!("{name}.wrows_lo"), &ty.w_lo),
                f32_table(b, &format!("{name}.wrows_hi"), &ty.w_hi),
                i64_table(b, &format!("{name}.cols_lo"), &tx.lo),
                i64_table(b, &format!("{name}.cols_hi"), &tx.hi),
                f32_table(b, &format!("{name}.wcols_lo"), &tx.w_lo),
                f32_table(b, &format!("{name}.wcols_hi"), &tx.w_hi),
            ];
            let mut args = vec![out.buf, x.buf];
            args.extend(tabs);
            let scratch = args.len();
            let load_i = |k: usize, at: &IExpr| IExpr::Load(k, Box::new(at.clone()));
            let (r_lo, r_hi) = (
                plane_base.clone().add(load_i(2, &y)),
                plane_base.add(load_i(3, &y)),
            );
            // The row weights, once per row.
            let (wy_lo, wy_hi) = (Expr::Local(0), Expr::Local(1));
            let mut body = vec![
                Stmt::Local {
                    id: 0,
                    init: Expr::Load(4, y.clone()),
                },
                Stmt::Local {
                    id: 1,
                    init: Expr::Load(5, y),
                },
            ];
            let (c_lo, c_hi) = (load_i(6, &j), load_i(7, &j));
            let (wx_lo, wx_hi) = (Expr::Load(8, j.clone()), Expr::Load(9, j.clone()));
            let blend = |at_lo: IExpr, at_hi: IExpr, buf: usize, w0: Expr, w1: Expr| {
                Expr::Load(buf, at_lo)
                    .mul(w0)
                    .add(Expr::Load(buf, at_hi).mul(w1))
            };
            if wo >= w && w * 4 <= b.tiling.scratch_bytes() as i64 {
                // 1. the two source rows blended: one row of W in scratch;
                body.push(Stmt::seq(
                    1,
                    w,
                    vec![store(
                        scratch,
                        j.clone(),
                        blend(r_lo.add(j.clone()), r_hi.add(j.clone()), 1, wy_lo, wy_hi),
                    )],
                ));
                // 2. each output column blends two entries of it.
                body.push(Stmt::seq(
                    1,
                    wo,
                    vec![store(
                        0,
                        out_row.add(j),
                        blend(c_lo, c_hi, scratch, wx_lo, wx_hi),
                    )],
                ));
            } else {
                let top = blend(
                    r_lo.clone().add(c_lo.clone()),
                    r_lo.add(c_hi.clone()),
                    1,
                    wx_lo.clone(),
                    wx_hi.clone(),
                );
                let bottom = blend(r_hi.clone().add(c_lo), r_hi.add(c_hi), 1, wx_lo, wx_hi);
                let val = top.mul(wy_lo).add(bottom.mul(wy_hi));
                body.push(Stmt::seq(1, wo, vec![store(0, out_row.add(j), val)]));
            }
            let body = vec![Stmt::par(rows, body)];
            b.kernel(name, &args, Body::Loops(body), rows, grain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asymmetric_integer_upscales_repeat_columns() {
        for s in [2, 3, 4, 8] {
            let ix = nearest_taps(CoordMode::Asymmetric, 7, 7 * s);
            assert_eq!(repeat_factor(&ix, 7), Some(s));
        }
        // Half-pixel ×2 (round half down) repeats columns too.
        let ix = nearest_taps(CoordMode::HalfPixel, 5, 10);
        assert_eq!(ix, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(repeat_factor(&ix, 5), Some(2));
        let ix = nearest_taps(CoordMode::AlignCorners, 4, 10);
        assert_eq!(ix, [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]);
        assert_eq!(repeat_factor(&ix, 4), None);
        assert_eq!(
            repeat_factor(&nearest_taps(CoordMode::HalfPixel, 5, 5), 5),
            Some(1)
        );
        assert_eq!(repeat_factor(&[0, 1, 2], 4), None);
    }

    #[test]
    fn linear_taps_clamp_and_sum_to_one() {
        for mode in [
            CoordMode::HalfPixel,
            CoordMode::AlignCorners,
            CoordMode::Asymmetric,
            CoordMode::PytorchHalfPixel,
        ] {
            for (i, o) in [(1, 5), (5, 1), (7, 3), (3, 7), (4, 8), (9, 9)] {
                let t = linear_taps(mode, i, o);
                for k in 0..o as usize {
                    assert!(t.lo[k] >= 0 && t.hi[k] < i && t.lo[k] <= t.hi[k]);
                    assert!((t.w_lo[k] + t.w_hi[k] - 1.0).abs() < 1e-6);
                }
            }
        }
        // Align-corners maps the ends onto the ends.
        let t = linear_taps(CoordMode::AlignCorners, 4, 7);
        assert_eq!((t.lo[0], t.w_hi[0]), (0, 0.0));
        assert_eq!((t.hi[6], t.w_lo[6]), (3, 1.0));
    }
}
