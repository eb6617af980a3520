//! Sharding rules: for each op and mesh axis, what the op needs from its operands and what
//! placement its result has. Ops without a rule run replicated.

use oar_ir::dist::{Placement, ReduceOp};
use oar_ir::op::{BinaryOp, Op};
use oar_ir::{Dim, TensorType};

/// What an op needs from each operand on one mesh axis, and what its result has.
pub(super) struct AxisRule {
    pub need: Vec<Placement>,
    pub out: Placement,
}

fn replicated(n: usize) -> AxisRule {
    AxisRule {
        need: vec![Placement::Replicate; n],
        out: Placement::Replicate,
    }
}

fn reduce_kind(op: ReduceOp) -> Placement {
    Placement::Partial(op)
}

/// Sharded output dim of a reshape, if the sharded input dim leads a group of dims whose
/// product maps onto a group of output dims (and the leading output dim divides evenly).
fn reshape_dim(from: &[u64], to: &[u64], d: usize, parts: u64) -> Option<usize> {
    let (mut i, mut j) = (0, 0);
    while i < from.len() && j < to.len() {
        let (gi, gj) = (i, j);
        let (mut a, mut b) = (from[i], to[j]);
        i += 1;
        j += 1;
        while a != b {
            if a < b {
                a *= *from.get(i)?;
                i += 1;
            } else {
                b *= *to.get(j)?;
                j += 1;
            }
        }
        if (gi..i).contains(&d) {
            // Size-1 dims before the split one (a keepdims reduction's `[1, 1, n]`) leave
            // its blocks contiguous; so do size-1 dims before the output dim.
            if from[gi..d].iter().any(|&x| x != 1) {
                return None;
            }
            let oj = (gj..j).find(|&k| to[k] != 1).unwrap_or(gj);
            return to[oj].is_multiple_of(parts).then_some(oj);
        }
    }
    None
}

fn static_shape(t: &TensorType) -> Vec<u64> {
    t.shape.as_static().unwrap_or_default()
}

