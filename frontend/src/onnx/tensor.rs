//! Tensor payloads: ONNX `TensorProto` ⇄ [`OnnxTensor`]. Float types are read as f32, all
//! integer and bool types as i64 (the element types the IR computes in); external data is
//! read from beside the model and may not leave its folder.

use super::proto::{data_type as dt, TensorProto};
use oar_ir::DType;
use std::path::{Component, Path};

/// A `TensorProto` whose payload cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("element type code {0} is not supported")]
    UnsupportedType(i32),
    #[error("negative dimension {dim} in {dims:?}")]
    NegativeDim { dim: i64, dims: Vec<i64> },
    #[error("dimensions {0:?} are too large")]
    TooLarge(Vec<i64>),
    #[error("holds {len} elements but its dimensions {dims:?} need {numel}")]
    ElementCount {
        len: usize,
        dims: Vec<i64>,
        numel: usize,
    },
    #[error("raw data has {bytes} bytes, {numel} elements need {need}")]
    WideRawSize {
        bytes: usize,
        numel: usize,
        need: usize,
    },
    #[error("raw data has {bytes} bytes but {numel} elements of {dtype} need {need}")]
    RawSize {
        bytes: usize,
        numel: usize,
        dtype: &'static str,
        need: usize,
    },
    #[error("external data without a `location`")]
    NoLocation,
    #[error("external data path `{0}` leaves the model's folder")]
    Escapes(String),
    #[error("external data, but the model was not read from a file")]
    NoBase,
    #[error("cannot open external data `{0}`")]
    CannotOpen(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("bad external `{key}`: {value}")]
    BadField { key: String, value: String },
    #[error("external length overflows")]
    LengthOverflow,
    #[error("external data `{0}` is shorter than offset+length")]
    TooShort(String),
}

/// Row-major elements.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense tensor read from or written to ONNX.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxTensor {
    /// The element type the file declares (f16/f64 are widened or narrowed to f32 data).
    pub dtype: DType,
    pub dims: Vec<u64>,
    pub data: OnnxData,
}

impl OnnxTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            OnnxData::F32(v) => v.len(),
            OnnxData::I64(v) => v.len(),
        }
    }

    /// Elements as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            OnnxData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            OnnxData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// The IR dtype of an ONNX element type code. 16-bit and unsigned integer types read as
/// i64 (exact for every value but u64 above 2^63).
pub(crate) fn dtype_of(code: i32) -> Option<DType> {
    Some(match code {
        dt::INT16 | dt::UINT16 | dt::UINT32 | dt::UINT64 => DType::I64,
        dt::FLOAT => DType::F32,
        dt::DOUBLE => DType::F64,
        dt::FLOAT16 => DType::F16,
        dt::BFLOAT16 => DType::BF16,
        dt::INT64 => DType::I64,
        dt::INT32 => DType::I32,
        dt::INT8 => DType::I8,
        dt::UINT8 => DType::U8,
        dt::BOOL => DType::Bool,
        _ => return None,
    })
}

/// The ONNX element type code of an IR dtype.
pub(crate) fn code_of(d: DType) -> i32 {
    match d {
        DType::F32 => dt::FLOAT,
        DType::F64 => dt::DOUBLE,
        DType::F16 => dt::FLOAT16,
        DType::BF16 => dt::BFLOAT16,
        DType::I64 => dt::INT64,
        DType::I32 => dt::INT32,
        DType::I8 => dt::INT8,
        DType::U8 => dt::UINT8,
        DType::Bool => dt::BOOL,
    }
}

