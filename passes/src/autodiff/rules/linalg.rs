//! Matrix products (plain and with a fused epilogue), batched with broadcasting.
//!
//! For `y = A·B` with `A = op(a)`, `B = op(b)` (`op` an optional transpose of the last two
//! dims): `dA = g·Bᵀ` and `dB = Aᵀ·g`, and a transposed operand takes the transpose of its
//! product. Each is written as one `matmul` with transpose flags (no explicit transposes),
//! then summed over the batch dims the operand was broadcast along. A weight (a matrix
//! shared by every batch) times a batched, untransposed activation gets its gradient from
//! one flattened product, `[P·M, K]ᵀ · [P·M, N]`, rather than P products summed.

use super::elementwise::unary_grad;
use super::InputGrads;
use crate::autodiff::{AutodiffError, GradCx};
use oar_ir::op::{MatMulAttrs, Op};
use oar_ir::{NodeId, ValueRef};

/// The cotangents of `a` and `b` for `y = op(a)·op(b)` given `g` (at `y`'s shape).
fn matmul_grads(
    cx: &mut GradCx,
    node: NodeId,
    a: ValueRef,
    b: ValueRef,
    mm: MatMulAttrs,
    g: ValueRef,
    want: [bool; 2],
) -> Result<[Option<ValueRef>; 2], AutodiffError> {
    let (ta, tb) = (mm.transpose_a, mm.transpose_b);
    let ga = if want[0] {
        let d = if ta {
            // a = Aᵀ: da = (g·Bᵀ)ᵀ = B·gᵀ.
            cx.matmul(b, g, tb, true, node)?
        } else {
            cx.matmul(g, b, false, !tb, node)?
        };
        let t = cx.ty(a);
        Some(cx.unbroadcast(d, &t, node)?)
    } else {
        None
    };
    let gb = if want[1] {
        let d = if let Some((a2, g2)) = flattened(cx, a, b, ta, g, node)? {
            // The batch dims fold into the contraction: no [P, K, N] partials to sum.
            if tb {
                cx.matmul(g2, a2, true, false, node)?
            } else {
                cx.matmul(a2, g2, true, false, node)?
            }
        } else if tb {
            // b = Bᵀ: db = (Aᵀ·g)ᵀ = gᵀ·A.
            cx.matmul(g, a, true, ta, node)?
        } else {
            cx.matmul(a, g, !ta, false, node)?
        };
        let t = cx.ty(b);
        Some(cx.unbroadcast(d, &t, node)?)
    } else {
        None
    };
    Ok([ga, gb])
}

/// `a` and `g` reshaped to `[P·M, K]` and `[P·M, N]` when `b` is a matrix and `a` (not
/// transposed) carries batch dims `P`; `None` otherwise.
fn flattened(
    cx: &mut GradCx,
    a: ValueRef,
    b: ValueRef,
    ta: bool,
    g: ValueRef,
    node: NodeId,
) -> Result<Option<(ValueRef, ValueRef)>, AutodiffError> {
    let (ad, bd, gd) = (cx.dims(a), cx.dims(b), cx.dims(g));
    if ta || bd.len() != 2 || ad.len() < 3 || gd.len() != ad.len() {
        return Ok(None);
    }
    let rows: u64 = ad[..ad.len() - 1].iter().product();
    let (k, n) = (ad[ad.len() - 1], gd[gd.len() - 1]);
    if gd[..gd.len() - 1].iter().product::<u64>() != rows {
        return Ok(None);
    }
    let a2 = cx.reshape(a, &[rows, k], node)?;
    let g2 = cx.reshape(g, &[rows, n], node)?;
    Ok(Some((a2, g2)))
}

pub(super) fn matmul(
    cx: &mut GradCx,
    node: NodeId,
    gy: &[Option<ValueRef>],
    want: &[bool],
) -> InputGrads {
    let n = cx.graph().node(node).clone();
    let Some(g) = gy[0] else {
        return Ok(vec![None; n.inputs.len()]);
    };
    let (a, b) = (n.inputs[0], n.inputs[1]);
    if let Op::MatMul(mm) = &n.op {
        let [ga, gb] = matmul_grads(cx, node, a, b, *mm, g, [want[0], want[1]])?;
        return Ok(vec![ga, gb]);
    }
    let Op::FusedMatMul { mm, epilogue } = &n.op else {
        return Err(super::no_rule(
            cx,
            node,
            "internal: routed to the matmul rule",
        ));
    };
    // y = act(a·b + bias + residual): the activation's rule needs the pre-activation
    // value, recomputed unfused (the forward kernel keeps only y).
    let gz = match epilogue.activation {
        None => g,
        Some(act) => {
            let mut z = cx.matmul(a, b, mm.transpose_a, mm.transpose_b, node)?;
            for &extra in &n.inputs[2..] {
                z = cx.add(z, extra, node)?;
            }
            unary_grad(cx, act, z, ValueRef::new(node, 0), g, node)?
        }
    };
    let [ga, gb] = matmul_grads(cx, node, a, b, *mm, gz, [want[0], want[1]])?;
    let mut out = vec![ga, gb];
    // Bias and residual are added (broadcast) to the product: their cotangent is gz summed
    // back to their shape.
    for (k, &extra) in n.inputs.iter().enumerate().skip(2) {
        out.push(if want[k] {
            let t = cx.ty(extra);
            Some(cx.unbroadcast(gz, &t, node)?)
        } else {
            None
        });
    }
    Ok(out)
}
