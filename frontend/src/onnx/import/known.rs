//! Contents known while importing: small constants and shape arithmetic. Integers may be
//! symbolic sizes (`N`, `2*N`) taken from the IR types, so `Shape(x)` of a dynamic input
//! still folds into a `reshape` target.

use super::super::tensor::{OnnxData, OnnxTensor};
use oar_ir::op::{Literal, ReshapeDim};
use oar_ir::{DType, Dim, TensorType};

/// One integer element: a number, or a symbolic size.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::onnx) enum SInt {
    N(i64),
    S(Dim),
}

impl SInt {
    pub fn from_dim(d: &Dim) -> SInt {
        match d.as_static() {
            Some(v) => SInt::N(v as i64),
            None => SInt::S(d.clone()),
        }
    }

    fn as_dim(&self) -> Option<Dim> {
        match self {
            SInt::N(v) if *v >= 0 => Some(Dim::Static(*v as u64)),
            SInt::N(_) => None,
            SInt::S(d) => Some(d.clone()),
        }
    }

    /// Integer arithmetic for shape computations; `None` when a symbolic result has no
    /// IR spelling (sums of symbols, non-exact division).
    pub fn arith(op: &str, a: &SInt, b: &SInt) -> Option<SInt> {
        use SInt::N;
        Some(match (op, a, b) {
            ("Add", N(x), N(y)) => N(x.checked_add(*y)?),
            ("Sub", N(x), N(y)) => N(x.checked_sub(*y)?),
            ("Mul", N(x), N(y)) => N(x.checked_mul(*y)?),
            ("Div", N(x), N(y)) if *y != 0 => N(x.div_euclid(*y)),
            ("Mul", _, _) => SInt::from_dim(&a.as_dim()?.mul(&b.as_dim()?)),
            ("Div", _, _) => SInt::from_dim(&a.as_dim()?.div_exact(&b.as_dim()?)?),
            ("Max", N(x), N(y)) => N(*x.max(y)),
            ("Min", N(x), N(y)) => N(*x.min(y)),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(in crate::onnx) enum Elems {
    F(Vec<f64>),
    I(Vec<SInt>),
}

/// A tensor with known contents.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::onnx) struct Known {
    pub dtype: DType,
    pub dims: Vec<u64>,
    pub elems: Elems,
}

impl Known {
    pub fn from_tensor(t: &OnnxTensor, dtype: DType) -> Known {
        let elems = match &t.data {
            OnnxData::F32(v) if dtype.is_float() => Elems::F(v.iter().map(|&x| x as f64).collect()),
            OnnxData::F32(v) => Elems::I(v.iter().map(|&x| SInt::N(x as i64)).collect()),
            OnnxData::I64(v) if dtype.is_float() => Elems::F(v.iter().map(|&x| x as f64).collect()),
            OnnxData::I64(v) => Elems::I(v.iter().map(|&x| SInt::N(x)).collect()),
        };
        Known {
            dtype,
            dims: t.dims.clone(),
            elems,
        }
    }

    /// A 1-d i64 tensor of sizes.
    pub fn sizes(dims: &[Dim]) -> Known {
        Known {
            dtype: DType::I64,
            dims: vec![dims.len() as u64],
            elems: Elems::I(dims.iter().map(SInt::from_dim).collect()),
        }
    }

    /// A 1-d i64 tensor.
    pub fn ints_1d(v: Vec<SInt>) -> Known {
        Known {
            dtype: DType::I64,
            dims: vec![v.len() as u64],
            elems: Elems::I(v),
        }
    }

    pub fn len(&self) -> usize {
        match &self.elems {
            Elems::F(v) => v.len(),
            Elems::I(v) => v.len(),
        }
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(
            self.dtype,
            self.dims.iter().map(|&d| Dim::Static(d)).collect(),
        )
    }

    /// The IR literal, when no element is symbolic.
    pub fn literal(&self) -> Option<Literal> {
        match &self.elems {
            Elems::F(v) => Some(Literal::Floats(v.clone())),
            Elems::I(v) => v
                .iter()
                .map(|x| match x {
                    SInt::N(n) => Some(*n),
                    SInt::S(_) => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Literal::Ints),
        }
    }

    pub fn static_ints(&self) -> Option<Vec<i64>> {
        match self.literal()? {
            Literal::Ints(v) => Some(v),
            Literal::Floats(v) => Some(v.iter().map(|&x| x as i64).collect()),
        }
    }

    pub fn sints(&self) -> Option<&[SInt]> {
        match &self.elems {
            Elems::I(v) => Some(v),
            Elems::F(_) => None,
        }
    }

    pub fn to_f64(&self) -> Vec<f64> {
        match &self.elems {
            Elems::F(v) => v.clone(),
            Elems::I(v) => v
                .iter()
                .map(|x| match x {
                    SInt::N(n) => *n as f64,
                    SInt::S(_) => f64::NAN,
                })
                .collect(),
        }
    }

    /// The same contents as another dtype (float → int truncates, as ONNX Cast does).
    pub fn cast(&self, dtype: DType) -> Known {
        let elems = match (&self.elems, dtype.is_float()) {
            (Elems::F(v), true) => Elems::F(v.clone()),
            (Elems::F(v), false) if dtype == DType::Bool => {
                Elems::I(v.iter().map(|&x| SInt::N((x != 0.0) as i64)).collect())
            }
            (Elems::F(v), false) => Elems::I(v.iter().map(|&x| SInt::N(x as i64)).collect()),
            (Elems::I(v), true) => Elems::F(self.to_f64_of(v)),
            (Elems::I(v), false) if dtype == DType::Bool => Elems::I(
                v.iter()
                    .map(|x| match x {
                        SInt::N(n) => SInt::N((*n != 0) as i64),
                        SInt::S(_) => SInt::N(1),
                    })
                    .collect(),
            ),
            (Elems::I(v), false) => Elems::I(v.clone()),
        };
        Known {
            dtype,
            dims: self.dims.clone(),
            elems,
        }
    }

    fn to_f64_of(&self, v: &[SInt]) -> Vec<f64> {
        v.iter()
            .map(|x| match x {
                SInt::N(n) => *n as f64,
                SInt::S(_) => f64::NAN,
            })
            .collect()
    }

    /// A short description for errors.
    pub fn describe(&self) -> String {
        match &self.elems {
            Elems::F(v) => format!("{v:?}"),
            Elems::I(v) => {
                let parts: Vec<String> = v
                    .iter()
                    .map(|x| match x {
                        SInt::N(n) => n.to_string(),
                        SInt::S(d) => d.to_string(),
                    })
                    .collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }

    /// Elements picked by flat indices, with new dims.
    pub fn pick(&self, dims: Vec<u64>, idx: &[usize]) -> Known {
        let elems = match &self.elems {
            Elems::F(v) => Elems::F(idx.iter().map(|&i| v[i]).collect()),
            Elems::I(v) => Elems::I(idx.iter().map(|&i| v[i].clone()).collect()),
        };
        Known {
            dtype: self.dtype,
            dims,
            elems,
        }
    }
}

/// A `reshape` target from known sizes: `-1` infers, `0` copies the input's dim (unless
/// `allowzero`).
pub(in crate::onnx) fn reshape_target(
    target: &[SInt],
    input: &[Dim],
    allowzero: bool,
) -> Result<Vec<ReshapeDim>, String> {
    target
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            SInt::N(-1) => Ok(ReshapeDim::Infer),
            SInt::N(0) if !allowzero => {
                input.get(i).cloned().map(ReshapeDim::Dim).ok_or_else(|| {
                    format!(
                        "target dim {i} is 0 (copy) but the input has rank {}",
                        input.len()
                    )
                })
            }
            SInt::N(n) if *n >= 0 => Ok(ReshapeDim::Dim(Dim::Static(*n as u64))),
            SInt::N(n) => Err(format!("invalid target dim {n}")),
            SInt::S(d) => Ok(ReshapeDim::Dim(d.clone())),
        })
        .collect()
}
