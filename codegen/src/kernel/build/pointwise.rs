//! Elementwise kernels: one flat parallel loop over the output; broadcast operands index
//! through div/rem of the flat index on their non-broadcast dims only.

use super::{Arg, Builder};
use crate::kernel::{Body, Cond, Expr, IExpr, Stmt, Un};
use oar_ir::op::{Op, UnaryOp};
use oar_ir::DType;

/// Elements per thread slice below which a kernel stays on one thread.
pub(crate) const GRAIN: i64 = 16 * 1024;

/// The flat index of an operand of shape `inp` at flat output index `i` of shape `out`
/// (numpy broadcasting; `inp` right-aligned).
pub(crate) fn bcast_index(i: &IExpr, out: &[i64], inp: &[i64]) -> IExpr {
    let n_in: i64 = inp.iter().product();
    if n_in == 1 {
        return IExpr::c(0);
    }
    if inp.len() == out.len() && inp == out
        || (inp.iter().product::<i64>() == out.iter().product::<i64>() && strip(inp) == strip(out))
    {
        return i.clone();
    }
    let off = out.len() - inp.len();
    let mut idx = IExpr::c(0);
    let mut in_stride = 1i64;
    let mut out_stride = 1i64;
    for d in (0..out.len()).rev() {
        let od = out[d];
        let id = if d >= off { inp[d - off] } else { 1 };
        if id != 1 {
            let coord = i.clone().div(out_stride).rem(od);
            idx = idx.add(coord.mul(in_stride));
        }
        in_stride *= id;
        out_stride *= od;
    }
    idx
}

fn strip(s: &[i64]) -> Vec<i64> {
    s.iter().copied().filter(|&d| d != 1).collect()
}

/// An elementwise kernel: `out[i] = f(operands at i)`.
pub(crate) fn map(
    b: &mut Builder,
    name: &str,
    ins: &[Arg],
    out: &Arg,
    f: impl Fn(&[Expr], &IExpr) -> Expr,
) -> Result<(), String> {
    let n: i64 = out.shape.iter().product();
    let flat = IExpr::v(0);
    let simple = ins.iter().all(|a| {
        let idx = bcast_index(&flat, &out.shape, &a.shape);
        idx == flat || idx == IExpr::c(0)
    });
    let mut args = vec![out.buf];
    args.extend(ins.iter().map(|a| a.buf));
    if simple {
        let loads: Vec<Expr> = ins
            .iter()
            .enumerate()
            .map(|(k, a)| load(k + 1, a.dtype, bcast_index(&flat, &out.shape, &a.shape)))
            .collect();
        let body = vec![Stmt::par(
            n,
            vec![Stmt::Store {
                buf: 0,
                idx: flat.clone(),
                val: f(&loads, &flat),
            }],
        )];
        return b.kernel(name, &args, Body::Loops(body), n, GRAIN);
    }
    // Broadcasting: a loop nest over the output with per-operand strides (0 where an
    // operand is broadcast), adjacent dims merged where every operand is contiguous across
    // them — no div/rem per element.
    let r = out.shape.len();
    let strides_of = |shape: &[i64]| -> Vec<i64> {
        let off = r - shape.len();
        let mut st = vec![0i64; r];
        let mut acc = 1;
        for d in (0..r).rev() {
            let dim = if d >= off { shape[d - off] } else { 1 };
            st[d] = if dim == 1 { 0 } else { acc };
            acc *= dim;
        }
        st
    };
    let mut all: Vec<Vec<i64>> = vec![strides_of(&out.shape)];
    all.extend(ins.iter().map(|a| strides_of(&a.shape)));
    // Groups of dims, innermost first: (extent, stride per operand).
    let mut groups: Vec<(i64, Vec<i64>)> = Vec::new();
    for d in (0..r).rev() {
        let ext = out.shape[d];
        if ext == 1 {
            continue;
        }
        let st: Vec<i64> = all.iter().map(|s| s[d]).collect();
        if let Some((gext, gst)) = groups.last_mut() {
            let mergeable = st.iter().zip(gst.iter()).all(|(&o, &i)| o == i * *gext);
            if mergeable {
                *gext *= ext;
                continue;
            }
        }
        groups.push((ext, st));
    }
    groups.reverse();
    let vars: Vec<IExpr> = (0..groups.len()).map(|g| IExpr::v(g as u32)).collect();
    let index = |k: usize| -> IExpr {
        groups
            .iter()
            .zip(&vars)
            .fold(IExpr::c(0), |acc, ((_, st), v)| {
                acc.add(v.clone().mul(st[k]))
            })
    };
    let out_idx = index(0);
    let loads: Vec<Expr> = ins
        .iter()
        .enumerate()
        .map(|(k, a)| load(k + 1, a.dtype, index(k + 1)))
        .collect();
    let mut body = vec![Stmt::Store {
        buf: 0,
        idx: out_idx.clone(),
        val: f(&loads, &out_idx),
    }];
    for (g, (ext, _)) in groups.iter().enumerate().rev() {
        body = vec![Stmt::For {
            var: g as u32,
            extent: *ext,
            parallel: g == 0,
            body,
        }];
    }
    let outer = groups.first().map_or(1, |g| g.0);
    let inner = (n / outer.max(1)).max(1);
    b.kernel(
        name,
        &args,
        Body::Loops(body),
        outer,
        (GRAIN / inner).max(1),
    )
}

