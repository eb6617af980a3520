//! Elementwise ops: unary activations, broadcasting binaries (folding integer shape
//! arithmetic), Clip, Where, Cast, and ops the IR spells as compositions (Elu, Selu, PRelu,
//! Softplus, Reciprocal).

use super::known::{Elems, Known, SInt};
use super::{compute_dtype, Importer, NodeCx, Val};
use crate::onnx::tensor::dtype_of;
use oar_ir::op::{BinaryOp, Literal, UnaryOp};
use oar_ir::{DType, Op, TensorType, ValueRef};

const OPS: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "Clip",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Gelu",
    "Greater",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "Less",
    "Log",
    "Max",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "Pow",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Selu",
    "Sigmoid",
    "Softplus",
    "Sqrt",
    "Sub",
    "Sum",
    "Tanh",
    "Where",
];

pub(super) fn handles(op: &str) -> bool {
    OPS.contains(&op)
}

/// The largest finite f32: Clip's open bounds (the text format has no infinity).
const F32_MAX: f64 = f32::MAX as f64;

pub(super) fn convert(imp: &mut Importer, cx: &NodeCx) -> Result<Vec<Val>, String> {
    let a = &cx.attrs;
    let unary = |u: UnaryOp| Some(u);
    let u = match cx.op_type {
        "Abs" => unary(UnaryOp::Abs),
        "Erf" => unary(UnaryOp::Erf),
        "Exp" => unary(UnaryOp::Exp),
        "Log" => unary(UnaryOp::Log),
        "Neg" => unary(UnaryOp::Neg),
        "Relu" => unary(UnaryOp::Relu),
        "Sigmoid" => unary(UnaryOp::Sigmoid),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "Tanh" => unary(UnaryOp::Tanh),
        "Mish" => unary(UnaryOp::Mish),
        "HardSwish" => unary(UnaryOp::HardSwish),
        "LeakyRelu" => unary(UnaryOp::LeakyRelu {
            alpha: a.f("alpha", 0.01)?,
        }),
        "HardSigmoid" => unary(UnaryOp::HardSigmoid {
            alpha: a.f("alpha", 0.2)?,
            beta: a.f("beta", 0.5)?,
        }),
        "Gelu" => match a.s("approximate", "none")?.as_str() {
            "none" => unary(UnaryOp::Gelu { tanh: false }),
            "tanh" => unary(UnaryOp::Gelu { tanh: true }),
            other => return Err(format!("unknown approximate `{other}`")),
        },
        _ => None,
    };
    if let Some(u) = u {
        let x = imp.ir(cx.need(0)?)?;
        return one(imp.add(Op::Unary(u), vec![x], cx.hint())?);
    }
    let binary = match cx.op_type {
        "Add" => Some(BinaryOp::Add),
        "Sub" => Some(BinaryOp::Sub),
        "Mul" => Some(BinaryOp::Mul),
        "Div" => Some(BinaryOp::Div),
        "Pow" => Some(BinaryOp::Pow),
        "Equal" => Some(BinaryOp::Equal),
        "Less" => Some(BinaryOp::Less),
        "Greater" => Some(BinaryOp::Greater),
        _ => None,
    };
    if let Some(op) = binary {
        return Ok(vec![binary_val(imp, cx, op, cx.need(0)?, cx.need(1)?)?]);
    }
    match cx.op_type {
        "Identity" => Ok(vec![imp.val(cx.need(0)?)?]),
        "Dropout" => {
            if cx.outputs.get(1).is_some_and(|m| !m.is_empty()) {
                return Err("the mask output is not supported (inference import)".into());
            }
            if let Some(t) = cx.input(2) {
                if imp.ints(t).ok() != Some(vec![0]) {
                    return Err(
                        "training_mode must be a constant false (random dropout is not imported)"
                            .into(),
                    );
                }
            }
            let x = imp.val(cx.need(0)?)?;
            if x.ir.is_none() {
                // Contents known at import time: dropout at inference leaves them as they are.
                return Ok(vec![x]);
            }
            // ONNX's Dropout scales by 1/(1-ratio) in training: Paddle's upscale_in_train.
            let p = match cx.input(1) {
                Some(r) => match imp.floats(r).ok().as_deref() {
                    Some(&[p]) => p,
                    Some(_) => return Err("ratio must be a scalar".into()),
                    // A ratio computed at run time has no IR spelling; at inference it does
                    // not matter, so the value passes through as before.
                    None => return Ok(vec![x]),
                },
                None => cx.attrs.f("ratio", 0.5)?,
            };
            let mode = oar_ir::op::DropoutMode::UpscaleInTrain;
            let x = imp.ir(cx.need(0)?)?;
            Ok(vec![Val::ir(imp.add(
                Op::Dropout {
                    p,
                    mode,
                    mask_of: None,
                },
                vec![x],
                cx.hint(),
            )?)])
        }
        "Sum" | "Max" | "Min" => {
            let op = match cx.op_type {
                "Sum" => BinaryOp::Add,
                "Max" => BinaryOp::Max,
                _ => BinaryOp::Min,
            };
            let names: Vec<&str> = (0..cx.inputs.len()).filter_map(|k| cx.input(k)).collect();
            let (first, rest) = names.split_first().ok_or("needs at least one input")?;
            let mut acc = imp.val(first)?;
            for (k, n) in rest.iter().enumerate() {
                let tmp = format!("{}.acc{k}", cx.hint());
                imp.set(&tmp, acc);
                acc = binary_val(imp, cx, op, &tmp, n)?;
            }
            Ok(vec![acc])
        }
        "Clip" => {
            let (lo, hi) = if imp.opset < 11 {
                (a.f("min", -F32_MAX)?, a.f("max", F32_MAX)?)
            } else {
                let bound = |k: usize, default: f64| -> Result<f64, String> {
                    match cx.input(k) {
                        None => Ok(default),
                        Some(n) => imp
                            .floats(n)?
                            .first()
                            .copied()
                            .ok_or_else(|| format!("bound `{n}` is empty")),
                    }
                };
                (bound(1, -F32_MAX)?, bound(2, F32_MAX)?)
            };
            let x = imp.ir(cx.need(0)?)?;
            one(imp.add(
                Op::Unary(UnaryOp::Clip { min: lo, max: hi }),
                vec![x],
                cx.hint(),
            )?)
        }
        "Cast" => {
            let code = a.i("to", 0)? as i32;
            let to = compute_dtype(
                dtype_of(code).ok_or_else(|| format!("cannot cast to type code {code}"))?,
            );
            let x = cx.need(0)?;
            if let Some(k) = imp.known(x) {
                return Ok(vec![Val::known(k.cast(to))]);
            }
            let xv = imp.ir(x)?;
            if imp.ty(x)?.dtype == to {
                return one(xv);
            }
            one(imp.add(Op::Cast { to }, vec![xv], cx.hint())?)
        }
        "Where" => {
            let c = imp.ir_as(cx.need(0)?, DType::Bool)?;
            let dt = common_dtype(imp, cx.need(1)?, cx.need(2)?)?;
            let x = imp.ir_as(cx.need(1)?, dt)?;
            let y = imp.ir_as(cx.need(2)?, dt)?;
            one(imp.add(Op::Where, vec![c, x, y], cx.hint())?)
        }
        "Reciprocal" => {
            let x = imp.ir(cx.need(0)?)?;
            let one_c = scalar(imp, 1.0, cx.hint())?;
            one(imp.add(Op::Binary(BinaryOp::Div), vec![one_c, x], cx.hint())?)
        }
        "Softplus" => {
            let x = imp.ir(cx.need(0)?)?;
            let e = imp.add(Op::Unary(UnaryOp::Exp), vec![x], cx.hint())?;
            let one_c = scalar(imp, 1.0, cx.hint())?;
            let s = imp.add(Op::Binary(BinaryOp::Add), vec![e, one_c], cx.hint())?;
            one(imp.add(Op::Unary(UnaryOp::Log), vec![s], cx.hint())?)
        }
        "Elu" | "Selu" => {
            let (alpha, gamma) = if cx.op_type == "Elu" {
                (a.f("alpha", 1.0)?, 1.0)
            } else {
                (
                    a.f("alpha", 1.673_263_192_176_818_8)?,
                    a.f("gamma", 1.050_701_022_148_132_3)?,
                )
            };
            let x = imp.ir(cx.need(0)?)?;
            let h = cx.hint();
            let zero = scalar(imp, 0.0, h)?;
            let pos = imp.add(Op::Binary(BinaryOp::Greater), vec![x, zero], h)?;
            let e = imp.add(Op::Unary(UnaryOp::Exp), vec![x], h)?;
            let one_c = scalar(imp, 1.0, h)?;
            let em1 = imp.add(Op::Binary(BinaryOp::Sub), vec![e, one_c], h)?;
            let alpha_c = scalar(imp, alpha, h)?;
            let neg = imp.add(Op::Binary(BinaryOp::Mul), vec![em1, alpha_c], h)?;
            let y = imp.add(Op::Where, vec![pos, x, neg], h)?;
            if gamma == 1.0 {
                return one(y);
            }
            let gamma_c = scalar(imp, gamma, h)?;
            one(imp.add(Op::Binary(BinaryOp::Mul), vec![y, gamma_c], h)?)
        }
        "PRelu" => {
            let x = imp.ir(cx.need(0)?)?;
            let dt = imp.ty(cx.need(0)?)?.dtype;
            let slope = imp.ir_as(cx.need(1)?, dt)?;
            let h = cx.hint();
            let zero = scalar(imp, 0.0, h)?;
            let neg = imp.add(Op::Binary(BinaryOp::Less), vec![x, zero], h)?;
            let scaled = imp.add(Op::Binary(BinaryOp::Mul), vec![x, slope], h)?;
            one(imp.add(Op::Where, vec![neg, scaled, x], h)?)
        }
        other => Err(format!("internal: {other} routed to pointwise")),
    }
}

