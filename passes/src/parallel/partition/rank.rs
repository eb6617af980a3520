//! Building one rank's graph: local types, and the collectives or local slices that move a
//! value from one placement to another on one mesh axis.

use super::PartitionError;
use oar_ir::dist::{Placement, ProcessMesh};
use oar_ir::op::{CommGroup, Op, SliceAttrs};
use oar_ir::{Dim, Graph, TensorType, ValueRef};
use std::collections::HashMap;

/// The local type of a global type under per-axis placements.
pub(super) fn local_type(
    t: &TensorType,
    pl: &[Placement],
    mesh: &ProcessMesh,
) -> Result<TensorType, PartitionError> {
    let mut dims = t.shape.0.clone();
    for (a, p) in pl.iter().enumerate() {
        if let Placement::Shard(d) = p {
            let parts = mesh.shape[a];
            dims[*d] = dims
                .get(*d)
                .and_then(|x| x.div_exact(&Dim::Static(parts)))
                .ok_or_else(|| PartitionError::Uneven {
                    ty: t.to_string(),
                    dim: *d,
                    parts,
                })?;
        }
    }
    Ok(TensorType::new(t.dtype, dims))
}

/// Coordinates of the `pos`-th device of a mesh, row-major.
pub(super) fn coords_of(mesh: &ProcessMesh, pos: usize) -> Vec<u64> {
    let mut coords = vec![0u64; mesh.shape.len()];
    let mut rest = pos as u64;
    for d in (0..mesh.shape.len()).rev() {
        coords[d] = rest % mesh.shape[d];
        rest /= mesh.shape[d];
    }
    coords
}

/// The device at `coords` of a mesh.
pub(super) fn device_at(mesh: &ProcessMesh, coords: &[u64]) -> Option<u64> {
    let idx = coords
        .iter()
        .zip(&mesh.shape)
        .fold(0u64, |acc, (&x, &s)| acc * s + x);
    mesh.device_ids.get(idx as usize).copied()
}

pub(super) struct RankBuilder<'a> {
    pub mesh_name: &'a str,
    pub mesh: &'a ProcessMesh,
    pub coords: Vec<u64>,
    pub g: Graph,
    pub collectives: usize,
    /// Reshards already made, by (local value, from, to): the q, k and v projections of a
    /// sequence-parallel layer share one all-gather of their input instead of three.
    pub made: HashMap<(ValueRef, Vec<Placement>, Vec<Placement>), ValueRef>,
}

impl RankBuilder<'_> {
    pub fn add(&mut self, op: Op, ins: Vec<ValueRef>) -> Result<ValueRef, PartitionError> {
        if op.comm_group().is_some() {
            self.collectives += 1;
        }
        self.g
            .add_node(op, ins, None)
            .map(ValueRef::from)
            .map_err(|e| PartitionError::Graph(e.to_string()))
    }

    /// Moves a value from `from` to `to` on every mesh axis, axis by axis; a move made
    /// before for the same value is reused.
    pub fn reshard_all(
        &mut self,
        v: ValueRef,
        from: &[Placement],
        to: &[Placement],
    ) -> Result<ValueRef, PartitionError> {
        if from == to {
            return Ok(v);
        }
        let key = (v, from.to_vec(), to.to_vec());
        if let Some(&done) = self.made.get(&key) {
            return Ok(done);
        }
        let mut out = v;
        for (a, (f, t)) in from.iter().zip(to).enumerate() {
            out = self.reshard(out, a, *f, *t)?;
        }
        self.made.insert(key, out);
        Ok(out)
    }

    /// Moves a value from `from` to `to` on mesh axis `a`: partial → sharded by
    /// reduce-scatter, partial → replicated by all-reduce, sharded → replicated by
    /// all-gather, replicated → sharded by a local slice.
    pub fn reshard(
        &mut self,
        v: ValueRef,
        a: usize,
        from: Placement,
        to: Placement,
    ) -> Result<ValueRef, PartitionError> {
        use Placement::*;
        let group = CommGroup {
            mesh: self.mesh_name.to_string(),
            axis: a,
        };
        let v = match (from, to) {
            _ if from == to => return Ok(v),
            // Megatron-SP's reduce-scatter after a row-parallel matmul: each rank keeps the
            // reduced block at its coordinate, as the all-gather below reassembles it.
            (Partial(op), Shard(d)) => {
                return self.add(
                    Op::ReduceScatter {
                        op,
                        axis: d as i64,
                        group,
                    },
                    vec![v],
                )
            }
            (Partial(op), _) => self.add(
                Op::AllReduce {
                    op,
                    group: group.clone(),
                },
                vec![v],
            )?,
            (Shard(d), _) => self.add(
                Op::AllGather {
                    axis: d as i64,
                    group: group.clone(),
                },
                vec![v],
            )?,
            (Replicate, _) => v,
        };
        match to {
            Replicate => Ok(v),
            Shard(d) => {
                let t = self
                    .g
                    .value_type(v)
                    .cloned()
                    .ok_or_else(|| PartitionError::Graph("a value without a type".into()))?;
                let full = t.shape.0[d]
                    .as_static()
                    .ok_or(PartitionError::Symbolic(t.to_string()))?
                    as i64;
                let len = full / self.mesh.shape[a] as i64;
                let start = self.coords[a] as i64 * len;
                let s = SliceAttrs {
                    axes: vec![d as i64],
                    starts: vec![start],
                    ends: vec![start + len],
                    steps: vec![1],
                };
                self.add(Op::Slice(s), vec![v])
            }
            Partial(_) => Err(PartitionError::MakePartial),
        }
    }
}