/// A load as f32 (integers convert, bools are 0/1).
fn load(buf: usize, dtype: DType, idx: IExpr) -> Expr {
    match dtype {
        DType::I64 => Expr::FromInt(IExpr::Load(buf, Box::new(idx))),
        DType::Bool => Expr::Select(
            Cond::Bool(buf, idx),
            Box::new(Expr::C(1.0)),
            Box::new(Expr::C(0.0)),
        ),
        _ => Expr::Load(buf, idx),
    }
}

/// A unary op as an expression.
pub(crate) fn unary_expr(u: UnaryOp, x: Expr) -> Expr {
    let c = Expr::C;
    let clip = |e: Expr, lo: f32, hi: f32| e.max(c(lo)).min(c(hi));
    match u {
        UnaryOp::Neg => x.un(Un::Neg),
        UnaryOp::Exp => x.un(Un::Exp),
        UnaryOp::Log => x.un(Un::Log),
        UnaryOp::Sqrt => x.un(Un::Sqrt),
        UnaryOp::Rsqrt => c(1.0).div(x.un(Un::Sqrt)),
        UnaryOp::Tanh => x.un(Un::Tanh),
        UnaryOp::Erf => x.un(Un::Erf),
        UnaryOp::Abs => x.un(Un::Abs),
        UnaryOp::Relu => x.max(c(0.0)),
        UnaryOp::Relu6 => clip(x, 0.0, 6.0),
        UnaryOp::Clip { min, max } => clip(x, min as f32, max as f32),
        UnaryOp::LeakyRelu { alpha } => x
            .clone()
            .max(c(0.0))
            .add(c(alpha as f32).mul(x.min(c(0.0)))),
        UnaryOp::Sigmoid => c(1.0).div(c(1.0).add(x.un(Un::Neg).un(Un::Exp))),
        UnaryOp::HardSigmoid { alpha, beta } => {
            clip(x.mul(c(alpha as f32)).add(c(beta as f32)), 0.0, 1.0)
        }
        UnaryOp::HardSwish => x
            .clone()
            .mul(clip(x.mul(c(1.0 / 6.0)).add(c(0.5)), 0.0, 1.0)),
        UnaryOp::Gelu { tanh: false } => c(0.5)
            .mul(x.clone())
            .mul(c(1.0).add(x.mul(c(std::f32::consts::FRAC_1_SQRT_2)).un(Un::Erf))),
        UnaryOp::Gelu { tanh: true } => {
            let cube = x.clone().mul(x.clone()).mul(x.clone());
            let inner = x
                .clone()
                .add(c(0.044715).mul(cube))
                .mul(c((2.0 / std::f32::consts::PI).sqrt()));
            c(0.5).mul(x).mul(c(1.0).add(inner.un(Un::Tanh)))
        }
        UnaryOp::Silu => x.clone().div(c(1.0).add(x.un(Un::Neg).un(Un::Exp))),
        UnaryOp::Mish => x
            .clone()
            .mul(c(1.0).add(x.un(Un::Exp)).un(Un::Log).un(Un::Tanh)),
    }
}

