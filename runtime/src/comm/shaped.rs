//! The IR's collectives on shaped tensors: gathers, scatters and all-to-alls along a tensor
//! axis, built on the communicator's flat forms by moving the axis's blocks to the front
//! (member-major) before sending or after receiving. The interpreter and the program
//! executor both run collectives through [`run`], so they agree bit for bit.

use super::{CommError, Communicator};
use crate::tensor::{HostTensor, TensorData};
use oar_ir::dist::{ProcessMesh, ReduceOp};
use oar_ir::op::{CollectiveKind, Op, ShapeError};
use oar_ir::DType;

/// A collective's axes do not fit its operand's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectiveShapeError {
    #[error("axis {axis} is outside a rank-{rank} tensor")]
    AxisOutOfRange { axis: usize, rank: usize },
    #[error("dimension {axis} of {shape:?} does not split into {n} equal parts")]
    Indivisible {
        axis: usize,
        shape: Vec<usize>,
        n: usize,
    },
}

/// A rank or mesh axis that names no group of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshGroupError {
    #[error("rank {rank} is not in mesh {device_ids:?}")]
    RankNotInMesh { rank: u64, device_ids: Vec<u64> },
    #[error("axis {axis} is outside a {dims}-d mesh")]
    AxisOutOfRange { axis: usize, dims: usize },
}

/// One collective over a group, with its tensor axes already normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collective {
    AllReduce {
        op: ReduceOp,
    },
    /// Concatenates the members' tensors along `axis`.
    AllGather {
        axis: usize,
    },
    /// Reduces, then member i keeps the i-th of n equal slices along `axis`.
    ReduceScatter {
        op: ReduceOp,
        axis: usize,
    },
    /// Member i sends its j-th slice along `split_axis` to member j, which concatenates what
    /// it receives along `concat_axis` in member order.
    AllToAll {
        split_axis: usize,
        concat_axis: usize,
    },
    /// Every member gets member `root`'s tensor (`root` indexes the group).
    Broadcast {
        root: usize,
    },
}

impl Collective {
    /// The text-format name of the IR op.
    pub fn name(&self) -> &'static str {
        match self {
            Collective::AllReduce { .. } => "all_reduce",
            Collective::AllGather { .. } => "all_gather",
            Collective::ReduceScatter { .. } => "reduce_scatter",
            Collective::AllToAll { .. } => "all_to_all",
            Collective::Broadcast { .. } => "broadcast",
        }
    }

    /// The result's shape for an input of `shape` over `n` members.
    pub fn out_shape(&self, shape: &[usize], n: usize) -> Result<Vec<usize>, CollectiveShapeError> {
        let mut out = shape.to_vec();
        let axis_ok = |a: usize| {
            (a < shape.len())
                .then_some(a)
                .ok_or(CollectiveShapeError::AxisOutOfRange {
                    axis: a,
                    rank: shape.len(),
                })
        };
        let split = |out: &mut Vec<usize>, a: usize| {
            let a = axis_ok(a)?;
            if !out[a].is_multiple_of(n) {
                return Err(CollectiveShapeError::Indivisible {
                    axis: a,
                    shape: shape.to_vec(),
                    n,
                });
            }
            out[a] /= n;
            Ok(())
        };
        match *self {
            Collective::AllReduce { .. } | Collective::Broadcast { .. } => {}
            Collective::AllGather { axis } => out[axis_ok(axis)?] *= n,
            Collective::ReduceScatter { axis, .. } => split(&mut out, axis)?,
            Collective::AllToAll {
                split_axis,
                concat_axis,
            } => {
                split(&mut out, split_axis)?;
                out[axis_ok(concat_axis)?] *= n;
            }
        }
        Ok(out)
    }
}

