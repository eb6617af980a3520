//! The float element types the interpreter computes in (f32, and f64 for gradient checks).
//!
//! Every float kernel is written once, generic over [`Real`], and dispatched on the storage
//! type of its first float operand with [`by_float!`]. The f32 instantiation performs exactly
//! the operations the f32-only kernels did (constants are rounded to f32 before use, f64
//! accumulations convert once at the end), so f32 results are bit-identical to before.

use super::Res;
use crate::tensor::{HostTensor, TensorData};
use num_traits::{Float, FloatConst};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign};

/// A float element type of host tensors.
pub(crate) trait Real:
    Float + FloatConst + Sum + AddAssign + MulAssign + Debug + Send + Sync + 'static
{
    /// The data of `t`, if it is stored as this type.
    fn slice(t: &HostTensor) -> Option<&[Self]>;
    /// A tensor of this type.
    fn tensor(shape: Vec<usize>, data: Vec<Self>) -> HostTensor;
    /// `x` rounded to this type (an attribute or an f64 accumulator).
    fn c(x: f64) -> Self;
    /// This value widened to f64 (exact).
    fn f64(self) -> f64;
    /// The error function, from libm at this type's precision.
    fn erf(self) -> Self;
}

impl Real for f32 {
    fn slice(t: &HostTensor) -> Option<&[f32]> {
        t.as_f32()
    }
    fn tensor(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        HostTensor::f32(shape, data)
    }
    fn c(x: f64) -> f32 {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
}

impl Real for f64 {
    fn slice(t: &HostTensor) -> Option<&[f64]> {
        t.as_f64()
    }
    fn tensor(shape: Vec<usize>, data: Vec<f64>) -> HostTensor {
        HostTensor::f64(shape, data)
    }
    fn c(x: f64) -> f64 {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}

/// The elements of `t` as `T`, or an error naming what was found: a kernel's operands share
/// one float type (the graph's types say so; a mixed call is a bug in the caller's graph).
pub(crate) fn floats<T: Real>(t: &HostTensor) -> Res<&[T]> {
    T::slice(t).ok_or_else(|| {
        format!(
            "needs {}, found {}",
            if std::mem::size_of::<T>() == 8 {
                "f64"
            } else {
                "f32"
            },
            t.describe()
        )
    })
}

/// Whether `t` holds f64 elements (the kernels then run at f64).
pub(crate) fn is_f64(t: &HostTensor) -> bool {
    matches!(t.data, TensorData::F64(_))
}

/// Calls the generic kernel `$f` at f64 when `$t` holds f64, at f32 otherwise (an operand of
/// another type then fails in the kernel with a message naming it).
macro_rules! by_float {
    ($t:expr, $f:ident($($arg:expr),* $(,)?)) => {
        if $crate::interp::float::is_f64($t) {
            $f::<f64>($($arg),*)
        } else {
            $f::<f32>($($arg),*)
        }
    };
}
pub(crate) use by_float;

#[cfg(test)]
mod tests {
    use super::super::{elementwise, linalg};
    use super::*;
    use oar_ir::op::{BinaryOp, MatMulAttrs, UnaryOp};

    /// The f64 kernels compute the same functions as the f32 ones: every activation agrees
    /// to f32 precision on values across its kinks and saturations.
    #[test]
    fn f64_kernels_agree_with_f32() {
        let xs: Vec<f32> = (0..41).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let x32 = HostTensor::f32(vec![41], xs.clone());
        let x64 = x32.to_float(oar_ir::DType::F64);
        for op in [
            UnaryOp::Exp,
            UnaryOp::Tanh,
            UnaryOp::Erf,
            UnaryOp::Relu6,
            UnaryOp::HardSwish,
            UnaryOp::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            UnaryOp::Gelu { tanh: true },
            UnaryOp::Gelu { tanh: false },
            UnaryOp::Mish,
            UnaryOp::Silu,
            UnaryOp::LeakyRelu { alpha: 0.1 },
        ] {
            let a = elementwise::unary(op, &x32).unwrap();
            let b = elementwise::unary(op, &x64).unwrap();
            assert_eq!(b.dtype(), oar_ir::DType::F64);
            let (d, s) = a.max_abs_diff(&b).unwrap();
            assert!(d <= 1e-6 * s.max(1.0), "{op:?}: {d} of {s}");
        }
        let m = linalg::matmul(
            &HostTensor::f64(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            &HostTensor::f64(vec![3, 1], vec![0.1, 0.2, 0.3]),
            &MatMulAttrs::default(),
        )
        .unwrap();
        let got = m.as_f64().unwrap();
        assert!(
            (got[0] - 1.4).abs() < 1e-12 && (got[1] - 3.2).abs() < 1e-12,
            "{got:?}"
        );
    }

    #[test]
    fn mixed_float_operands_are_an_error() {
        let a = HostTensor::f32(vec![2], vec![1.0, 2.0]);
        let b = HostTensor::f64(vec![2], vec![1.0, 2.0]);
        let e = elementwise::binary(BinaryOp::Add, &a, &b).unwrap_err();
        assert!(e.contains("unsupported operands"), "{e}");
        let e = linalg::matmul(
            &HostTensor::f64(vec![1, 2], vec![1.0, 2.0]),
            &HostTensor::f32(vec![2, 1], vec![1.0, 2.0]),
            &MatMulAttrs::default(),
        )
        .unwrap_err();
        assert!(e.contains("needs f64, found f32[2,1]"), "{e}");
    }
}