/// The sharding rule of `op` on one axis of `parts` devices.
pub(super) fn rule(
    op: &Op,
    ins: &[TensorType],
    outs: &[TensorType],
    pl: &[Placement],
    parts: u64,
) -> AxisRule {
    use Placement::*;
    let n = ins.len();
    let r_out = outs.first().map(|t| t.rank()).unwrap_or(0);
    let any_partial = pl.iter().any(|p| matches!(p, Partial(_)));
    match op {
        Op::Dropout { .. } => AxisRule {
            need: pl.to_vec(),
            out: pl[0],
        },
        Op::Unary(_) | Op::Cast { .. } => match pl[0] {
            Partial(_) => replicated(1),
            p => AxisRule {
                need: vec![p],
                out: p,
            },
        },
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let a = oar_ir::op::norm_axis(*axis, ins[0].rank()).unwrap_or(0);
            match pl[0] {
                Shard(d) if d != a => AxisRule {
                    need: vec![Shard(d)],
                    out: Shard(d),
                },
                _ => replicated(1),
            }
        }
        Op::CausalMask { .. } => match pl[0] {
            Shard(d) if d + 2 < ins[0].rank() => AxisRule {
                need: vec![Shard(d)],
                out: Shard(d),
            },
            _ => replicated(1),
        },
        Op::LayerNorm { axis, .. } => {
            let a = oar_ir::op::norm_axis(*axis, ins[0].rank()).unwrap_or(0);
            match pl[0] {
                Shard(d) if d < a => AxisRule {
                    need: vec![Shard(d), Replicate, Replicate],
                    out: Shard(d),
                },
                _ => replicated(3),
            }
        }
        Op::Binary(b) => {
            let lin_ok = |i: usize| match b {
                BinaryOp::Add | BinaryOp::Sub => pl.iter().all(|p| *p == pl[i]),
                BinaryOp::Mul => pl[1 - i] == Replicate,
                BinaryOp::Div => i == 0 && pl[1] == Replicate,
                BinaryOp::Pow
                | BinaryOp::Max
                | BinaryOp::Min
                | BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::Greater => false,
            };
            if any_partial {
                if let Some(i) = (0..2).find(|&i| matches!(pl[i], Partial(_)) && lin_ok(i)) {
                    return AxisRule {
                        need: pl.to_vec(),
                        out: pl[i],
                    };
                }
                // Replicate the partial operands and decide again.
                let fixed: Vec<Placement> = pl
                    .iter()
                    .map(|p| {
                        if matches!(p, Partial(_)) {
                            Replicate
                        } else {
                            *p
                        }
                    })
                    .collect();
                return rule(op, ins, outs, &fixed, parts);
            }
            elementwise_shards(ins, r_out, pl)
        }
        Op::Where => {
            if any_partial {
                return replicated(3);
            }
            elementwise_shards(ins, r_out, pl)
        }
        Op::MatMul(m) => {
            let (ra, rb) = (ins[0].rank(), ins[1].rank());
            let (a_m, a_k) = if m.transpose_a {
                (ra - 1, ra - 2)
            } else {
                (ra - 2, ra - 1)
            };
            let (b_k, b_n) = if m.transpose_b {
                (rb - 1, rb - 2)
            } else {
                (rb - 2, rb - 1)
            };
            let (oa, ob) = (r_out - ra, r_out - rb);
            match (pl[0], pl[1]) {
                (Partial(x), Replicate) => AxisRule {
                    need: pl.to_vec(),
                    out: Partial(x),
                },
                (Replicate, Partial(x)) => AxisRule {
                    need: pl.to_vec(),
                    out: Partial(x),
                },
                (Partial(_), _) | (_, Partial(_)) => replicated(2),
                (Replicate, Replicate) => replicated(2),
                (Shard(d), Shard(e)) if d == a_k && e == b_k => AxisRule {
                    need: pl.to_vec(),
                    out: Partial(ReduceOp::Sum),
                },
                (Shard(d), Replicate) if d == a_k => AxisRule {
                    need: vec![Shard(d), Shard(b_k)],
                    out: Partial(ReduceOp::Sum),
                },
                (Replicate, Shard(e)) if e == b_k => AxisRule {
                    need: vec![Shard(a_k), Shard(e)],
                    out: Partial(ReduceOp::Sum),
                },
                (Shard(d), Replicate) if d == a_m => AxisRule {
                    need: pl.to_vec(),
                    out: Shard(r_out - 2),
                },
                (Replicate, Shard(e)) if e == b_n => AxisRule {
                    need: pl.to_vec(),
                    out: Shard(r_out - 1),
                },
                (Shard(d), other) if d < ra - 2 => {
                    // A batch dim: the other operand must be split the same way unless it broadcasts.
                    let od = d + oa;
                    let bd = od.checked_sub(ob).filter(|&j| j < rb - 2);
                    match (other, bd) {
                        (Shard(e), Some(j)) if e == j => AxisRule {
                            need: pl.to_vec(),
                            out: Shard(od),
                        },
                        (Replicate, Some(j)) if ins[1].shape.0[j] != Dim::Static(1) => AxisRule {
                            need: vec![Shard(d), Shard(j)],
                            out: Shard(od),
                        },
                        (Replicate, _) => AxisRule {
                            need: pl.to_vec(),
                            out: Shard(od),
                        },
                        _ => replicated(2),
                    }
                }
                (Replicate, Shard(e)) if e < rb - 2 => {
                    let od = e + ob;
                    match od.checked_sub(oa).filter(|&i| i < ra - 2) {
                        Some(i) if ins[0].shape.0[i] != Dim::Static(1) => AxisRule {
                            need: vec![Shard(i), Shard(e)],
                            out: Shard(od),
                        },
                        _ => AxisRule {
                            need: pl.to_vec(),
                            out: Shard(od),
                        },
                    }
                }
                _ => replicated(2),
            }
        }
        Op::Embedding => match pl[1] {
            Shard(d) => AxisRule {
                need: vec![Replicate, Shard(d)],
                out: Shard(d),
            },
            _ => replicated(2),
        },
        Op::Gather { axis } => {
            let a = oar_ir::op::norm_axis(*axis, ins[0].rank()).unwrap_or(0);
            match pl[0] {
                Shard(d) if d != a => {
                    let od = if d < a { d } else { d - 1 + ins[1].rank() };
                    AxisRule {
                        need: vec![Shard(d), Replicate],
                        out: Shard(od),
                    }
                }
                _ => replicated(2),
            }
        }
        Op::GatherElements { axis } => {
            let a = oar_ir::op::norm_axis(*axis, ins[0].rank()).unwrap_or(0);
            let d = match (pl[0], pl[1]) {
                (Shard(d), Shard(e)) if d == e => Some(d),
                (Shard(d), Replicate) | (Replicate, Shard(d)) => Some(d),
                _ => None,
            };
            match d.filter(|&d| d != a) {
                Some(d) => AxisRule {
                    need: vec![Shard(d), Shard(d)],
                    out: Shard(d),
                },
                None => replicated(2),
            }
        }
        Op::Reduce(r) => {
            let rank = ins[0].rank();
            let axes: Vec<usize> = if r.axes.is_empty() {
                (0..rank).collect()
            } else {
                r.axes
                    .iter()
                    .filter_map(|&a| oar_ir::op::norm_axis(a, rank).ok())
                    .collect()
            };
            match pl[0] {
                Shard(d) if axes.contains(&d) => AxisRule {
                    need: pl.to_vec(),
                    out: reduce_kind(r.op),
                },
                Shard(d) => {
                    let od = if r.keepdims {
                        d
                    } else {
                        d - axes.iter().filter(|&&a| a < d).count()
                    };
                    AxisRule {
                        need: pl.to_vec(),
                        out: Shard(od),
                    }
                }
                Partial(ReduceOp::Sum) if r.op == ReduceOp::Sum => AxisRule {
                    need: pl.to_vec(),
                    out: pl[0],
                },
                _ => replicated(1),
            }
        }
        Op::Transpose { perm } => match pl[0] {
            Shard(d) => AxisRule {
                need: pl.to_vec(),
                out: Shard(perm.iter().position(|&p| p == d).unwrap_or(0)),
            },
            p => AxisRule {
                need: vec![p],
                out: p,
            },
        },
        // A shard of a kept (not repeated) dim stays a shard of the same dim, shifted by the
        // new leading dims; partial sums stay partial (broadcasting is linear).
        Op::BroadcastTo { .. } => {
            let lead = r_out.saturating_sub(ins[0].rank());
            match pl[0] {
                Shard(d) if ins[0].shape.0.get(d) != Some(&oar_ir::Dim::Static(1)) => AxisRule {
                    need: pl.to_vec(),
                    out: Shard(d + lead),
                },
                Shard(_) => replicated(1),
                p => AxisRule {
                    need: vec![p],
                    out: p,
                },
            }
        }
        // Views keep partials and replicas; a shard follows its dim if it maps cleanly.
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            match pl[0] {
                Shard(d) => {
                    match reshape_dim(&static_shape(&ins[0]), &static_shape(&outs[0]), d, parts) {
                        Some(od) => AxisRule {
                            need: pl.to_vec(),
                            out: Shard(od),
                        },
                        None => replicated(1),
                    }
                }
                p => AxisRule {
                    need: vec![p],
                    out: p,
                },
            }
        }
        // No rule yet: run replicated.
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        | Op::Conv2d(_)
        | Op::ConvTranspose2d(_)
        | Op::BatchNorm { .. }
        | Op::Pool(_)
        | Op::GlobalPool(_)
        | Op::Resize(_)
        | Op::Nms(_)
        | Op::DeformConv2d(_)
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice(_)
        | Op::Shape
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::FusedConv2d { .. }
        | Op::FusedMatMul { .. }
        | Op::Fused { .. }
        | Op::Grad(_)
        | Op::Send { .. } => replicated(n),
    }
}

