//! Elementwise ops in TOSA: the direct ones, and compositions for those TOSA lacks
//! (hard-swish, GELU, leaky ReLU, division as multiply by reciprocal).

use super::emit::{Emitter, V};
use oar_ir::op::{BinaryOp, UnaryOp};
use oar_ir::DType;

pub(super) fn unary(e: &mut Emitter, u: UnaryOp, x: &V) -> Result<V, String> {
    let r = x.shape.len();
    let d = x.dtype;
    Ok(match u {
        UnaryOp::Exp => e.unary("exp", x),
        UnaryOp::Log => e.unary("log", x),
        UnaryOp::Tanh => e.unary("tanh", x),
        UnaryOp::Erf => e.unary("erf", x),
        UnaryOp::Abs => e.unary("abs", x),
        UnaryOp::Sigmoid => e.unary("sigmoid", x),
        UnaryOp::Rsqrt => e.unary("rsqrt", x),
        UnaryOp::Sqrt => {
            let rs = e.unary("rsqrt", x);
            e.unary("reciprocal", &rs)
        }
        UnaryOp::Neg => {
            let zp = e.zero_point(d);
            let t = x.ty();
            e.op(
                &format!("tosa.negate {}, {}, {}", x.name, zp.name, zp.name),
                &format!("({t}, {}, {}) -> {t}", zp.ty(), zp.ty()),
                x.shape.clone(),
                d,
            )
        }
        UnaryOp::Relu => e.clamp(x, 0.0, f32::MAX as f64),
        UnaryOp::Relu6 => e.clamp(x, 0.0, 6.0),
        UnaryOp::Clip { min, max } => e.clamp(x, min, max),
        UnaryOp::LeakyRelu { alpha } => {
            let zero = e.scalar(0.0, r, d);
            let pos = e.binary("greater_equal", x, &zero, Some(DType::Bool))?;
            let a = e.scalar(alpha, r, d);
            let neg = e.binary("mul", x, &a, None)?;
            e.select(&pos, x, &neg)
        }
        UnaryOp::HardSigmoid { alpha, beta } => hard_sigmoid(e, x, alpha, beta)?,
        UnaryOp::HardSwish => {
            let h = hard_sigmoid(e, x, 1.0 / 6.0, 0.5)?;
            e.binary("mul", x, &h, None)?
        }
        UnaryOp::Gelu { tanh } => {
            let inner = if tanh {
                let sq = e.binary("mul", x, x, None)?;
                let cube = e.binary("mul", &sq, x, None)?;
                let c = e.scalar(0.044715, r, d);
                let t = e.binary("mul", &cube, &c, None)?;
                let s = e.binary("add", x, &t, None)?;
                let k = e.scalar((2.0 / std::f64::consts::PI).sqrt(), r, d);
                let arg = e.binary("mul", &s, &k, None)?;
                e.unary("tanh", &arg)
            } else {
                let k = e.scalar(std::f64::consts::FRAC_1_SQRT_2, r, d);
                let arg = e.binary("mul", x, &k, None)?;
                e.unary("erf", &arg)
            };
            let one = e.scalar(1.0, r, d);
            let p = e.binary("add", &inner, &one, None)?;
            let half = e.scalar(0.5, r, d);
            let hx = e.binary("mul", x, &half, None)?;
            e.binary("mul", &hx, &p, None)?
        }
        UnaryOp::Silu => {
            let s = e.unary("sigmoid", x);
            e.binary("mul", x, &s, None)?
        }
        UnaryOp::Mish => {
            let ex = e.unary("exp", x);
            let one = e.scalar(1.0, r, d);
            let p = e.binary("add", &ex, &one, None)?;
            let sp = e.unary("log", &p);
            let t = e.unary("tanh", &sp);
            e.binary("mul", x, &t, None)?
        }
    })
}

fn hard_sigmoid(e: &mut Emitter, x: &V, alpha: f64, beta: f64) -> Result<V, String> {
    let r = x.shape.len();
    let a = e.scalar(alpha, r, x.dtype);
    let b = e.scalar(beta, r, x.dtype);
    let m = e.binary("mul", x, &a, None)?;
    let s = e.binary("add", &m, &b, None)?;
    Ok(e.clamp(&s, 0.0, 1.0))
}

pub(super) fn binary(e: &mut Emitter, op: BinaryOp, a: &V, b: &V) -> Result<V, String> {
    match op {
        BinaryOp::Add => e.binary("add", a, b, None),
        BinaryOp::Sub => e.binary("sub", a, b, None),
        BinaryOp::Mul => e.binary("mul", a, b, None),
        BinaryOp::Div if a.dtype.is_float() => {
            let r = e.unary("reciprocal", b);
            e.binary("mul", a, &r, None)
        }
        BinaryOp::Div => Err("integer division has no TOSA form for i64".into()),
        BinaryOp::Pow => e.binary("pow", a, b, None),
        BinaryOp::Max => e.binary("maximum", a, b, None),
        BinaryOp::Min => e.binary("minimum", a, b, None),
        BinaryOp::Equal => e.binary("equal", a, b, Some(DType::Bool)),
        BinaryOp::Greater => e.binary("greater", a, b, Some(DType::Bool)),
        BinaryOp::Less => e.binary("greater", b, a, Some(DType::Bool)),
    }
}
