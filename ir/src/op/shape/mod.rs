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

/// An input combination an op cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

type R<T> = Result<T, ShapeError>;

fn fail<T>(msg: impl Into<String>) -> R<T> {
    Err(ShapeError(msg.into()))
}

mod data_movement;
mod detect;
mod grad;
mod helpers;

use helpers::*;
pub use helpers::{broadcast, norm_axis};

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
        Op::BatchNorm { momentum, .. } => {
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
            match momentum {
                // Training form: y, new running mean, new running var.
                Some(_) => Ok(vec![x.clone(), inputs[3].clone(), inputs[4].clone()]),
                None => one(x.clone()),
            }
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
        Op::Nms(n) => detect::nms(op, n, inputs),
        Op::DeformConv2d(d) => detect::deform_conv2d(op, d, inputs, ctx),
        Op::Resize(r) => {
            arity(op, inputs, &[1])?;
            let x = &inputs[0];
            need_rank(op, "input (NCHW)", x, 4)?;
            let mut dims = x.shape.0[..2].to_vec();
            dims.extend(r.size.iter().cloned());
            one(TensorType::new(x.dtype, dims))
        }
        Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice(_)
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::BroadcastTo { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::Embedding
        | Op::Shape => data_movement::infer(op, inputs),
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
        Op::Grad(g) => grad::infer(op, g, inputs, ctx),
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