/// Decodes a tensor; `base` is the model's folder, for external data.
pub fn decode_tensor(t: &TensorProto, base: Option<&Path>) -> Result<OnnxTensor, TensorError> {
    let dtype = dtype_of(t.data_type).ok_or(TensorError::UnsupportedType(t.data_type))?;
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(TensorError::NegativeDim {
                dim: d,
                dims: t.dims.clone(),
            });
        }
        dims.push(d as u64);
    }
    let numel = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n < (1 << 40))
        .ok_or_else(|| TensorError::TooLarge(t.dims.clone()))? as usize;
    let external;
    let raw: &[u8] = if t.data_location == 1 {
        external = read_external(t, base)?;
        &external
    } else {
        &t.raw_data
    };
    let data = match t.data_type {
        // Types the IR widens: decode by their own width and field.
        dt::INT16 | dt::UINT16 | dt::UINT32 | dt::UINT64 => {
            decode_wide_int(t.data_type, raw, t, numel)?
        }
        _ if !raw.is_empty() => decode_raw(dtype, raw, numel)?,
        _ => decode_typed(dtype, t),
    };
    let len = match &data {
        OnnxData::F32(v) => v.len(),
        OnnxData::I64(v) => v.len(),
    };
    if len != numel {
        return Err(TensorError::ElementCount {
            len,
            dims: t.dims.clone(),
            numel,
        });
    }
    Ok(OnnxTensor { dtype, dims, data })
}

fn decode_wide_int(
    code: i32,
    raw: &[u8],
    t: &TensorProto,
    numel: usize,
) -> Result<OnnxData, TensorError> {
    if raw.is_empty() {
        return Ok(OnnxData::I64(match code {
            dt::UINT32 | dt::UINT64 => t.uint64_data.iter().map(|&x| x as i64).collect(),
            _ => t.int32_data.iter().map(|&x| x as i64).collect(),
        }));
    }
    let width = match code {
        dt::INT16 | dt::UINT16 => 2,
        dt::UINT32 => 4,
        _ => 8,
    };
    if raw.len() != numel * width {
        return Err(TensorError::WideRawSize {
            bytes: raw.len(),
            numel,
            need: numel * width,
        });
    }
    Ok(OnnxData::I64(
        raw.chunks_exact(width)
            .map(|c| match code {
                dt::INT16 => i16::from_le_bytes([c[0], c[1]]) as i64,
                dt::UINT16 => u16::from_le_bytes([c[0], c[1]]) as i64,
                dt::UINT32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
                _ => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_le_bytes(b) as i64
                }
            })
            .collect(),
    ))
}

