//! Checks and dimension arithmetic shared by the inference rules.

use super::*;

pub(super) fn epilogue_types(
    op: &Op,
    out: TensorType,
    e: &Epilogue,
    extra: &[TensorType],
    bias_is_channel: bool,
) -> R<Vec<TensorType>> {
    if extra.len() != e.extra_inputs() {
        return fail(format!(
            "`{}` with this epilogue takes {} inputs, found {}",
            op.name(),
            2 + e.extra_inputs(),
            2 + extra.len()
        ));
    }
    let mut rest = extra.iter();
    if e.bias {
        let b = rest
            .next()
            .ok_or_else(|| ShapeError("missing bias".into()))?;
        same_dtype(op, &out, b)?;
        let ok = if bias_is_channel {
            b.shape.0 == [out.shape.0[1].clone()]
        } else {
            broadcast(&out.shape, &b.shape).is_ok_and(|s| s == out.shape)
        };
        if !ok {
            return fail(format!(
                "`{}`: bias {b} does not fit the output {out}",
                op.name()
            ));
        }
    }
    if e.residual {
        let r = rest
            .next()
            .ok_or_else(|| ShapeError("missing residual".into()))?;
        if *r != out {
            return fail(format!(
                "`{}`: residual {r} must have the output's type {out}",
                op.name()
            ));
        }
    }
    if e.activation.is_some() && !out.dtype.is_float() {
        return fail(format!(
            "`{}`: an activation needs a float output, found {out}",
            op.name()
        ));
    }
    Ok(vec![out])
}

/// Resolves a possibly negative axis against a rank (`-1` is the last).
pub fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        fail(format!("axis {axis} is out of range for rank {rank}"))
    }
}

pub(super) fn arity(op: &Op, inputs: &[TensorType], allowed: &[usize]) -> R<()> {
    if allowed.contains(&inputs.len()) {
        Ok(())
    } else {
        let want = allowed
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        fail(format!(
            "`{}` takes {want} inputs, found {}",
            op.name(),
            inputs.len()
        ))
    }
}

pub(super) fn same_dtype(op: &Op, a: &TensorType, b: &TensorType) -> R<()> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        fail(format!(
            "`{}` needs operands of one dtype, found {a} and {b}",
            op.name()
        ))
    }
}

pub(super) fn need_rank(op: &Op, what: &str, t: &TensorType, rank: usize) -> R<()> {
    if t.rank() == rank {
        Ok(())
    } else {
        fail(format!(
            "`{}` needs {what} of rank {rank}, found {t}",
            op.name()
        ))
    }
}

pub(super) fn need_int(op: &Op, what: &str, t: &TensorType) -> R<()> {
    if t.dtype.is_int() {
        Ok(())
    } else {
        fail(format!("`{}` needs integer {what}, found {t}", op.name()))
    }
}

pub(super) fn same_dim(op: &Op, what: &str, a: &Dim, b: &Dim) -> R<()> {
    if a == b {
        Ok(())
    } else {
        fail(format!("`{}`: {what} differ: {a} vs {b}", op.name()))
    }
}

/// numpy broadcasting of two shapes.
pub fn broadcast(a: &Shape, b: &Shape) -> R<Shape> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| &a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| &b.0[j]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(Dim::Static(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Static(1))) => x.clone(),
            (Some(x), Some(y)) => {
                return fail(format!(
                    "shapes {a} and {b} do not broadcast: dim {x} vs {y}"
                ))
            }
            (None, None) => unreachable!("i < max rank"),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

/// Sum of two dims when it is again a single monomial (`N + N = 2*N`).
pub(super) fn add_dims(a: &Dim, b: &Dim) -> Option<Dim> {
    if let (Dim::Static(x), Dim::Static(y)) = (a, b) {
        return Some(Dim::Static(x + y));
    }
    let (ca, ma) = a.split_coef();
    let (cb, mb) = b.split_coef();
    (ma == mb).then(|| ma.mul(&Dim::Static(ca + cb)))
}

/// A sliding window along one spatial dim.
pub(super) struct Window {
    /// Kernel extent after dilation.
    pub eff_kernel: u64,
    /// Padding at the start.
    pub pad_begin: u64,
    /// Padding at both ends together.
    pub pads: u64,
    pub stride: u64,
    pub ceil: bool,
}

