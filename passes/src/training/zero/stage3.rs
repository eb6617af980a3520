//! ZeRO stage 3: the parameters are gathered from the ranks' parts where they are used.

use super::{internal, part_name, reshape_op, slice_op, Bucket, ZeroLayout, PARAM_SLOT};
use crate::rebuild::Rebuilder;
use crate::training::data_parallel::dp_group;
use crate::training::TrainError;
use oar_ir::op::Op;
use oar_ir::{Graph, NodeId, ValueRef};

/// Stage 3: replaces every use of a bucketed parameter by the all-gathered part, gathered
/// once for the forward (nodes before `bwd_start`) and once for the backward, each right
/// before its first use, so the full bucket lives only while its layers run (the
/// interpreter frees a value after its last use). The parameters themselves leave the graph.
pub(crate) fn gather_for_use(
    g: &Graph,
    l: &ZeroLayout,
    bwd_start: usize,
) -> Result<Graph, TrainError> {
    let mut of: Vec<Option<(usize, usize)>> = vec![None; g.len()];
    let mut parts: Vec<Option<NodeId>> = vec![None; l.buckets.len()];
    for (id, n) in g.iter() {
        let Op::Param(p) = &n.op else { continue };
        for (bi, b) in l.buckets.iter().enumerate() {
            if p.name == part_name(bi, PARAM_SLOT) {
                parts[bi] = Some(id);
            }
            if let Some(mi) = b.members.iter().position(|m| m.name == p.name) {
                of[id.index()] = Some((bi, mi));
            }
        }
    }
    let mut r = Rebuilder::new(g);
    // Per region (forward, backward) and bucket, the gathered members.
    let mut gathered: [Vec<Option<Vec<ValueRef>>>; 2] =
        [vec![None; l.buckets.len()], vec![None; l.buckets.len()]];
    for (id, n) in g.iter() {
        if r.is_mapped(id) || of[id.index()].is_some() {
            continue;
        }
        let region = usize::from(id.index() >= bwd_start);
        for v in &n.inputs {
            let Some((bi, mi)) = of[v.node.index()] else {
                continue;
            };
            if gathered[region][bi].is_none() {
                let part = parts[bi].ok_or_else(|| internal("no parameter part"))?;
                if !r.is_mapped(part) {
                    r.copy(part)?;
                }
                let part = r.value(part.into());
                gathered[region][bi] = Some(gather_members(&mut r, &l.buckets[bi], part, l.dp)?);
            }
            let vals = gathered[region][bi]
                .as_ref()
                .ok_or_else(|| internal("a gather"))?;
            r.alias(v.node, vec![vals[mi]]);
        }
        r.copy(id)?;
    }
    Ok(r.finish())
}

/// All-gathers bucket `b`'s parameter part through a rebuilder: the members' full values.
fn gather_members(
    r: &mut Rebuilder,
    b: &Bucket,
    part: ValueRef,
    dp: u64,
) -> Result<Vec<ValueRef>, TrainError> {
    let op = Op::AllGather {
        axis: 0,
        group: dp_group(),
    };
    let mut full: ValueRef = r.add(op, vec![part], None)?.into();
    if b.part * dp > b.len {
        full = r.add(slice_op(0, b.len), vec![full], None)?.into();
    }
    let pieces: Vec<ValueRef> = if b.members.len() == 1 {
        vec![full]
    } else {
        let sizes = b.members.iter().map(|m| m.numel).collect();
        let split = r.add(Op::Split { axis: 0, sizes }, vec![full], None)?;
        (0u32..b.members.len() as u32)
            .map(|p| ValueRef::new(split, p))
            .collect()
    };
    b.members
        .iter()
        .zip(pieces)
        .map(|(m, v)| Ok(r.add(reshape_op(&m.dims), vec![v], None)?.into()))
        .collect()
}