/// Elementwise ops with broadcasting: operands sharded on one output dim stay so; replicated
/// operands that have that dim are sliced locally; anything else is replicated.
fn elementwise_shards(ins: &[TensorType], r_out: usize, pl: &[Placement]) -> AxisRule {
    let out_dims: Vec<Option<usize>> = pl
        .iter()
        .zip(ins)
        .map(|(p, t)| match p {
            Placement::Shard(d) => Some(d + (r_out - t.rank())),
            _ => None,
        })
        .collect();
    let mut shard_dims: Vec<usize> = out_dims.iter().flatten().copied().collect();
    shard_dims.dedup();
    match shard_dims.as_slice() {
        [] => replicated(ins.len()),
        [od] => {
            let need = ins
                .iter()
                .map(|t| {
                    let off = r_out - t.rank();
                    match od.checked_sub(off) {
                        Some(d) if t.shape.0[d] != Dim::Static(1) => Placement::Shard(d),
                        _ => Placement::Replicate,
                    }
                })
                .collect();
            AxisRule {
                need,
                out: Placement::Shard(*od),
            }
        }
        _ => replicated(ins.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::reshape_dim;

    #[test]
    fn reshape_carries_a_split_through_leading_ones_and_merges() {
        // Heads: [N, S, H·D] → [N, S, H, D] keeps the split on H.
        assert_eq!(reshape_dim(&[4, 8, 64], &[4, 8, 2, 32], 2, 2), Some(2));
        // A keepdims bias gradient [1, 1, n] → [n].
        assert_eq!(reshape_dim(&[1, 1, 64], &[64], 2, 2), Some(0));
        assert_eq!(reshape_dim(&[64], &[1, 1, 64], 0, 2), Some(2));
        // Flattened rows [N, S, K] → [N·S, K] keep a batch split.
        assert_eq!(reshape_dim(&[4, 8, 32], &[32, 32], 0, 2), Some(0));
        // An inner dim of a merged group is not contiguous.
        assert_eq!(reshape_dim(&[4, 8, 32], &[32, 32], 1, 2), None);
        // Heads that do not divide.
        assert_eq!(reshape_dim(&[4, 8, 96], &[4, 8, 3, 32], 2, 2), None);
    }
}