fn one(v: ValueRef) -> Result<Vec<Val>, String> {
    Ok(vec![Val::ir(v)])
}

/// An f32 scalar constant.
pub(super) fn scalar(imp: &mut Importer, v: f64, hint: &str) -> Result<ValueRef, String> {
    imp.constant(
        TensorType::f32(&[]),
        Literal::Floats(vec![v]),
        &format!("{hint}.c"),
    )
}

/// The dtype both operands compute in: an IR operand's type wins over a constant's.
fn common_dtype(imp: &Importer, a: &str, b: &str) -> Result<DType, String> {
    let (ta, tb) = (imp.ty(a)?, imp.ty(b)?);
    let a_const = imp.known(a).is_some();
    Ok(if a_const && imp.known(b).is_none() {
        tb.dtype
    } else {
        ta.dtype
    })
}

/// A broadcasting binary op; integer constants (shape arithmetic) fold.
fn binary_val(
    imp: &mut Importer,
    cx: &NodeCx,
    op: BinaryOp,
    a: &str,
    b: &str,
) -> Result<Val, String> {
    if let (Some(ka), Some(kb)) = (imp.known(a), imp.known(b)) {
        if let Some(k) = fold_ints(cx.op_type, op, ka, kb) {
            return Ok(Val::known(k));
        }
    }
    let dt = if op == BinaryOp::Pow {
        imp.ty(a)?.dtype
    } else {
        common_dtype(imp, a, b)?
    };
    let x = imp.ir_as(a, dt)?;
    let y = imp.ir_as(b, dt)?;
    Ok(Val::ir(imp.add(Op::Binary(op), vec![x, y], cx.hint())?))
}

