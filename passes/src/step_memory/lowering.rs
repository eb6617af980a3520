//! Buffers the CPU backend's lowering of a convolution adds beside the node's output, as
//! the backend documents them (`codegen/src/kernel/build/{contraction,padded,conv_grad}.rs`):
//!
//! - a dense convolution over a small window (`c·kh·kw` ≤ 32, output rows ≥ 16 wide, stride 1
//!   or 2) reads a zero-padded copy of its input (split into four parity phases at stride
//!   2); any other dense convolution that is not 1×1 reads an im2col matrix
//!   `[n, c·kh·kw, oh·ow]`, gathered from a zero-padded copy when it pads; depthwise ones pad
//!   in the per-thread scratch;
//! - the data gradient (`conv_transpose2d`) is a forward convolution of the cotangent
//!   (zero-inserted at stride > 1) with the flipped weight, so it adds those buffers and the
//!   forward convolution's;
//! - the dense weight gradient writes the input's windows transposed (im2colᵀ) and the
//!   cotangent transposed per batch slice, and sums the slices' partial products; the
//!   depthwise one reads a zero-padded copy of the input.
//!
//! Padded copies are zeroed once and keep their memory (their borders are never written);
//! the rest are temporaries of the node. Elements are f32.

use super::ExtraBuffer;
use oar_ir::op::{ConvAttrs, GradOp, Op};
use oar_ir::{Graph, NodeId};

fn dims4(g: &Graph, v: oar_ir::ValueRef) -> Option<[u64; 4]> {
    let d = g.value_type(v)?.shape.as_static()?;
    d.try_into().ok()
}

fn temp(elems: u64) -> ExtraBuffer {
    ExtraBuffer {
        bytes: elems * 4,
        pinned: false,
    }
}

fn padded(elems: u64) -> ExtraBuffer {
    ExtraBuffer {
        bytes: elems * 4,
        pinned: true,
    }
}

/// Floats of one zero-padded `h × w` plane under `c` for a window `kw` wide: the plane
/// with its padding and slack for the last taps, or its four parity phases at stride 2.
fn plane_floats(c: &ConvAttrs, h: u64, w: u64, kw: u64, phased: bool) -> u64 {
    let hp = h + c.padding[0] + c.padding[2];
    let wp = w + c.padding[1] + c.padding[3];
    if phased {
        let (hq, wq) = (hp.div_ceil(2), wp.div_ceil(2));
        4 * (hq * wq + wq + 8)
    } else {
        hp * wp + kw.saturating_sub(1) * c.dilation[1] + 8
    }
}

/// Whether the padded layout exists for `c` (stride 1, or stride 2 without dilation), and
/// whether it is phase-split.
fn phased(c: &ConvAttrs) -> Option<bool> {
    match (c.stride, c.dilation) {
        ([1, 1], _) => Some(false),
        ([2, 2], [1, 1]) => Some(true),
        _ => None,
    }
}

/// The forward convolution's buffers: input `[n, ci, h, w]`, a `kh × kw` window, output
/// `oh × ow`.
fn conv_forward(
    c: &ConvAttrs,
    [n, ci, h, w]: [u64; 4],
    [kh, kw]: [u64; 2],
    [oh, ow]: [u64; 2],
) -> Vec<ExtraBuffer> {
    let g = c.groups;
    let one_by_one = kh == 1 && kw == 1 && c.stride == [1, 1] && c.padding == [0; 4];
    if g == 1 && one_by_one {
        return Vec::new();
    }
    if g == 1 && ci * kh * kw <= 32 && kh * kw != 1 && ow >= 16 {
        if let Some(ph) = phased(c) {
            return vec![padded(n * ci * plane_floats(c, h, w, kw, ph))];
        }
    }
    if g == 1 {
        let mut out = vec![temp(n * ci * kh * kw * oh * ow)];
        if c.padding.iter().any(|&p| p > 0) {
            out.push(padded(n * ci * plane_floats(c, h, w, kw, false)));
        }
        return out;
    }
    // Depthwise (and grouped) convolutions pad in the per-thread scratch.
    Vec::new()
}

/// The buffers the lowering of node `id` adds beside its outputs (none for most ops).
pub fn lowering_buffers(g: &Graph, id: NodeId) -> Vec<ExtraBuffer> {
    let node = g.node(id);
    let out = node.outputs.first().and_then(|t| t.shape.as_static());
    let (Some(x), Some(w), Some(out)) = (
        node.inputs.first().and_then(|v| dims4(g, *v)),
        node.inputs.get(1).and_then(|v| dims4(g, *v)),
        out.and_then(|o| <[u64; 4]>::try_from(o).ok()),
    ) else {
        return Vec::new();
    };
    if let Op::Conv2d(c) = &node.op {
        return conv_forward(c, x, [w[2], w[3]], [out[2], out[3]]);
    }
    if let Op::ConvTranspose2d(t) = &node.op {
        // x = dy [n, o, ho, wo], w = [o, c/g, kh, kw], out = [n, c, h, wd].
        let a = &t.conv;
        let [n, o, ho, wo] = x;
        let [_, _, kh, kw] = w;
        let [_, c, h, wd] = out;
        let g = a.groups.max(1);
        let (eh, ew) = (a.dilation[0] * (kh - 1) + 1, a.dilation[1] * (kw - 1) + 1);
        let (hd, wdd) = ((ho - 1) * a.stride[0] + 1, (wo - 1) * a.stride[1] + 1);
        let (qt, ql) = (
            (eh - 1).checked_sub(a.padding[0]),
            (ew - 1).checked_sub(a.padding[1]),
        );
        let (Some(qt), Some(ql)) = (qt, ql) else {
            return Vec::new();
        };
        let (Some(qb), Some(qr)) = (
            (h + eh - 1).checked_sub(hd + qt),
            (wd + ew - 1).checked_sub(wdd + ql),
        ) else {
            return Vec::new();
        };
        let mut bufs = Vec::new();
        if a.stride != [1, 1] {
            bufs.push(temp(n * o * hd * wdd));
        }
        let ig = o / g;
        bufs.push(temp(c * ig * kh * kw));
        let conv = ConvAttrs {
            stride: [1, 1],
            padding: [qt, ql, qb, qr],
            dilation: a.dilation,
            groups: a.groups,
        };
        bufs.extend(conv_forward(&conv, [n, o, hd, wdd], [kh, kw], [h, wd]));
        return bufs;
    }
    if let Op::Grad(GradOp::Conv2dWeight {
        conv: a,
        kernel: [kh, kw],
    }) = &node.op
    {
        // x [n, c, h, w], dy [n, o, ho, wo].
        let [n, c, h, wd] = x;
        let [_, o, ho, wo] = w;
        let (kh, kw) = (*kh, *kw);
        if a.groups == 1 {
            let p = ho * wo;
            let kk = c * kh * kw;
            let slices = [4, 2, 1]
                .into_iter()
                .find(|s| n % s == 0 && n >= *s)
                .unwrap_or(1);
            let mut bufs = vec![temp(n * p * kk), temp(n * o * p)];
            if slices > 1 {
                bufs.push(temp(slices * o * kk));
            }
            return bufs;
        }
        if a.groups == c {
            return vec![padded(n * c * plane_floats(a, h, wd, kw, false))];
        }
    }
    Vec::new()
}
