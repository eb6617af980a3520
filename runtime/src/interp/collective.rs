//! Collectives over one axis of a mesh, through a `Communicator`.

use super::{err, f32s, layout, norm_axis, Res};
use crate::comm::Communicator;
use crate::tensor::HostTensor;
use oar_ir::dist::{ProcessMesh, ReduceOp};
use oar_ir::op::{CommGroup, Op};
use std::collections::BTreeMap;

/// The global ids of this rank's group along `g.axis`, and this rank's index in it.
fn group_of(
    g: &CommGroup,
    meshes: &BTreeMap<String, ProcessMesh>,
    rank: u64,
) -> Res<(Vec<u64>, usize)> {
    let mesh = meshes
        .get(&g.mesh)
        .ok_or_else(|| format!("unknown mesh @{}", g.mesh))?;
    let pos = mesh
        .device_ids
        .iter()
        .position(|&d| d == rank)
        .ok_or_else(|| format!("rank {rank} is not in mesh @{}", g.mesh))?;
    let mut coords = vec![0usize; mesh.shape.len()];
    let mut rest = pos;
    for d in (0..mesh.shape.len()).rev() {
        coords[d] = rest % mesh.shape[d] as usize;
        rest /= mesh.shape[d] as usize;
    }
    let members = (0..mesh.shape[g.axis] as usize)
        .map(|i| {
            let mut c = coords.clone();
            c[g.axis] = i;
            let idx = c
                .iter()
                .zip(&mesh.shape)
                .fold(0usize, |acc, (&x, &s)| acc * s as usize + x);
            mesh.device_ids[idx]
        })
        .collect();
    Ok((members, coords[g.axis]))
}

fn reduce(op: ReduceOp, parts: &[HostTensor]) -> Res<HostTensor> {
    let first = parts.first().ok_or("empty group")?;
    let mut acc: Vec<f64> = f32s(first)?.iter().map(|&v| v as f64).collect();
    for p in &parts[1..] {
        for (a, &v) in acc.iter_mut().zip(f32s(p)?) {
            let v = v as f64;
            *a = match op {
                ReduceOp::Sum | ReduceOp::Mean => *a + v,
                ReduceOp::Max => a.max(v),
                ReduceOp::Min => a.min(v),
                ReduceOp::Prod => *a * v,
            };
        }
    }
    if op == ReduceOp::Mean {
        acc.iter_mut().for_each(|a| *a /= parts.len() as f64);
    }
    Ok(HostTensor::f32(
        first.shape.clone(),
        acc.into_iter().map(|v| v as f32).collect(),
    ))
}

/// Runs one collective for this rank.
pub(crate) fn run(
    op: &Op,
    x: &HostTensor,
    meshes: &BTreeMap<String, ProcessMesh>,
    comm: &dyn Communicator,
) -> Res<HostTensor> {
    let g = op.comm_group().ok_or("not a collective")?;
    let (members, me) = group_of(g, meshes, comm.rank())?;
    let n = members.len();
    let all = comm.exchange(&members, x.clone())?;
    match op {
        Op::AllReduce { op, .. } => reduce(*op, &all),
        Op::AllGather { axis, .. } => layout::concat(&all.iter().collect::<Vec<_>>(), *axis),
        Op::ReduceScatter { op, axis, .. } => {
            let r = reduce(*op, &all)?;
            let d = norm_axis(*axis, r.shape.len())?;
            let len = r.shape[d] / n;
            Ok(r.narrow(d, me * len, len))
        }
        Op::AllToAll {
            split_axis,
            concat_axis,
            ..
        } => {
            let s = norm_axis(*split_axis, x.shape.len())?;
            let len = x.shape[s] / n;
            let pieces: Vec<HostTensor> = all.iter().map(|t| t.narrow(s, me * len, len)).collect();
            layout::concat(&pieces.iter().collect::<Vec<_>>(), *concat_axis)
        }
        Op::Broadcast { root, .. } => all
            .get(*root as usize)
            .cloned()
            .ok_or_else(|| format!("root {root} is outside a group of {n}")),
        _ => err("not a collective"),
    }
}
