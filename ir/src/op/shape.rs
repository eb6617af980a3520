//! Shape and dtype inference for every op, symbolic dims included.
//!
//! A symbolic dim survives an op when the result is again a monomial (`N`, `2*N`, `N*seq`);
//! otherwise inference fails and says which dim needs a static size.

use super::*;
use crate::dist::ProcessMesh;
use crate::types::{Shape, TensorType};
use std::collections::BTreeMap;

/// What inference needs to know beyond the op's inputs.
#[derive(Default, Clone, Copy)]
pub struct InferCtx<'a> {
    /// Module-level meshes, by name, for the group sizes of collectives.
    pub meshes: Option<&'a BTreeMap<String, ProcessMesh>>,
    /// Module-level functions, by name, for the bodies of `fused` nodes.
    pub functions: Option<&'a BTreeMap<String, crate::graph::Graph>>,
}

fn epilogue_types(
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

/// An input combination an op cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

type R<T> = Result<T, ShapeError>;

fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(ShapeError(msg.into()))
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

fn arity(op: &Op, inputs: &[TensorType], allowed: &[usize]) -> R<()> {
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

fn same_dtype(op: &Op, a: &TensorType, b: &TensorType) -> R<()> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        fail(format!(
            "`{}` needs operands of one dtype, found {a} and {b}",
            op.name()
        ))
    }
}

fn need_rank(op: &Op, what: &str, t: &TensorType, rank: usize) -> R<()> {
    if t.rank() == rank {
        Ok(())
    } else {
        fail(format!(
            "`{}` needs {what} of rank {rank}, found {t}",
            op.name()
        ))
    }
}

fn need_int(op: &Op, what: &str, t: &TensorType) -> R<()> {
    if t.dtype.is_int() {
        Ok(())
    } else {
        fail(format!("`{}` needs integer {what}, found {t}", op.name()))
    }
}