/// Elementwise integer arithmetic on known values of equal length, or one a scalar.
fn fold_ints(op_type: &str, op: BinaryOp, a: &Known, b: &Known) -> Option<Known> {
    let (Elems::I(x), Elems::I(y)) = (&a.elems, &b.elems) else {
        return None;
    };
    if a.dtype == DType::Bool || b.dtype == DType::Bool {
        return None;
    }
    let name = match op {
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => op_type,
        BinaryOp::Max => "Max",
        BinaryOp::Min => "Min",
        BinaryOp::Pow | BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => return None,
    };
    let n = x.len().max(y.len());
    if !(x.len() == n || x.len() == 1) || !(y.len() == n || y.len() == 1) {
        return None;
    }
    // Both non-scalar: same dims, elementwise; otherwise the longer operand's dims.
    if x.len() > 1 && y.len() > 1 && a.dims != b.dims {
        return None;
    }
    let dims = if x.len() == n && a.dims.len() >= b.dims.len() {
        a.dims.clone()
    } else {
        b.dims.clone()
    };
    let get = |v: &[SInt], i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
    let out = (0..n)
        .map(|i| SInt::arith(name, &get(x, i), &get(y, i)))
        .collect::<Option<Vec<_>>>()?;
    Some(Known {
        dtype: a.dtype,
        dims,
        elems: Elems::I(out),
    })
}
