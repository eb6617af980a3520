//! NumPy `.npy` files (format versions 1–3, C order, little-endian). Hand-written: the
//! format is a short header and raw data, and this keeps the dtype mapping in one place.
//! f64 files load as f32 and integer files as i64, the types models compute in;
//! [`decode_npy_exact`] keeps f64 (gradient checks), and f64 tensors are written as `<f8`.

use super::IoError;
use crate::tensor::{HostTensor, TensorData};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(path: &Path, msg: impl Into<String>) -> IoError {
    IoError::Format {
        path: path.display().to_string(),
        message: msg.into(),
    }
}

/// The value of `'key': value` in the header dict, up to the next top-level comma.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Parses a `.npy` file's bytes.
pub fn decode_npy(bytes: &[u8], path: &Path) -> Result<HostTensor, IoError> {
    decode_npy_exact(bytes, path).map(|t| t.to_float(oar_ir::DType::F32))
}

/// Parses a `.npy` file's bytes, keeping `<f8` data as f64.
pub fn decode_npy_exact(bytes: &[u8], path: &Path) -> Result<HostTensor, IoError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad(path, "not a .npy file (bad magic bytes)"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad(path, "truncated or non-text header"))?;
    let descr = header_field(header, "descr").ok_or_else(|| bad(path, "header has no 'descr'"))?;
    let descr = descr.trim_matches(['\'', '"']);
    if header_field(header, "fortran_order") != Some("False") {
        return Err(bad(
            path,
            "only C-order arrays are supported (fortran_order must be False)",
        ));
    }
    let shape_text =
        header_field(header, "shape").ok_or_else(|| bad(path, "header has no 'shape'"))?;
    let shape: Vec<usize> = shape_text
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(path, format!("bad shape {shape_text}")))?;
    // Checked: a corrupt shape must not overflow into a small element count (fuzzing).
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(path, format!("shape {shape_text} has too many elements")))?;
    let data = &bytes[start + header_len..];
    let need = |size: usize| -> Result<&[u8], IoError> {
        let bytes_needed = n.checked_mul(size);
        bytes_needed.and_then(|b| data.get(..b)).ok_or_else(|| {
            bad(
                path,
                format!(
                    "{n} elements of {size} bytes need {} bytes of data, found {}",
                    bytes_needed.map_or("more than 2^64".to_string(), |b| b.to_string()),
                    data.len()
                ),
            )
        })
    };
    let chunks = |size: usize| -> Result<std::slice::ChunksExact<'_, u8>, IoError> {
        Ok(need(size)?.chunks_exact(size))
    };
    let tensor_data = match descr {
        "<f4" => TensorData::F32(
            chunks(4)?
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "<f8" => TensorData::F64(
            chunks(8)?
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "<i8" => TensorData::I64(
            chunks(8)?
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        "<i4" => TensorData::I64(
            chunks(4)?
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
        ),
        "|i1" => TensorData::I64(chunks(1)?.map(|c| c[0] as i8 as i64).collect()),
        "|u1" => TensorData::I64(chunks(1)?.map(|c| c[0] as i64).collect()),
        "|b1" => TensorData::Bool(chunks(1)?.map(|c| c[0] != 0).collect()),
        d => {
            return Err(bad(
                path,
                format!("unsupported dtype '{d}' (expected <f4, <f8, <i8, <i4, |i1, |u1 or |b1)"),
            ))
        }
    };
    Ok(HostTensor {
        shape,
        data: tensor_data,
    })
}

/// The version-1 `.npy` header (magic, version, length, dictionary) of an array of `descr`
/// (`<f4`, `<i8`, `|b1`) and `shape`, padded so the data starts on a 64-byte boundary. The
/// format stores the dictionary's length in 16 bits: callers with extreme ranks check
/// `len() - 10 <= u16::MAX` (the packaged executor's tables do).
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with '\n'.
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(total + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Serialises a tensor as a version-1 `.npy` file.
pub fn encode_npy(t: &HostTensor) -> Vec<u8> {
    let descr = match t.data {
        TensorData::F32(_) => "<f4",
        TensorData::F64(_) => "<f8",
        TensorData::I64(_) => "<i8",
        TensorData::Bool(_) => "|b1",
    };
    let mut out = npy_header(descr, &t.shape);
    out.reserve(t.numel() * 8);
    match &t.data {
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
    }
    out
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<HostTensor, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    decode_npy(&bytes, path)
}

/// Writes a `.npy` file.
pub fn write_npy(path: &Path, t: &HostTensor) -> Result<(), IoError> {
    super::write_atomically(path, &encode_npy(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_dtype_and_rank() {
        let p = Path::new("t.npy");
        for t in [
            HostTensor::f32(vec![2, 3], vec![1.5, -2.0, 0.25, 3.0, 4.0, 1e-8]),
            HostTensor::i64(vec![3], vec![-1, 0, 1 << 40]),
            HostTensor::bool(vec![1, 2], vec![true, false]),
            HostTensor::f32(vec![], vec![7.0]),
            HostTensor::f64(vec![2], vec![0.1, -1e-300]),
        ] {
            let bytes = encode_npy(&t);
            let elem = match t.data {
                TensorData::F32(_) => 4,
                TensorData::F64(_) => 8,
                TensorData::I64(_) => 8,
                TensorData::Bool(_) => 1,
            };
            assert_eq!(
                (bytes.len() - t.numel() * elem) % 64,
                0,
                "data starts 64-byte aligned"
            );
            assert_eq!(decode_npy_exact(&bytes, p).unwrap(), t);
            assert_eq!(
                decode_npy(&bytes, p).unwrap(),
                t.to_float(oar_ir::DType::F32)
            );
        }
    }

    #[test]
    fn truncated_data_is_an_error() {
        let bytes = encode_npy(&HostTensor::f32(vec![4], vec![1.0; 4]));
        let err = decode_npy(&bytes[..bytes.len() - 3], Path::new("x.npy")).unwrap_err();
        assert!(err.to_string().contains("need 16 bytes"), "{err}");
        assert!(decode_npy(b"hello", Path::new("x.npy")).is_err());
    }

    /// Found by fuzz/fuzz_targets/npy.rs: a shape whose product overflows panicked (debug)
    /// or wrapped to a small count that the data then "satisfied" (release).
    #[test]
    fn overflowing_shapes_are_errors() {
        let p = Path::new("x.npy");
        for (shape, expect) in [
            ("(4294967296, 4294967297)", "has too many elements"),
            ("(4611686018427387904,)", "need more than 2^64 bytes"),
        ] {
            let mut bytes = npy_header("<f4", &[1]);
            let header =
                format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
            bytes.truncate(8);
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&[0; 16]);
            let err = decode_npy(&bytes, p).unwrap_err().to_string();
            assert!(err.contains(expect), "{shape}: {err}");
        }
    }
}
