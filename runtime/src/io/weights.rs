//! Named weights in safetensors files.

use super::{write_atomically, IoError};
use crate::tensor::{HostTensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::Path;

/// Parameter name → value.
pub type Weights = BTreeMap<String, HostTensor>;

fn format_err(path: &Path, message: String) -> IoError {
    IoError::Format {
        path: path.display().to_string(),
        message,
    }
}

/// Parses safetensors bytes. f32, f64 (narrowed), f16/bf16 (widened), i64, i32 and bool
/// tensors are accepted.
pub fn decode_safetensors(bytes: &[u8], path: &Path) -> Result<Weights, IoError> {
    let mut w = decode_safetensors_exact(bytes, path)?;
    for t in w.values_mut() {
        if t.dtype() == oar_ir::DType::F64 {
            *t = t.to_float(oar_ir::DType::F32);
        }
    }
    Ok(w)
}

/// As [`decode_safetensors`], keeping f64 tensors as f64 (gradient checks run in f64).
pub fn decode_safetensors_exact(bytes: &[u8], path: &Path) -> Result<Weights, IoError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
    let mut out = Weights::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let d = view.data();
        let data = match view.dtype() {
            Dtype::F32 => TensorData::F32(
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::F64 => TensorData::F64(
                d.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            Dtype::F16 => TensorData::F32(
                d.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            Dtype::BF16 => TensorData::F32(
                d.chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                    .collect(),
            ),
            Dtype::I64 => TensorData::I64(
                d.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            ),
            Dtype::I32 => TensorData::I64(
                d.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect(),
            ),
            Dtype::BOOL => TensorData::Bool(d.iter().map(|&b| b != 0).collect()),
            other => {
                return Err(format_err(
                    path,
                    format!("tensor `{name}` has unsupported dtype {other:?}"),
                ))
            }
        };
        out.insert(name.to_string(), HostTensor { shape, data });
    }
    Ok(out)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Reads a safetensors file.
pub fn load_safetensors(path: &Path) -> Result<Weights, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    decode_safetensors(&bytes, path)
}

/// Serialises weights to safetensors bytes.
pub fn encode_safetensors(weights: &Weights) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(k, t)| {
            let (dtype, bytes) = match &t.data {
                TensorData::F32(v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::F64(v) => {
                    (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::I64(v) => {
                    (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| b as u8).collect()),
            };
            (k.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(k, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes).map(|v| (k.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, &None)
}

/// Writes weights to a safetensors file atomically.
pub fn save_safetensors(path: &Path, weights: &Weights) -> Result<(), IoError> {
    let bytes = encode_safetensors(weights).map_err(|e| format_err(path, e.to_string()))?;
    write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip() {
        let mut w = Weights::new();
        w.insert(
            "a.weight".into(),
            HostTensor::f32(vec![2, 2], vec![1.0, -2.0, 3.5, 0.0]),
        );
        w.insert("ids".into(), HostTensor::i64(vec![3], vec![1, 2, 3]));
        let bytes = encode_safetensors(&w).unwrap();
        assert_eq!(decode_safetensors(&bytes, Path::new("w")).unwrap(), w);
        assert!(decode_safetensors(&bytes[..bytes.len() / 2], Path::new("w")).is_err());
        // f64 keeps every bit through the exact reader and narrows through the plain one.
        let mut d = Weights::new();
        d.insert("x".into(), HostTensor::f64(vec![2], vec![0.1, 1e-300]));
        let bytes = encode_safetensors(&d).unwrap();
        assert_eq!(decode_safetensors_exact(&bytes, Path::new("w")).unwrap(), d);
        let narrow = decode_safetensors(&bytes, Path::new("w")).unwrap();
        assert_eq!(narrow["x"], HostTensor::f32(vec![2], vec![0.1, 0.0]));
    }

    #[test]
    fn half_precision_widens_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