fn decode_raw(dtype: DType, raw: &[u8], numel: usize) -> Result<OnnxData, TensorError> {
    let width = dtype.size_bytes() as usize;
    if raw.len() != numel * width {
        return Err(TensorError::RawSize {
            bytes: raw.len(),
            numel,
            dtype: dtype.name(),
            need: numel * width,
        });
    }
    let chunks = raw.chunks_exact(width);
    Ok(match dtype {
        DType::F32 => OnnxData::F32(
            chunks
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::F64 => OnnxData::F32(
            chunks
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect(),
        ),
        DType::F16 => OnnxData::F32(
            chunks
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        DType::BF16 => OnnxData::F32(
            chunks
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
        ),
        DType::I64 => OnnxData::I64(
            chunks
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect(),
        ),
        DType::I32 => OnnxData::I64(
            chunks
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        DType::I8 => OnnxData::I64(chunks.map(|c| c[0] as i8 as i64).collect()),
        DType::U8 | DType::Bool => OnnxData::I64(chunks.map(|c| c[0] as i64).collect()),
    })
}

fn decode_typed(dtype: DType, t: &TensorProto) -> OnnxData {
    match dtype {
        DType::F32 => OnnxData::F32(t.float_data.clone()),
        DType::F64 => OnnxData::F32(t.double_data.iter().map(|&x| x as f32).collect()),
        // f16/bf16 in the typed field are stored as their bits in int32_data.
        DType::F16 => OnnxData::F32(t.int32_data.iter().map(|&b| f16_to_f32(b as u16)).collect()),
        DType::BF16 => OnnxData::F32(
            t.int32_data
                .iter()
                .map(|&b| f32::from_bits((b as u32) << 16))
                .collect(),
        ),
        DType::I64 => OnnxData::I64(t.int64_data.clone()),
        DType::I32 | DType::I8 | DType::U8 | DType::Bool => {
            OnnxData::I64(t.int32_data.iter().map(|&x| x as i64).collect())
        }
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24.
            let v = frac as f32 * (-24f32).exp2();
            return if sign != 0 { -v } else { v };
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, _) => sign | 0x7fc0_0000,
        _ => sign | (((exp - 15 + 127) as u32) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Reads a tensor's external data file, which must lie inside the model's folder.
fn read_external(t: &TensorProto, base: Option<&Path>) -> Result<Vec<u8>, TensorError> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = get("location").ok_or(TensorError::NoLocation)?;
    let rel = Path::new(location);
    let escapes = rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(TensorError::Escapes(location.to_string()));
    }
    let base = base.ok_or(TensorError::NoBase)?;
    let path = base.join(rel);
    // A symlink inside the folder could still point out of it.
    let (Ok(real), Ok(real_base)) = (path.canonicalize(), base.canonicalize()) else {
        return Err(TensorError::CannotOpen(path.display().to_string()));
    };
    if !real.starts_with(&real_base) {
        return Err(TensorError::Escapes(location.to_string()));
    }
    let bytes = std::fs::read(&real).map_err(|source| TensorError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let parse = |k: &str| -> Result<Option<usize>, TensorError> {
        get(k)
            .map(|v| {
                v.parse::<usize>().map_err(|_| TensorError::BadField {
                    key: k.to_string(),
                    value: v.to_string(),
                })
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let end = match parse("length")? {
        Some(len) => offset.checked_add(len).ok_or(TensorError::LengthOverflow)?,
        None => bytes.len(),
    };
    bytes
        .get(offset..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| TensorError::TooShort(location.to_string()))
}

/// Encodes a tensor as raw little-endian data of its declared dtype (f32, i64, i32 or bool).
pub fn encode_tensor(name: &str, t: &OnnxTensor) -> TensorProto {
    let mut raw = Vec::new();
    match (&t.data, t.dtype) {
        (OnnxData::F32(v), _) => v.iter().for_each(|x| raw.extend(x.to_le_bytes())),
        (OnnxData::I64(v), DType::I32) => {
            v.iter().for_each(|&x| raw.extend((x as i32).to_le_bytes()))
        }
        (OnnxData::I64(v), DType::Bool | DType::U8 | DType::I8) => {
            raw.extend(v.iter().map(|&x| x as u8))
        }
        (OnnxData::I64(v), _) => v.iter().for_each(|x| raw.extend(x.to_le_bytes())),
    }
    let dtype = match (&t.data, t.dtype) {
        (OnnxData::F32(_), _) => DType::F32,
        (OnnxData::I64(_), d) if !d.is_float() => d,
        (OnnxData::I64(_), _) => DType::I64,
    };
    TensorProto {
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: code_of(dtype),
        name: name.to_string(),
        raw_data: raw,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_decodes_normal_subnormal_and_special_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn raw_round_trip_and_size_mismatch() {
        let t = OnnxTensor {
            dtype: DType::F32,
            dims: vec![2, 2],
            data: OnnxData::F32(vec![1.0, -2.5, 3.0, 0.125]),
        };
        let p = encode_tensor("w", &t);
        assert_eq!(decode_tensor(&p, None).unwrap(), t);
        let mut short = p.clone();
        short.raw_data.pop();
        assert!(decode_tensor(&short, None)
            .unwrap_err()
            .to_string()
            .contains("bytes"));
    }

    #[test]
    fn external_paths_may_not_escape() {
        let mut p = TensorProto {
            dims: vec![1],
            data_type: dt::FLOAT,
            data_location: 1,
            ..Default::default()
        };
        for bad in ["../w.bin", "/etc/passwd", "a/../../w.bin"] {
            p.external_data = vec![super::super::proto::StringStringEntryProto {
                key: "location".into(),
                value: bad.into(),
            }];
            let e = decode_tensor(&p, Some(Path::new("/tmp")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("leaves the model's folder"), "{bad}: {e}");
        }
    }
}
