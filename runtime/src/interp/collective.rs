//! Collectives over one axis of a mesh and point-to-point transfers, through a
//! `Communicator`.

use super::Res;
use crate::comm::shaped::{self, Collective};
use crate::comm::Communicator;
use crate::tensor::HostTensor;
use oar_ir::dist::ProcessMesh;
use oar_ir::op::Op;
use oar_ir::DType;
use std::collections::BTreeMap;

/// Runs one collective for this rank.
pub(crate) fn run(
    op: &Op,
    x: &HostTensor,
    meshes: &BTreeMap<String, ProcessMesh>,
    comm: &dyn Communicator,
) -> Res<HostTensor> {
    let g = op.comm_group().ok_or("not a collective")?;
    let mesh = meshes
        .get(&g.mesh)
        .ok_or_else(|| format!("unknown mesh @{}", g.mesh))?;
    let (members, _) = shaped::mesh_group(mesh, g.axis, comm.rank()).map_err(|e| e.to_string())?;
    let c = Collective::of_op(op, x.shape.len())
        .map_err(|e| e.to_string())?
        .ok_or("not a collective")?;
    shaped::run_tensor(comm, &members, &c, x).map_err(|e| e.to_string())
}

/// Sends `x` to global rank `peer`.
pub(crate) fn send(peer: u64, x: &HostTensor, comm: &dyn Communicator) -> Res<()> {
    let bytes = shaped::tensor_bytes(x).0;
    comm.send(peer, &bytes).map_err(|e| e.to_string())
}

/// Receives a tensor of `dtype` and `shape` from global rank `peer`.
pub(crate) fn recv(
    peer: u64,
    dtype: DType,
    shape: &[usize],
    comm: &dyn Communicator,
) -> Res<HostTensor> {
    let elem = shaped::elem_bytes(dtype)
        .ok_or_else(|| format!("{} tensors are not transferred", dtype.name()))?;
    let mut bytes = vec![0u8; shape.iter().product::<usize>() * elem];
    comm.recv(peer, &mut bytes).map_err(|e| e.to_string())?;
    Ok(shaped::from_bytes(dtype, shape.to_vec(), &bytes))
}