pub(crate) fn lower(
    b: &mut Builder,
    name: &str,
    op: &Op,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    if let (Op::Where, DType::I64) = (op, out.dtype) {
        return where_i64(b, name, ins, out);
    }
    // Comparisons write bool buffers (0/1 bytes); everything else computes in f32.
    let comparison = matches!(op, Op::Binary(bo) if bo.is_comparison());
    if out.dtype != DType::F32 && !(comparison && out.dtype == DType::Bool) {
        return Err(format!(
            "elementwise ops producing {} are not compiled",
            out.dtype.name()
        ));
    }
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } => {
            let e = super::inplace::expr_operator(op)
                .ok_or_else(|| format!("internal: {} is not elementwise", op.name()))?;
            map(b, name, ins, out, |x, _| super::inplace::op_expr(e, x))
        }
        Op::CausalMask { fill } => {
            let r = out.shape.len();
            let (m, n) = (out.shape[r - 2], out.shape[r - 1]);
            let fill = *fill as f32;
            map(b, name, ins, out, move |x, i| {
                let row = i.clone().div(n).rem(m);
                let col = i.clone().rem(n);
                // Keep j <= i + (n - m).
                let keep = Cond::Le(col.add(IExpr::c(m)), row.add(IExpr::c(n)));
                Expr::Select(keep, Box::new(x[0].clone()), Box::new(Expr::C(fill)))
            })
        }
        Op::Dropout { p, mode, .. } => {
            // Inference: identity (a shared buffer, never routed here) or a 1 - p scale.
            let k = mode.inference_scale(*p) as f32;
            map(b, name, ins, out, move |x, _| x[0].clone().mul(Expr::C(k)))
        }
        Op::BatchNorm {
            eps,
            momentum: None,
        } => {
            // Per-channel operands [C] broadcast as [C, 1, 1].
            let mut cshape = vec![1i64; ins[0].shape.len() - 1];
            cshape[0] = ins[0].shape[1];
            let chan: Vec<Arg> = ins[1..]
                .iter()
                .map(|a| Arg {
                    shape: cshape.clone(),
                    ..a.clone()
                })
                .collect();
            let mut all = vec![ins[0].clone()];
            all.extend(chan);
            let eps = *eps as f32;
            map(b, name, &all, out, move |x, _| {
                let inv = Expr::C(1.0).div(x[4].clone().add(Expr::C(eps)).un(Un::Sqrt));
                x[0].clone()
                    .sub(x[3].clone())
                    .mul(inv)
                    .mul(x[1].clone())
                    .add(x[2].clone())
            })
        }
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        // The training form (batch statistics) has its own kernel (train_ops).
        | Op::BatchNorm {
            momentum: Some(_), ..
        }
        | Op::MatMul(_)
        | Op::Conv2d(_)
        | Op::ConvTranspose2d(_)
        | Op::LayerNorm { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reduce(_)
        | Op::Pool(_)
        | Op::GlobalPool(_)
        | Op::Resize(_)
        | Op::Nms(_)
        | Op::DeformConv2d(_)
        | Op::Concat { .. }
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
        | Op::Shape
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::FusedConv2d { .. }
        | Op::FusedMatMul { .. }
        | Op::Fused { .. }
        | Op::Grad(_)
        | Op::Send { .. } => Err(format!("internal: {} routed to pointwise", op.name())),
    }
}

/// An integer `where` (the masked-LM loss clamps ignored labels): selects i64 elements
/// exactly, without a trip through f32.
fn where_i64(b: &mut Builder, name: &str, ins: &[Arg], out: &Arg) -> Result<(), String> {
    if ins[1].dtype != DType::I64 || ins[2].dtype != DType::I64 {
        return Err("an i64 `where` takes i64 operands".into());
    }
    let n: i64 = out.shape.iter().product();
    let i = IExpr::v(0);
    let at = |k: usize| IExpr::Load(k + 1, Box::new(bcast_index(&i, &out.shape, &ins[k].shape)));
    let cond = Cond::Bool(1, bcast_index(&i, &out.shape, &ins[0].shape));
    let body = vec![Stmt::par(
        n,
        vec![Stmt::Store {
            buf: 0,
            idx: i.clone(),
            val: Expr::FromInt(IExpr::select(cond, at(1), at(2))),
        }],
    )];
    b.kernel(
        name,
        &[out.buf, ins[0].buf, ins[1].buf, ins[2].buf],
        Body::Loops(body),
        n,
        GRAIN,
    )
}

/// `dst[i] = src[i]` for `n` elements.
pub(crate) fn copy(
    b: &mut Builder,
    src: usize,
    dst: usize,
    n: i64,
    dtype: DType,
) -> Result<(), String> {
    if dtype != DType::F32 {
        return Err(format!("copying {} outputs is not compiled", dtype.name()));
    }
    super::data_movement::gather_copy(b, "copy", dst, src, &[], n, IExpr::v(0))
}
