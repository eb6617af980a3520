//! What a training step adds to partitioning: state updates (parameters and optimizer
//! state written back after the step) keep the placement of the parameter they replace, so
//! a split weight and its moments stay split across steps; running statistics (batch_norm's
//! state) are refused. Also the per-op rewrites of attributes that name global sizes.

use super::{Completion, PartitionError};
use crate::parallel::sharding_rules::AxisRule;
use oar_ir::dist::Placement;
use oar_ir::op::{Op, ReshapeDim};
use oar_ir::{ExecMode, Graph, TensorType};
use std::collections::BTreeMap;

/// Refuses state the partitioner cannot keep consistent across ranks: running statistics
/// (an update produced by batch_norm). Parameters and optimizer state updated by ordinary
/// ops partition like any other value.
pub(super) fn check_state(g: &Graph) -> Result<(), PartitionError> {
    let stats: Vec<String> = g
        .state_updates()
        .filter(|(_, v)| matches!(g.node(v.node).op, Op::BatchNorm { .. }))
        .map(|(n, _)| n.to_string())
        .collect();
    if stats.is_empty() {
        Ok(())
    } else {
        Err(PartitionError::TrainingState(stats.join(", ")))
    }
}

/// The placement each graph output ends in: replicated for the model's outputs, the
/// parameter's own placement for a state update (replicated when no parameter of that name
/// is in the graph).
pub(super) fn output_placements(g: &Graph, c: &Completion, axes: usize) -> Vec<Vec<Placement>> {
    let params: BTreeMap<&str, &Vec<Placement>> = g
        .iter()
        .filter_map(|(id, n)| match &n.op {
            Op::Param(p) => Some((p.name.as_str(), &c.declared[id.index()])),
            // op-contract: pass-through (only parameters carry state)
            _ => None,
        })
        .collect();
    let replicated = vec![Placement::Replicate; axes];
    let models = g.model_outputs().len();
    let mut out = vec![replicated.clone(); models];
    out.extend(g.state.iter().map(|name| {
        params
            .get(name.as_str())
            .map_or(replicated.clone(), |p| (*p).clone())
    }));
    out
}

/// Dropout in training form on one mesh axis. A rank draws the mask elements of its
/// contiguous block of the single-process tensor (`RunOptions::batch_shard`), which holds
/// for a split of the leading (batch) dim only: other splits are gathered first, so every
/// rank draws the whole mask and the run drops what one process would. Partial sums keep
/// one mask on every rank, which is linear. (At inference dropout is a scale:
/// `sharding_rules::rule` keeps any placement.)
pub(super) fn dropout_rule(p: Placement) -> AxisRule {
    match p {
        Placement::Shard(d) if d > 0 => AxisRule {
            need: vec![Placement::Replicate],
            out: Placement::Replicate,
        },
        p => AxisRule {
            need: vec![p],
            out: p,
        },
    }
}

/// The op a rank runs for a node: attributes that name global sizes (reshape targets,
/// broadcast shapes) take the local ones; a training dropout keeps the mask stream of the
/// node it was in the global graph (its name, which the rank graph may re-assign).
pub(super) fn local_op(op: &Op, name: &str, local_out: &[TensorType], exec: ExecMode) -> Op {
    match op {
        Op::Reshape { .. } => Op::Reshape {
            shape: local_out[0]
                .shape
                .0
                .iter()
                .cloned()
                .map(ReshapeDim::Dim)
                .collect(),
        },
        Op::BroadcastTo { .. } => Op::BroadcastTo {
            shape: local_out[0].shape.0.clone(),
        },
        Op::Dropout {
            p,
            mode,
            mask_of: None,
        } if exec == ExecMode::Training => Op::Dropout {
            p: *p,
            mode: *mode,
            mask_of: Some(name.to_string()),
        },
        // op-contract: pass-through (per-op decisions are in sharding_rules::rule)
        op => op.clone(),
    }
}