/// Output size of a sliding window (conv, pool).
pub(super) fn window_out(op: &Op, what: &str, d: &Dim, w: Window) -> R<Dim> {
    let Window {
        eff_kernel,
        pad_begin,
        pads,
        stride,
        ceil,
    } = w;
    if stride == 0 {
        return fail(format!("`{}` stride must be positive", op.name()));
    }
    match d {
        Dim::Static(n) => {
            let span = (n + pads).checked_sub(eff_kernel).ok_or_else(|| {
                ShapeError(format!(
                    "`{}`: window {eff_kernel} is larger than padded {what} {}",
                    op.name(),
                    n + pads
                ))
            })?;
            let mut out = if ceil { span.div_ceil(stride) + 1 } else { span / stride + 1 };
            // The last window must start inside the input or its leading padding (PyTorch, ONNX).
            if ceil && (out - 1) * stride >= n + pad_begin {
                out -= 1;
            }
            Ok(Dim::Static(out))
        }
        Dim::Sym(_) if stride == 1 && pads + 1 == eff_kernel => Ok(d.clone()),
        Dim::Sym(_) => fail(format!(
            "`{}`: symbolic {what} {d} with window {eff_kernel}, padding {pads}, stride {stride} has no symbolic output size; give a static {what}",
            op.name()
        )),
    }
}

pub(super) fn group_size(op: &Op, g: &CommGroup, ctx: &InferCtx) -> R<u64> {
    let meshes = ctx.meshes.ok_or_else(|| {
        ShapeError(format!(
            "`{}` needs a mesh but none are declared",
            op.name()
        ))
    })?;
    let mesh = meshes.get(&g.mesh).ok_or_else(|| {
        ShapeError(format!(
            "`{}` refers to unknown mesh @{}",
            op.name(),
            g.mesh
        ))
    })?;
    mesh.shape.get(g.axis).copied().ok_or_else(|| {
        ShapeError(format!(
            "`{}`: mesh @{} has {} axes, no axis {}",
            op.name(),
            g.mesh,
            mesh.shape.len(),
            g.axis
        ))
    })
}

pub(super) fn scale_dim(op: &Op, d: &Dim, n: u64, divide: bool) -> R<Dim> {
    if !divide {
        return Ok(d.mul(&Dim::Static(n)));
    }
    d.div_exact(&Dim::Static(n)).ok_or_else(|| {
        ShapeError(format!(
            "`{}`: dim {d} does not divide evenly over {n} ranks",
            op.name()
        ))
    })
}

pub(super) fn transpose_out(
    op: &Op,
    what: &str,
    d: &Dim,
    eff: u64,
    pads: u64,
    stride: u64,
    out_pad: u64,
) -> R<Dim> {
    // out = (d - 1)·s - pads + eff + out_pad = s·d + (eff + out_pad - s - pads)
    let extra = (eff + out_pad) as i64 - stride as i64 - pads as i64;
    match d {
        Dim::Static(n) => {
            let v = (*n as i64 - 1) * stride as i64 - pads as i64 + eff as i64 + out_pad as i64;
            if v <= 0 {
                return fail(format!("`{}`: output {what} would be {v}", op.name()));
            }
            Ok(Dim::Static(v as u64))
        }
        Dim::Sym(_) if extra == 0 => Ok(d.mul(&Dim::Static(stride))),
        Dim::Sym(_) => fail(format!(
            "`{}`: symbolic {what} {d} gives output {stride}*{d}{extra:+}, not a single size; give a static {what}",
            op.name()
        )),
    }
}

/// Length of an ONNX slice of a dim of size `d`.
pub(super) fn slice_len(d: &Dim, start: i64, end: i64, step: i64) -> R<Dim> {
    if step == 0 {
        return fail("`slice` step must not be 0");
    }
    match d {
        Dim::Static(n) => {
            let n = *n as i64;
            let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
            let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
            let len = if step > 0 {
                let s = clamp(norm(start), 0, n);
                let e = clamp(norm(end), 0, n);
                if e > s {
                    (e - s + step - 1) / step
                } else {
                    0
                }
            } else {
                let s = clamp(norm(start), -1, n - 1);
                let e = clamp(norm(end), -1, n - 1);
                if s > e {
                    (s - e + (-step) - 1) / (-step)
                } else {
                    0
                }
            };
            Ok(Dim::Static(len as u64))
        }
        Dim::Sym(_) if start == 0 && step == 1 && end >= i32::MAX as i64 => Ok(d.clone()),
        // An explicit window `start..end` of a symbolic dim is assumed in range (as ONNX
        // exporters assume); the interpreter checks the real size at run time.
        Dim::Sym(_) if step > 0 && 0 <= start && start <= end && end < i32::MAX as i64 => {
            Ok(Dim::Static(((end - start) as u64).div_ceil(step as u64)))
        }
        Dim::Sym(_) => fail(format!(
            "`slice` of symbolic dim {d} from {start} to {end} step {step} has no symbolic size"
        )),
    }
}