impl Collective {
    /// The collective an IR op performs on a rank-`rank` operand, axes normalised; `None`
    /// for ops that are not collectives.
    pub fn of_op(op: &Op, rank: usize) -> Result<Option<Collective>, ShapeError> {
        let axis = |a: i64| oar_ir::op::norm_axis(a, rank);
        let Some((kind, _)) = op.as_collective() else {
            return Ok(None);
        };
        Ok(Some(match kind {
            CollectiveKind::AllReduce { op } => Collective::AllReduce { op },
            CollectiveKind::AllGather { axis: a } => Collective::AllGather { axis: axis(a)? },
            CollectiveKind::ReduceScatter { op, axis: a } => {
                Collective::ReduceScatter { op, axis: axis(a)? }
            }
            CollectiveKind::AllToAll {
                split_axis,
                concat_axis,
            } => Collective::AllToAll {
                split_axis: axis(split_axis)?,
                concat_axis: axis(concat_axis)?,
            },
            CollectiveKind::Broadcast { root } => Collective::Broadcast {
                root: root as usize,
            },
        }))
    }
}

/// The global ranks of `rank`'s group along mesh axis `axis` (the devices that share every
/// other coordinate with it), in axis order, and `rank`'s index in that group.
pub fn mesh_group(
    mesh: &ProcessMesh,
    axis: usize,
    rank: u64,
) -> Result<(Vec<u64>, usize), MeshGroupError> {
    let pos = mesh
        .device_ids
        .iter()
        .position(|&d| d == rank)
        .ok_or_else(|| MeshGroupError::RankNotInMesh {
            rank,
            device_ids: mesh.device_ids.clone(),
        })?;
    if axis >= mesh.shape.len() {
        return Err(MeshGroupError::AxisOutOfRange {
            axis,
            dims: mesh.shape.len(),
        });
    }
    let mut coords = vec![0usize; mesh.shape.len()];
    let mut rest = pos;
    for d in (0..mesh.shape.len()).rev() {
        coords[d] = rest % mesh.shape[d] as usize;
        rest /= mesh.shape[d] as usize;
    }
    let members = (0..mesh.shape[axis] as usize)
        .map(|i| {
            let mut c = coords.clone();
            c[axis] = i;
            let idx = c
                .iter()
                .zip(&mesh.shape)
                .fold(0usize, |acc, (&x, &s)| acc * s as usize + x);
            mesh.device_ids[idx]
        })
        .collect();
    Ok((members, coords[axis]))
}

/// `dst[o][k] = src[k][o]` for `n` members' `outer` blocks of `blk` bytes: member-major to
/// block-major.
fn interleave(src: &[u8], n: usize, outer: usize, blk: usize, dst: &mut [u8]) {
    for k in 0..n {
        for o in 0..outer {
            let s = (k * outer + o) * blk;
            let d = (o * n + k) * blk;
            dst[d..d + blk].copy_from_slice(&src[s..s + blk]);
        }
    }
}

