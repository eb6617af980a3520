//! The host side of ZeRO's optimizer state: full single-process slots to a rank's parts
//! and back (see the parent module's docs on checkpoints).

use super::{part_name, ZeroLayout, PARAM_SLOT};
use oar_runtime::comm::shaped::{run_tensor, Collective};
use oar_runtime::comm::{CommError, Communicator};
use oar_runtime::{HostTensor, Weights};

/// Why optimizer state could not be partitioned or gathered.
#[derive(Debug, thiserror::Error)]
pub enum ZeroStateError {
    #[error("optimizer state `{name}` is {found}, expected {want} f32 elements")]
    Shape {
        name: String,
        found: String,
        want: u64,
    },
    #[error("stage 3 partitions the parameters, but `{0}` is not in the weights")]
    MissingParam(String),
    #[error("gathering the ZeRO optimizer state: {0}")]
    Comm(#[from] CommError),
}

/// What a rank holds in parts: each optimizer slot (full name `<param>.<slot>`, initial
/// value) and, at stage 3, the parameters themselves (full name `<param>`, no initial
/// value: they must be in the weights).
fn entries(l: &ZeroLayout) -> Vec<(&str, Option<f64>)> {
    let mut e: Vec<(&str, Option<f64>)> = l
        .slots
        .iter()
        .map(|(s, init)| (s.as_str(), Some(*init)))
        .collect();
    if l.stage >= 3 {
        e.push((PARAM_SLOT, None));
    }
    e
}

fn full_name(param: &str, slot: &str) -> String {
    match slot {
        PARAM_SLOT => param.to_string(),
        _ => format!("{param}.{slot}"),
    }
}

/// Slices full single-process slots (`<param>.<slot>`, fresh or from a checkpoint; at
/// stage 3 the parameters too) into this rank's parts and removes the full tensors from
/// `weights`. Parts already present are kept (the full tensors, if any, are then stale). A
/// slot missing from `weights` starts at its initial value.
pub fn partition_state(l: &ZeroLayout, weights: &mut Weights) -> Result<(), ZeroStateError> {
    for (bi, b) in l.buckets.iter().enumerate() {
        for (slot, init) in entries(l) {
            let name = part_name(bi, slot);
            if !weights.contains_key(&name) {
                let pad = init.unwrap_or(0.0) as f32;
                let mut flat = Vec::with_capacity((b.part * l.dp) as usize);
                for m in &b.members {
                    let full = full_name(&m.name, slot);
                    match (weights.get(&full), init) {
                        (Some(t), _) => match t.as_f32().filter(|v| v.len() as u64 == m.numel) {
                            Some(v) => flat.extend_from_slice(v),
                            None => {
                                return Err(ZeroStateError::Shape {
                                    name: full,
                                    found: t.describe(),
                                    want: m.numel,
                                })
                            }
                        },
                        (None, Some(init)) => {
                            flat.extend(std::iter::repeat_n(init as f32, m.numel as usize))
                        }
                        (None, None) => return Err(ZeroStateError::MissingParam(full)),
                    }
                }
                flat.resize((b.part * l.dp) as usize, pad);
                let lo = (l.rank * b.part) as usize;
                let part = flat[lo..lo + b.part as usize].to_vec();
                weights.insert(name, HostTensor::f32(vec![b.part as usize], part));
            }
            for m in &b.members {
                weights.remove(&full_name(&m.name, slot));
            }
        }
    }
    Ok(())
}

/// Collective (every rank of the group calls it, in the same order): all-gathers each part
/// and writes the full single-process slots `<param>.<slot>` (and at stage 3 the
/// parameters) into `weights`, as one process
/// would hold them, so a checkpoint written next loads without ZeRO (and under ZeRO with
/// another number of ranks). The parts are removed: the next step slices them again
/// ([`partition_state`]), so `weights` never holds a rank-specific tensor a checkpoint
/// could carry to another rank.
pub fn gather_full_state(
    l: &ZeroLayout,
    weights: &mut Weights,
    comm: &dyn Communicator,
) -> Result<(), ZeroStateError> {
    for (bi, b) in l.buckets.iter().enumerate() {
        for (slot, _) in entries(l) {
            let name = part_name(bi, slot);
            if !weights.contains_key(&name) {
                // Not partitioned (no step ran since the last gather, or none at all): the
                // full tensors are current. Every rank is in the same case, the loop being
                // the same on all of them, so the collectives stay matched.
                continue;
            }
            let part = weights
                .get(&name)
                .filter(|t| t.as_f32().is_some_and(|v| v.len() as u64 == b.part))
                .ok_or_else(|| ZeroStateError::Shape {
                    name: name.clone(),
                    found: weights
                        .get(&name)
                        .map_or("missing".into(), |t| t.describe()),
                    want: b.part,
                })?;
            let full = run_tensor(comm, &l.group, &Collective::AllGather { axis: 0 }, part)?;
            let v = full
                .as_f32()
                .filter(|v| v.len() as u64 == b.part * l.dp)
                .ok_or_else(|| ZeroStateError::Shape {
                    name: format!("{name} (gathered)"),
                    found: full.describe(),
                    want: b.part * l.dp,
                })?;
            for m in &b.members {
                let (a, z) = (m.offset as usize, (m.offset + m.numel) as usize);
                let dims = m.dims.iter().map(|&d| d as usize).collect();
                let data = v[a..z].to_vec();
                weights.insert(full_name(&m.name, slot), HostTensor::f32(dims, data));
            }
            weights.remove(&name);
        }
    }
    Ok(())
}
