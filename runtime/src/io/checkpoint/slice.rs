//! Tensors as little-endian bytes: cutting a part out of a full tensor and putting it back.
//! Working on bytes keeps every dtype bit-exact and lets one copy loop serve all of them.

use super::index::Region;
use crate::tensor::{HostTensor, TensorData};
use std::borrow::Cow;

/// The dtypes a checkpoint stores ([`TensorData`]'s variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dt {
    F32,
    F64,
    I64,
    Bool,
}

impl Dt {
    pub(crate) fn of(d: &TensorData) -> Dt {
        match d {
            TensorData::F32(_) => Dt::F32,
            TensorData::F64(_) => Dt::F64,
            TensorData::I64(_) => Dt::I64,
            TensorData::Bool(_) => Dt::Bool,
        }
    }

    /// safetensors' name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dt::F32 => "F32",
            Dt::F64 => "F64",
            Dt::I64 => "I64",
            Dt::Bool => "BOOL",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Dt> {
        [Dt::F32, Dt::F64, Dt::I64, Dt::Bool]
            .into_iter()
            .find(|d| d.name() == s)
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Dt::F32 => 4,
            Dt::F64 | Dt::I64 => 8,
            Dt::Bool => 1,
        }
    }
}

/// A tensor's little-endian bytes, borrowed where the host is little-endian (a checkpoint
/// of a large model is mostly these bytes: copying them element by element was the
/// writer's largest cost).
pub(crate) fn as_bytes(t: &HostTensor) -> Cow<'_, [u8]> {
    let le = cfg!(target_endian = "little");
    match &t.data {
        TensorData::F32(v) if le => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::F64(v) if le => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::I64(v) if le => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::F32(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::F64(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::I64(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::Bool(v) => Cow::Owned(v.iter().map(|&b| u8::from(b)).collect()),
    }
}

/// A tensor's little-endian bytes, owned.
pub(crate) fn to_bytes(t: &HostTensor) -> Vec<u8> {
    as_bytes(t).into_owned()
}

/// The tensor whose little-endian bytes are `b` (`b.len()` a multiple of the dtype's size).
pub(crate) fn from_bytes(dt: Dt, shape: Vec<usize>, b: &[u8]) -> HostTensor {
    let le = cfg!(target_endian = "little");
    let data = match dt {
        // `pod_collect_to_vec` copies into an aligned vector: `b` may sit at any offset.
        Dt::F32 if le => TensorData::F32(bytemuck::pod_collect_to_vec(b)),
        Dt::F64 if le => TensorData::F64(bytemuck::pod_collect_to_vec(b)),
        Dt::I64 if le => TensorData::I64(bytemuck::pod_collect_to_vec(b)),
        Dt::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dt::F64 => TensorData::F64(
            b.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        Dt::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        Dt::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
    };
    HostTensor { shape, data }
}

/// For a cut along `dim`: (outer rows, extent of `dim`, bytes per index of `dim`).
fn geometry(shape: &[usize], dim: usize, esize: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product::<usize>() * esize;
    (outer, shape[dim], inner)
}

/// The bytes of `region` of the full tensor `full` (of `shape`, `esize` bytes an element).
pub(crate) fn extract(full: &[u8], shape: &[usize], esize: usize, region: Region) -> Vec<u8> {
    match region {
        Region::Whole => full.to_vec(),
        Region::Flat { start, len } => full[start * esize..(start + len) * esize].to_vec(),
        Region::Dim { dim, start, len } => {
            let (outer, n, inner) = geometry(shape, dim, esize);
            let mut out = Vec::with_capacity(outer * len * inner);
            for o in 0..outer {
                let at = (o * n + start) * inner;
                out.extend_from_slice(&full[at..at + len * inner]);
            }
            out
        }
    }
}

/// Writes `piece` (the bytes of `region`) into the full tensor `full`: [`extract`]'s inverse.
pub(crate) fn place(full: &mut [u8], shape: &[usize], esize: usize, region: Region, piece: &[u8]) {
    match region {
        Region::Whole => full.copy_from_slice(piece),
        Region::Flat { start, len } => {
            full[start * esize..(start + len) * esize].copy_from_slice(piece)
        }
        Region::Dim { dim, start, len } => {
            let (outer, n, inner) = geometry(shape, dim, esize);
            let row = len * inner;
            for o in 0..outer {
                let at = (o * n + start) * inner;
                full[at..at + row].copy_from_slice(&piece[o * row..(o + 1) * row]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_then_place_rebuilds_a_split_tensor() {
        // 3x5 of distinct bytes, cut along dim 1 into [0,2) and [2,5).
        let shape = [3usize, 5];
        let full: Vec<u8> = (0..15).collect();
        let a = extract(
            &full,
            &shape,
            1,
            Region::Dim {
                dim: 1,
                start: 0,
                len: 2,
            },
        );
        let b = extract(
            &full,
            &shape,
            1,
            Region::Dim {
                dim: 1,
                start: 2,
                len: 3,
            },
        );
        assert_eq!(a, vec![0, 1, 5, 6, 10, 11]);
        let mut back = vec![0u8; 15];
        place(
            &mut back,
            &shape,
            1,
            Region::Dim {
                dim: 1,
                start: 0,
                len: 2,
            },
            &a,
        );
        place(
            &mut back,
            &shape,
            1,
            Region::Dim {
                dim: 1,
                start: 2,
                len: 3,
            },
            &b,
        );
        assert_eq!(back, full);
    }
}
