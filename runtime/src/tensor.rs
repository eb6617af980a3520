//! Host tensors: a shape and row-major data in one of the element types the interpreter
//! computes in (f32, f64, i64, bool). f64 exists for gradient checking: the finite-difference
//! tests run the reference interpreter in f64 so a subtly wrong rule cannot hide in f32
//! rounding noise.

use oar_ir::{DType, TensorType};

/// Row-major element storage.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// A dense tensor in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    /// An f32 tensor; `data.len()` must equal the shape's product.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor {
            shape,
            data: TensorData::F32(data),
        }
    }

    /// An f64 tensor.
    pub fn f64(shape: Vec<usize>, data: Vec<f64>) -> HostTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor {
            shape,
            data: TensorData::F64(data),
        }
    }

    /// An i64 tensor.
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> HostTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor {
            shape,
            data: TensorData::I64(data),
        }
    }

    /// A bool tensor.
    pub fn bool(shape: Vec<usize>, data: Vec<bool>) -> HostTensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor {
            shape,
            data: TensorData::Bool(data),
        }
    }

    /// The IR dtype of the storage.
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The f32 data, if that is the storage type.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The f64 data, if that is the storage type.
    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            TensorData::F64(v) => Some(v),
            _ => None,
        }
    }

    /// A float tensor converted to `dtype` (f32 or f64); other tensors and other target
    /// dtypes come back unchanged. f64 → f32 rounds to nearest.
    pub fn to_float(&self, dtype: DType) -> HostTensor {
        let data = match (&self.data, dtype) {
            (TensorData::F32(v), DType::F64) => {
                TensorData::F64(v.iter().map(|&x| x as f64).collect())
            }
            (TensorData::F64(v), DType::F32) => {
                TensorData::F32(v.iter().map(|&x| x as f32).collect())
            }
            (d, _) => d.clone(),
        };
        HostTensor {
            shape: self.shape.clone(),
            data,
        }
    }

    /// The i64 data, if that is the storage type.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The bool data, if that is the storage type.
    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// `f32[2,3]`-style description.
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.dtype(), dims.join(","))
    }

    /// Whether this tensor has the given static type.
    pub fn matches(&self, t: &TensorType) -> bool {
        t.dtype == self.dtype()
            && t.shape
                .as_static()
                .is_some_and(|s| s.iter().map(|&d| d as usize).eq(self.shape.iter().copied()))
    }

    /// Largest |a - b| over elements, and largest |b| (for relative error), as f64.
    pub fn max_abs_diff(&self, other: &HostTensor) -> Option<(f64, f64)> {
        let (a, b) = (self.to_f64(), other.to_f64());
        if self.shape != other.shape {
            return None;
        }
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
        Some((diff, scale))
    }

    /// All elements as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }
}

impl HostTensor {
    /// Elements `start..start + len` along `dim` (a shard of this tensor).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> HostTensor {
        let outer: usize = self.shape[..dim].iter().product();
        let inner: usize = self.shape[dim + 1..].iter().product();
        let full = self.shape[dim];
        let idx: Vec<usize> = (0..outer)
            .flat_map(|o| {
                (start..start + len)
                    .flat_map(move |i| (0..inner).map(move |j| (o * full + i) * inner + j))
            })
            .collect();
        let mut shape = self.shape.clone();
        shape[dim] = len;
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(idx.iter().map(|&i| v[i]).collect()),
            TensorData::F64(v) => TensorData::F64(idx.iter().map(|&i| v[i]).collect()),
            TensorData::I64(v) => TensorData::I64(idx.iter().map(|&i| v[i]).collect()),
            TensorData::Bool(v) => TensorData::Bool(idx.iter().map(|&i| v[i]).collect()),
        };
        HostTensor { shape, data }
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
