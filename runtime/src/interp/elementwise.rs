//! Elementwise ops with numpy broadcasting.

use super::float::{by_float, floats, Real};
use super::{err, Res};
use crate::tensor::{strides, HostTensor, TensorData};
use num_traits::clamp;
use oar_ir::op::{BinaryOp, Epilogue, UnaryOp};
use oar_ir::DType;

/// numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Res<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = (i + a.len()).checked_sub(rank).map(|j| a[j]).unwrap_or(1);
            let db = (i + b.len()).checked_sub(rank).map(|j| b[j]).unwrap_or(1);
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// For each element of `out`, the linear index of the element of `inp` it reads.
pub(crate) fn broadcast_index(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    if out == inp {
        return (0..n).collect();
    }
    let offset = out.len() - inp.len();
    let in_strides = strides(inp);
    // Stride 0 along broadcast dims.
    let st: Vec<usize> = (0..out.len())
        .map(|i| {
            if i < offset || inp[i - offset] == 1 {
                0
            } else {
                in_strides[i - offset]
            }
        })
        .collect();
    let mut idx = vec![0usize; out.len()];
    let mut res = Vec::with_capacity(n);
    let mut lin = 0usize;
    for _ in 0..n {
        res.push(lin);
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            lin += st[d];
            if idx[d] < out[d] {
                break;
            }
            lin -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
    res
}

fn gelu_tanh<T: Real>(x: T) -> T {
    // 2/π in T, then its root in T: the f32 instantiation rounds as the f32 kernel did.
    let c = (T::c(2.0) / T::PI()).sqrt();
    T::c(0.5) * x * (T::one() + (c * (x + T::c(0.044715) * x * x * x)).tanh())
}

fn softplus<T: Real>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

/// One unary op on one value.
pub(crate) fn unary_scalar<T: Real>(op: UnaryOp, x: T) -> T {
    let (zero, one) = (T::zero(), T::one());
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => one / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => x.erf(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Relu => x.max(zero),
        UnaryOp::Relu6 => clamp(x, zero, T::c(6.0)),
        UnaryOp::LeakyRelu { alpha } => {
            if x >= zero {
                x
            } else {
                T::c(alpha) * x
            }
        }
        UnaryOp::Sigmoid => one / (one + (-x).exp()),
        UnaryOp::HardSigmoid { alpha, beta } => clamp(T::c(alpha) * x + T::c(beta), zero, one),
        UnaryOp::HardSwish => x * clamp((x + T::c(3.0)) / T::c(6.0), zero, one),
        UnaryOp::Gelu { tanh: true } => gelu_tanh(x),
        UnaryOp::Gelu { tanh: false } => T::c(0.5) * x * (one + (x / T::SQRT_2()).erf()),
        UnaryOp::Silu => x / (one + (-x).exp()),
        UnaryOp::Mish => x * softplus(x).tanh(),
        UnaryOp::Clip { min, max } => x.max(T::c(min)).min(T::c(max)),
    }
}

/// The tail of a fused contraction: add the residual, then apply the activation.
pub(crate) fn epilogue(
    y: HostTensor,
    e: &Epilogue,
    residual: Option<&HostTensor>,
) -> Res<HostTensor> {
    let y = match (e.residual, residual) {
        (true, Some(r)) => binary(BinaryOp::Add, &y, r)?,
        (true, None) => return err("the epilogue needs a residual input"),
        (false, _) => y,
    };
    match e.activation {
        Some(a) => unary(a, &y),
        None => Ok(y),
    }
}

pub(crate) fn unary(op: UnaryOp, x: &HostTensor) -> Res<HostTensor> {
    by_float!(x, unary_t(op, x))
}

fn unary_t<T: Real>(op: UnaryOp, x: &HostTensor) -> Res<HostTensor> {
    let v = floats::<T>(x)?;
    Ok(T::tensor(
        x.shape.clone(),
        v.iter().map(|&e| unary_scalar(op, e)).collect(),
    ))
}

fn float_binary<T: Real>(op: BinaryOp, a: T, b: T) -> T {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Equal => T::c((a == b) as u8 as f64),
        BinaryOp::Less => T::c((a < b) as u8 as f64),
        BinaryOp::Greater => T::c((a > b) as u8 as f64),
    }
}

/// A float binary op over broadcast index lists.
fn float_binary_all<T: Real>(
    op: BinaryOp,
    shape: Vec<usize>,
    (x, ia): (&[T], &[usize]),
    (y, ib): (&[T], &[usize]),
) -> HostTensor {
    let v: Vec<T> = ia
        .iter()
        .zip(ib)
        .map(|(&i, &j)| float_binary(op, x[i], y[j]))
        .collect();
    if op.is_comparison() {
        HostTensor::bool(shape, v.iter().map(|&e| e != T::zero()).collect())
    } else {
        T::tensor(shape, v)
    }
}