/// The inverse of [`interleave`]: `dst[k][o] = src[o][k]`.
fn deinterleave(src: &[u8], n: usize, outer: usize, blk: usize, dst: &mut [u8]) {
    for k in 0..n {
        for o in 0..outer {
            let s = (o * n + k) * blk;
            let d = (k * outer + o) * blk;
            dst[d..d + blk].copy_from_slice(&src[s..s + blk]);
        }
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(bytes)
}

fn buffer_error(comm: &dyn Communicator, op: &'static str, message: String) -> CommError {
    CommError::Buffer {
        op,
        rank: comm.rank(),
        message,
    }
}

/// Runs `c` over `group` on a flat row-major buffer of `shape` with `elem`-byte elements
/// (reductions need f32, `elem == 4`). `output` holds `c.out_shape(shape, n)` elements.
pub fn run(
    comm: &dyn Communicator,
    group: &[u64],
    c: &Collective,
    shape: &[usize],
    elem: usize,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), CommError> {
    let n = group.len().max(1);
    let out_shape = c
        .out_shape(shape, n)
        .map_err(|e| buffer_error(comm, c.name(), e.to_string()))?;
    let numel: usize = shape.iter().product();
    let out_numel: usize = out_shape.iter().product();
    if input.len() != numel * elem || output.len() != out_numel * elem {
        return Err(buffer_error(
            comm,
            c.name(),
            format!(
                "buffers of {} and {} bytes for {shape:?} → {out_shape:?} of {elem}-byte elements",
                input.len(),
                output.len()
            ),
        ));
    }
    if input.is_empty() {
        // Every member holds the same (empty) shape: there is nothing to move.
        return Ok(());
    }
    let reduction_f32 = |op: ReduceOp| {
        if elem != 4 {
            return Err(buffer_error(
                comm,
                c.name(),
                format!("reductions ({}) need f32 elements", op.name()),
            ));
        }
        Ok(())
    };
    match *c {
        Collective::AllReduce { op } => {
            reduction_f32(op)?;
            let mut v = f32s(input);
            comm.all_reduce(group, op, &mut v)?;
            output.copy_from_slice(bytemuck::cast_slice(&v));
        }
        Collective::Broadcast { root } => {
            output.copy_from_slice(input);
            comm.broadcast(group, root, output)?;
        }
        Collective::AllGather { axis } => {
            let outer: usize = shape[..axis].iter().product();
            if outer == 1 {
                comm.all_gather(group, input, output)?;
            } else {
                let mut gathered = vec![0u8; output.len()];
                comm.all_gather(group, input, &mut gathered)?;
                interleave(&gathered, n, outer, input.len() / outer, output);
            }
        }
        Collective::ReduceScatter { op, axis } => {
            reduction_f32(op)?;
            let outer: usize = shape[..axis].iter().product();
            let mut blocks = vec![0u8; input.len()];
            deinterleave(input, n, outer, input.len() / (outer * n), &mut blocks);
            let mut mine = vec![0f32; out_numel];
            comm.reduce_scatter(group, op, &f32s(&blocks), &mut mine)?;
            output.copy_from_slice(bytemuck::cast_slice(&mine));
        }
        Collective::AllToAll {
            split_axis,
            concat_axis,
        } => {
            let outer: usize = shape[..split_axis].iter().product();
            let mut pieces = vec![0u8; input.len()];
            deinterleave(input, n, outer, input.len() / (outer * n), &mut pieces);
            let mut received = vec![0u8; input.len()];
            comm.all_to_all(group, &pieces, &mut received)?;
            // Each received piece has the input's shape with `split_axis` divided by n.
            let mut piece = shape.to_vec();
            piece[split_axis] /= n;
            let outer: usize = piece[..concat_axis].iter().product();
            interleave(&received, n, outer, input.len() / (outer * n), output);
        }
    }
    Ok(())
}

/// A tensor's elements as bytes (bool as one byte), and the element size.
pub(crate) fn tensor_bytes(t: &HostTensor) -> (Vec<u8>, usize) {
    match &t.data {
        TensorData::F32(v) => (bytemuck::cast_slice(v).to_vec(), 4),
        TensorData::F64(v) => (bytemuck::cast_slice(v).to_vec(), 8),
        TensorData::I64(v) => (bytemuck::cast_slice(v).to_vec(), 8),
        TensorData::Bool(v) => (v.iter().map(|&b| b as u8).collect(), 1),
    }
}

/// The tensor of `dtype` and `shape` whose elements are `bytes`.
pub(crate) fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> HostTensor {
    match dtype {
        DType::I64 => HostTensor::i64(shape, bytemuck::pod_collect_to_vec(bytes)),
        DType::F64 => HostTensor::f64(shape, bytemuck::pod_collect_to_vec(bytes)),
        DType::Bool => HostTensor::bool(shape, bytes.iter().map(|&b| b != 0).collect()),
        _ => HostTensor::f32(shape, f32s(bytes)),
    }
}

/// Bytes per element as host tensors and program buffers hold them; `None` for dtypes
/// neither holds.
pub fn elem_bytes(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => Some(4),
        DType::I64 => Some(8),
        DType::Bool => Some(1),
        _ => None,
    }
}

/// [`run`] on a host tensor: this member's result.
pub fn run_tensor(
    comm: &dyn Communicator,
    group: &[u64],
    c: &Collective,
    x: &HostTensor,
) -> Result<HostTensor, CommError> {
    let out_shape = c
        .out_shape(&x.shape, group.len().max(1))
        .map_err(|e| buffer_error(comm, c.name(), e.to_string()))?;
    let (input, elem) = tensor_bytes(x);
    let mut output = vec![0u8; out_shape.iter().product::<usize>() * elem];
    run(comm, group, c, &x.shape, elem, &input, &mut output)?;
    Ok(from_bytes(x.dtype(), out_shape, &output))
}
