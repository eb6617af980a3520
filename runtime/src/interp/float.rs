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