fn int_binary(op: BinaryOp, a: i64, b: i64) -> Res<i64> {
    Ok(match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div if b == 0 => return err("integer division by zero"),
        // ONNX Div on integers truncates toward zero.
        BinaryOp::Div => a.wrapping_div(b),
        BinaryOp::Pow if b < 0 => return err("integer power with a negative exponent"),
        BinaryOp::Pow => a.wrapping_pow(b.min(u32::MAX as i64) as u32),
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Equal => (a == b) as i64,
        BinaryOp::Less => (a < b) as i64,
        BinaryOp::Greater => (a > b) as i64,
    })
}

pub(crate) fn binary(op: BinaryOp, a: &HostTensor, b: &HostTensor) -> Res<HostTensor> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let ia = broadcast_index(&shape, &a.shape);
    let ib = broadcast_index(&shape, &b.shape);
    let cmp = op.is_comparison();
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            Ok(float_binary_all(op, shape, (x, &ia), (y, &ib)))
        }
        (TensorData::F64(x), TensorData::F64(y)) => {
            Ok(float_binary_all(op, shape, (x, &ia), (y, &ib)))
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            let v: Vec<i64> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| int_binary(op, x[i], y[j]))
                .collect::<Res<_>>()?;
            Ok(if cmp {
                HostTensor::bool(shape, v.iter().map(|&e| e != 0).collect())
            } else {
                HostTensor::i64(shape, v)
            })
        }
        (TensorData::Bool(x), TensorData::Bool(y)) if op == BinaryOp::Equal => {
            Ok(HostTensor::bool(
                shape,
                ia.iter().zip(&ib).map(|(&i, &j)| x[i] == y[j]).collect(),
            ))
        }
        _ => err(format!(
            "unsupported operands {} and {}",
            a.describe(),
            b.describe()
        )),
    }
}

pub(crate) fn where_(c: &HostTensor, a: &HostTensor, b: &HostTensor) -> Res<HostTensor> {
    let Some(cv) = c.as_bool() else {
        return err("condition must be bool");
    };
    let shape = broadcast_shape(&broadcast_shape(&c.shape, &a.shape)?, &b.shape)?;
    let (ic, ia, ib) = (
        broadcast_index(&shape, &c.shape),
        broadcast_index(&shape, &a.shape),
        broadcast_index(&shape, &b.shape),
    );
    let pick = |k: usize| cv[ic[k]];
    let n = ic.len();
    Ok(match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => HostTensor::f32(
            shape,
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        (TensorData::F64(x), TensorData::F64(y)) => HostTensor::f64(
            shape,
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        (TensorData::I64(x), TensorData::I64(y)) => HostTensor::i64(
            shape,
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        (TensorData::Bool(x), TensorData::Bool(y)) => HostTensor::bool(
            shape,
            (0..n)
                .map(|k| if pick(k) { x[ia[k]] } else { y[ib[k]] })
                .collect(),
        ),
        _ => return err("branches must have one dtype"),
    })
}

pub(crate) fn cast(x: &HostTensor, to: DType) -> Res<HostTensor> {
    let shape = x.shape.clone();
    let f = x.to_f64();
    Ok(match to {
        DType::F32 => HostTensor::f32(shape, f.iter().map(|&v| v as f32).collect()),
        DType::F64 => HostTensor::f64(shape, f),
        // Stored as f32 holding the nearest value of the narrow type.
        DType::BF16 | DType::F16 => {
            let mut v: Vec<f32> = f.iter().map(|&v| v as f32).collect();
            super::round_to_dtype(to, &mut v);
            HostTensor::f32(shape, v)
        }
        // Float to int truncates toward zero, as ONNX Cast does.
        DType::I64 => match &x.data {
            TensorData::I64(v) => HostTensor::i64(shape, v.clone()),
            _ => HostTensor::i64(shape, f.iter().map(|&v| v.trunc() as i64).collect()),
        },
        DType::Bool => HostTensor::bool(shape, f.iter().map(|&v| v != 0.0).collect()),
        other => {
            return err(format!(
                "the interpreter computes in f32, f64, i64 and bool; cannot cast to {other}"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_index_walks_strides() {
        assert_eq!(broadcast_index(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_index(&[2, 2], &[]), vec![0, 0, 0, 0]);
    }
}