fn same_dim(op: &Op, what: &str, a: &Dim, b: &Dim) -> R<()> {
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
fn add_dims(a: &Dim, b: &Dim) -> Option<Dim> {
    if let (Dim::Static(x), Dim::Static(y)) = (a, b) {
        return Some(Dim::Static(x + y));
    }
    let (ca, ma) = a.split_coef();
    let (cb, mb) = b.split_coef();
    (ma == mb).then(|| ma.mul(&Dim::Static(ca + cb)))
}

/// A sliding window along one spatial dim.
struct Window {
    /// Kernel extent after dilation.
    eff_kernel: u64,
    /// Padding at the start.
    pad_begin: u64,
    /// Padding at both ends together.
    pads: u64,
    stride: u64,
    ceil: bool,
}

/// Output size of a sliding window (conv, pool).
fn window_out(op: &Op, what: &str, d: &Dim, w: Window) -> R<Dim> {
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

fn group_size(op: &Op, g: &CommGroup, ctx: &InferCtx) -> R<u64> {
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

fn scale_dim(op: &Op, d: &Dim, n: u64, divide: bool) -> R<Dim> {
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

/// Infers the output types of `op` applied to `inputs`. Sources return `declared`.
pub fn infer_types(
    op: &Op,
    inputs: &[TensorType],
    declared: &[TensorType],
    ctx: &InferCtx,
) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Input | Op::Param(_) | Op::Recv { .. } => {
            arity(op, inputs, &[0])?;
            if declared.len() != 1 {
                return fail(format!("`{}` has exactly one output", op.name()));
            }
            Ok(declared.to_vec())
        }
        Op::Constant(lit) => {
            arity(op, inputs, &[0])?;
            let [t] = declared else {
                return fail("`constant` has exactly one output");
            };
            let n =
                t.shape.numel().as_static().ok_or_else(|| {
                    ShapeError(format!("a constant needs a static shape, found {t}"))
                })?;
            if n != lit.len() as u64 {
                return fail(format!(
                    "constant of type {t} needs {n} values, found {}",
                    lit.len()
                ));
            }
            let float_lit = matches!(lit, Literal::Floats(_));
            if float_lit != t.dtype.is_float() {
                return fail(format!(
                    "constant of type {t} needs {} values",
                    if t.dtype.is_float() {
                        "float"
                    } else {
                        "integer"
                    }
                ));
            }
            Ok(declared.to_vec())
        }
        Op::Unary(_) | Op::Dropout { .. } => {
            arity(op, inputs, &[1])?;
            if !inputs[0].dtype.is_float() {
                return fail(format!(
                    "`{}` needs a float operand, found {}",
                    op.name(),
                    inputs[0]
                ));
            }
            one(inputs[0].clone())
        }
        Op::Binary(b) => {
            arity(op, inputs, &[2])?;
            same_dtype(op, &inputs[0], &inputs[1])?;
            let shape = broadcast(&inputs[0].shape, &inputs[1].shape)
                .map_err(|e| ShapeError(format!("`{}`: {e}", op.name())))?;
            let dtype = if b.is_comparison() {
                DType::Bool
            } else {
                inputs[0].dtype
            };
            one(TensorType { dtype, shape })
        }
        Op::Where => {
            arity(op, inputs, &[3])?;
            if inputs[0].dtype != DType::Bool {
                return fail(format!(
                    "`where` needs a bool condition, found {}",
                    inputs[0]
                ));
            }
            same_dtype(op, &inputs[1], &inputs[2])?;
            let s = broadcast(&inputs[0].shape, &inputs[1].shape)
                .and_then(|s| broadcast(&s, &inputs[2].shape))
                .map_err(|e| ShapeError(format!("`where`: {e}")))?;
            one(TensorType {
                dtype: inputs[1].dtype,
                shape: s,
            })
        }
        Op::Cast { to } => {
            arity(op, inputs, &[1])?;
            one(inputs[0].with_dtype(*to))
        }
        Op::MatMul(m) => {
            arity(op, inputs, &[2])?;
            let (a, b) = (&inputs[0], &inputs[1]);
            same_dtype(op, a, b)?;
            if a.rank() < 2 || b.rank() < 2 {
                return fail(format!(
                    "`matmul` needs operands of rank ≥ 2, found {a} and {b}"
                ));
            }
            let (ra, rb) = (a.rank(), b.rank());
            let (m_dim, ka) = if m.transpose_a {
                (&a.shape.0[ra - 1], &a.shape.0[ra - 2])
            } else {
                (&a.shape.0[ra - 2], &a.shape.0[ra - 1])
            };
            let (kb, n_dim) = if m.transpose_b {
                (&b.shape.0[rb - 1], &b.shape.0[rb - 2])
            } else {
                (&b.shape.0[rb - 2], &b.shape.0[rb - 1])
            };
            if ka != kb {
                return fail(format!(
                    "`matmul`: inner dimensions differ: {a} × {b} ({ka} vs {kb})"
                ));
            }
            let batch = broadcast(
                &Shape(a.shape.0[..ra - 2].to_vec()),
                &Shape(b.shape.0[..rb - 2].to_vec()),
            )
            .map_err(|e| ShapeError(format!("`matmul` batch dims: {e}")))?;
            let mut dims = batch.0;
            dims.push(m_dim.clone());
            dims.push(n_dim.clone());
            one(TensorType::new(a.dtype, dims))
        }
        Op::Conv2d(c) | Op::ConvTranspose2d(ConvTransposeAttrs { conv: c, .. }) => {
            arity(op, inputs, &[2, 3])?;
            let (x, w) = (&inputs[0], &inputs[1]);
            same_dtype(op, x, w)?;
            need_rank(op, "input (NCHW)", x, 4)?;
            need_rank(op, "weight", w, 4)?;
            if c.groups == 0 || c.dilation.contains(&0) {
                return fail(format!(
                    "`{}` groups and dilation must be positive",
                    op.name()
                ));
            }
            let g = Dim::Static(c.groups);
            let transpose = matches!(op, Op::ConvTranspose2d(_));
            // conv: w = [O, C/g, kh, kw]; conv_transpose: w = [C, O/g, kh, kw].
            let (w_in, out_ch) = if transpose {
                (w.shape.0[0].clone(), w.shape.0[1].mul(&g))
            } else {
                (w.shape.0[1].mul(&g), w.shape.0[0].clone())
            };
            if w_in != x.shape.0[1] {
                return fail(format!(
                    "`{}`: input has {} channels but the weight {} expects {} (groups={})",
                    op.name(),
                    x.shape.0[1],
                    w,
                    w_in,
                    c.groups
                ));
            }
            if let Some(o) = out_ch.as_static() {
                if o % c.groups != 0 {
                    return fail(format!(
                        "`{}`: {o} output channels do not split into {} groups",
                        op.name(),
                        c.groups
                    ));
                }
            }
            if let Some(bias) = inputs.get(2) {
                if bias.shape.0 != [out_ch.clone()] {
                    return fail(format!(
                        "`{}`: bias must be [{out_ch}], found {bias}",
                        op.name()
                    ));
                }
            }
            let mut dims = vec![x.shape.0[0].clone(), out_ch];
            for i in 0..2 {
                let k = w.shape.0[2 + i].as_static().ok_or_else(|| {
                    ShapeError(format!(
                        "`{}` needs a static kernel size, found {w}",
                        op.name()
                    ))
                })?;
                let eff = c.dilation[i] * (k.max(1) - 1) + 1;
                let pads = c.padding[i] + c.padding[i + 2];
                let what = if i == 0 { "height" } else { "width" };
                let d = &x.shape.0[2 + i];
                let out = if let Op::ConvTranspose2d(t) = op {
                    transpose_out(op, what, d, eff, pads, c.stride[i], t.output_padding[i])?
                } else {
                    window_out(
                        op,
                        what,
                        d,
                        Window {
                            eff_kernel: eff,
                            pad_begin: c.padding[i],
                            pads,
                            stride: c.stride[i],
                            ceil: false,
                        },
                    )?
                };
                dims.push(out);
            }
            one(TensorType::new(x.dtype, dims))
        }
        Op::BatchNorm { .. } => {
            arity(op, inputs, &[5])?;
            let x = &inputs[0];
            if x.rank() < 2 {
                return fail(format!(
                    "`batch_norm` needs rank ≥ 2 (N, C, ...), found {x}"
                ));
            }
            let c = &x.shape.0[1];
            for (t, what) in inputs[1..].iter().zip(["scale", "bias", "mean", "var"]) {
                if t.shape.0 != [c.clone()] {
                    return fail(format!(
                        "`batch_norm`: {what} must be [{c}] for input {x}, found {t}"
                    ));
                }
                same_dtype(op, x, t)?;
            }
            one(x.clone())
        }
        Op::LayerNorm { axis, .. } => {
            arity(op, inputs, &[3])?;
            let x = &inputs[0];
            let a = norm_axis(*axis, x.rank())?;
            let norm_shape = &x.shape.0[a..];
            for (t, what) in inputs[1..].iter().zip(["scale", "bias"]) {
                if t.shape.0 != norm_shape {
                    return fail(format!(
                        "`layer_norm`: {what} must be {} for input {x} at axis {axis}, found {t}",
                        Shape(norm_shape.to_vec())
                    ));
                }
                same_dtype(op, x, t)?;
            }
            one(x.clone())
        }
        Op::CausalMask { .. } => {
            arity(op, inputs, &[1])?;
            if inputs[0].rank() < 2 || !inputs[0].dtype.is_float() {
                return fail(format!(
                    "`causal_mask` needs float scores of rank ≥ 2, found {}",
                    inputs[0]
                ));
            }
            one(inputs[0].clone())
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            arity(op, inputs, &[1])?;
            norm_axis(*axis, inputs[0].rank())?;
            one(inputs[0].clone())
        }
        Op::Reduce(r) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let mut axes: Vec<usize> = r
                .axes
                .iter()
                .map(|&a| norm_axis(a, x.rank()))
                .collect::<R<_>>()?;
            if axes.is_empty() {
                axes = (0..x.rank()).collect();
            }
            let mut seen = axes.clone();
            seen.sort();
            seen.dedup();
            if seen.len() != axes.len() {
                return fail(format!("`{}` repeats an axis in {:?}", op.name(), r.axes));
            }
            let dims = x
                .shape
                .0
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match (axes.contains(&i), r.keepdims) {
                    (false, _) => Some(d.clone()),
                    (true, true) => Some(Dim::Static(1)),
                    (true, false) => None,
                })
                .collect();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Pool(p) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            need_rank(op, "input (NCHW)", x, 4)?;
            let mut dims = x.shape.0[..2].to_vec();
            for i in 0..2 {
                let what = if i == 0 { "height" } else { "width" };
                let pads = p.padding[i] + p.padding[i + 2];
                let w = Window {
                    eff_kernel: p.kernel[i],
                    pad_begin: p.padding[i],
                    pads,
                    stride: p.stride[i],
                    ceil: p.ceil_mode,
                };
                dims.push(window_out(op, what, &x.shape.0[2 + i], w)?);
            }
            one(TensorType::new(x.dtype, dims))
        }
        Op::GlobalPool(_) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            if x.rank() < 3 {
                return fail(format!(
                    "`{}` needs rank ≥ 3 (N, C, spatial...), found {x}",
                    op.name()
                ));
            }
            let mut dims = x.shape.0[..2].to_vec();
            dims.extend(std::iter::repeat_n(Dim::Static(1), x.rank() - 2));
            one(TensorType::new(x.dtype, dims))
        }
        Op::Resize(r) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            need_rank(op, "input (NCHW)", x, 4)?;
            let mut dims = x.shape.0[..2].to_vec();
            dims.extend(r.size.iter().cloned());
            one(TensorType::new(x.dtype, dims))
        }
        Op::Concat { axis } => {
            if inputs.is_empty() {
                return fail("`concat` needs at least one input");
            }
            let first = &inputs[0];
            let a = norm_axis(*axis, first.rank())?;
            let mut total = first.shape.0[a].clone();
            for t in &inputs[1..] {
                same_dtype(op, first, t)?;
                if t.rank() != first.rank() {
                    return fail(format!(
                        "`concat` needs inputs of one rank, found {first} and {t}"
                    ));
                }
                for i in 0..t.rank() {
                    if i != a {
                        same_dim(
                            op,
                            &format!("dims {i} of {first} and {t}"),
                            &first.shape.0[i],
                            &t.shape.0[i],
                        )?;
                    }
                }
                total = add_dims(&total, &t.shape.0[a]).ok_or_else(|| {
                    ShapeError(format!(
                        "`concat`: the sum {total} + {} is not a single size",
                        t.shape.0[a]
                    ))
                })?;
            }
            let mut out = first.clone();
            out.shape.0[a] = total;
            one(out)
        }
        Op::Split { axis, sizes } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let a = norm_axis(*axis, x.rank())?;
            let sum: u64 = sizes.iter().sum();
            if x.shape.0[a] != Dim::Static(sum) {
                return fail(format!(
                    "`split`: sizes {sizes:?} add up to {sum} but dim {a} of {x} is {}",
                    x.shape.0[a]
                ));
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut t = x.clone();
                    t.shape.0[a] = Dim::Static(s);
                    t
                })
                .collect())
        }
        Op::Slice(s) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let n = s.axes.len();
            if s.starts.len() != n || s.ends.len() != n || s.steps.len() != n {
                return fail("`slice` needs axes, starts, ends and steps of one length");
            }
            let mut out = x.clone();
            for i in 0..n {
                let a = norm_axis(s.axes[i], x.rank())?;
                out.shape.0[a] = slice_len(&x.shape.0[a], s.starts[i], s.ends[i], s.steps[i])?;
            }
            one(out)
        }
        Op::Reshape { shape } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let total = x.shape.numel();
            let infer = shape
                .iter()
                .filter(|d| matches!(d, ReshapeDim::Infer))
                .count();
            if infer > 1 {
                return fail("`reshape` can infer at most one dim (-1)");
            }
            let known = shape.iter().fold(Dim::Static(1), |acc, d| match d {
                ReshapeDim::Dim(d) => acc.mul(d),
                ReshapeDim::Infer => acc,
            });
            let inferred = if infer == 1 {
                Some(total.div_exact(&known).ok_or_else(|| {
                    ShapeError(format!(
                        "`reshape`: {x} has {total} elements, not a multiple of {known}"
                    ))
                })?)
            } else {
                if known != total {
                    return fail(format!(
                        "`reshape`: {x} has {total} elements but the target has {known}"
                    ));
                }
                None
            };
            let dims = shape
                .iter()
                .map(|d| match d {
                    ReshapeDim::Dim(d) => d.clone(),
                    ReshapeDim::Infer => inferred.clone().unwrap_or(Dim::Static(1)),
                })
                .collect();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Transpose { perm } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..x.rank()).collect::<Vec<_>>() {
                return fail(format!(
                    "`transpose`: perm {perm:?} is not a permutation of the {} dims of {x}",
                    x.rank()
                ));
            }
            one(TensorType::new(
                x.dtype,
                perm.iter().map(|&p| x.shape.0[p].clone()).collect(),
            ))
        }
        Op::Squeeze { axes } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let axes: Vec<usize> = if axes.is_empty() {
                (0..x.rank())
                    .filter(|&i| x.shape.0[i] == Dim::Static(1))
                    .collect()
            } else {
                axes.iter()
                    .map(|&a| norm_axis(a, x.rank()))
                    .collect::<R<_>>()?
            };
            for &a in &axes {
                if x.shape.0[a] != Dim::Static(1) {
                    return fail(format!("`squeeze`: dim {a} of {x} is not 1"));
                }
            }
            let dims = (0..x.rank())
                .filter(|i| !axes.contains(i))
                .map(|i| x.shape.0[i].clone())
                .collect();
            one(TensorType::new(x.dtype, dims))
        }
        Op::Unsqueeze { axes } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let rank = x.rank() + axes.len();
            let mut at: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect::<R<_>>()?;
            at.sort();
            if at.windows(2).any(|w| w[0] == w[1]) {
                return fail(format!("`unsqueeze` repeats an axis in {axes:?}"));
            }
            let mut src = x.shape.0.iter();
            let dims = (0..rank)
                .map(|i| {
                    if at.contains(&i) {
                        Some(Dim::Static(1))
                    } else {
                        src.next().cloned()
                    }
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ShapeError("`unsqueeze` axes out of range".into()))?;
            one(TensorType::new(x.dtype, dims))
        }
        Op::Flatten { axis } => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            let r = x.rank() as i64;
            let a = if *axis < 0 { axis + r } else { *axis };
            if !(0..=r).contains(&a) {
                return fail(format!("`flatten`: axis {axis} out of range for {x}"));
            }
            let a = a as usize;
            let outer = Shape(x.shape.0[..a].to_vec()).numel();
            let inner = Shape(x.shape.0[a..].to_vec()).numel();
            one(TensorType::new(x.dtype, vec![outer, inner]))
        }
        Op::Gather { axis } => {
            arity(op, inputs, &[2])?;
            let (data, idx) = (&inputs[0], &inputs[1]);
            need_int(op, "indices", idx)?;
            let a = norm_axis(*axis, data.rank())?;
            let mut dims = data.shape.0[..a].to_vec();
            dims.extend(idx.shape.0.iter().cloned());
            dims.extend(data.shape.0[a + 1..].iter().cloned());
            one(TensorType::new(data.dtype, dims))
        }
        Op::GatherElements { axis } => {
            arity(op, inputs, &[2])?;
            let (data, idx) = (&inputs[0], &inputs[1]);
            need_int(op, "indices", idx)?;
            if idx.rank() != data.rank() {
                return fail(format!(
                    "`gather_elements` needs indices of the data's rank, found {data} and {idx}"
                ));
            }
            let a = norm_axis(*axis, data.rank())?;
            for i in (0..data.rank()).filter(|&i| i != a) {
                same_dim(
                    op,
                    &format!("dims {i} of {data} and {idx}"),
                    &data.shape.0[i],
                    &idx.shape.0[i],
                )?;
            }
            one(TensorType::new(data.dtype, idx.shape.0.clone()))
        }
        Op::Embedding => {
            arity(op, inputs, &[2])?;
            let (table, ids) = (&inputs[0], &inputs[1]);
            need_rank(op, "table [vocab, dim]", table, 2)?;
            need_int(op, "ids", ids)?;
            let mut dims = ids.shape.0.clone();
            dims.push(table.shape.0[1].clone());
            one(TensorType::new(table.dtype, dims))
        }
        Op::AllReduce { group, .. } | Op::Broadcast { group, .. } => {
            arity(op, inputs, &[1])?;
            group_size(op, group, ctx)?;
            one(inputs[0].clone())
        }
        Op::AllGather { axis, group } | Op::ReduceScatter { axis, group, .. } => {
            arity(op, inputs, &[1])?;
            let n = group_size(op, group, ctx)?;
            let mut t = inputs[0].clone();
            let a = norm_axis(*axis, t.rank())?;
            t.shape.0[a] = scale_dim(op, &t.shape.0[a], n, matches!(op, Op::ReduceScatter { .. }))?;
            one(t)
        }
        Op::AllToAll {
            split_axis,
            concat_axis,
            group,
        } => {
            arity(op, inputs, &[1])?;
            let n = group_size(op, group, ctx)?;
            let mut t = inputs[0].clone();
            let s = norm_axis(*split_axis, t.rank())?;
            let c = norm_axis(*concat_axis, t.rank())?;
            t.shape.0[s] = scale_dim(op, &t.shape.0[s], n, true)?;
            t.shape.0[c] = scale_dim(op, &t.shape.0[c], n, false)?;
            one(t)
        }
        Op::Send { .. } => {
            arity(op, inputs, &[1])?;
            Ok(vec![])
        }
        Op::FusedConv2d { conv, epilogue } => {
            if inputs.len() < 2 {
                return fail("`fused_conv2d` needs an input and a weight");
            }
            let out = infer_types(&Op::Conv2d(conv.clone()), &inputs[..2], &[], ctx)?.remove(0);
            epilogue_types(op, out, epilogue, &inputs[2..], true)
        }
        Op::FusedMatMul { mm, epilogue } => {
            if inputs.len() < 2 {
                return fail("`fused_matmul` needs two operands");
            }
            let out = infer_types(&Op::MatMul(*mm), &inputs[..2], &[], ctx)?.remove(0);
            epilogue_types(op, out, epilogue, &inputs[2..], false)
        }
        Op::Fused { func } => {
            let f = ctx
                .functions
                .and_then(|fs| fs.get(func))
                .ok_or_else(|| ShapeError(format!("`fused` refers to unknown function @{func}")))?;
            let want: Vec<TensorType> = f
                .inputs()
                .iter()
                .map(|&i| f.node(i).outputs[0].clone())
                .collect();
            if want != inputs {
                return fail(format!(
                    "`fused`: @{func} takes {} but is given {}",
                    crate::graph::types_text(&want),
                    crate::graph::types_text(inputs)
                ));
            }
            Ok(f.outputs()
                .iter()
                .filter_map(|v| f.value_type(*v).cloned())
                .collect())
        }
    }
}

fn transpose_out(
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
fn slice_len(d: &Dim, start: i64, end: i64, step: i64) -> R<Dim> {
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
