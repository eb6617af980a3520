//! Activation recomputation: a rewrite of a training step that stops keeping some forward
//! activations for the backward and computes them again just before their first backward
//! use, trading compute for activation memory. The modes are the planner's
//! ([`crate::parallel::step_cost::Recompute`], `oar plan --recompute`):
//!
//! - `full`: per transformer layer / block only the block's inputs are kept (the checkpoint
//!   boundaries); the block's forward is recomputed right before its backward. Blocks are
//!   named by the parameters their ops read: the given name prefixes, or else the name
//!   scope up to the first numbered component (`encoder.layers.3.attn.q.weight` is in block
//!   `encoder.layers.3`, `blocks3.0.dw_conv.weight` in `blocks3.0`).
//! - `selective`: only the attention core — the score matmul `q·kᵀ`, its scale and mask,
//!   the softmax and the dropout after it — is recomputed (Korthikanti et al. 2022,
//!   Megatron's selective recomputation): the activations that grow with `seq²` and cost
//!   little to compute.
//!
//! What is recomputed: a forward node of a group whose outputs no forward node outside the
//! group reads (a block's internal values; its outputs to the next block stay as
//! checkpoints) and that the backward, or another recomputed node, needs. Sources, graph
//! outputs and collectives are never recomputed. A recomputed dropout replays the original
//! node's mask (`mask_of`), so gradients are bit-identical: the clones run the same ops on
//! the same values. The clones of a group are placed right before the first backward node
//! that reads one of them, so the forward originals die at their last forward use and a
//! liveness-ordered memory plan (`crate::liveness`) sees the saving.

use super::TrainError;
use crate::rebuild::Rebuilder;
use oar_ir::op::Op;
use oar_ir::{Graph, NodeId, ValueRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// Activation recomputation, named as the planner's
/// [`crate::parallel::step_cost::Recompute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    #[default]
    None,
    Selective,
    Full,
}

/// Names [`Recompute::from_str`] knows.
pub const RECOMPUTE_NAMES: [&str; 3] = ["none", "selective", "full"];

impl FromStr for Recompute {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Recompute, TrainError> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Recompute::None),
            "selective" => Ok(Recompute::Selective),
            "full" => Ok(Recompute::Full),
            _ => Err(TrainError::Config {
                message: format!(
                    "unknown recompute mode `{s}`; known: {}",
                    RECOMPUTE_NAMES.join(", ")
                ),
            }),
        }
    }
}

impl From<Recompute> for crate::parallel::step_cost::Recompute {
    fn from(r: Recompute) -> Self {
        match r {
            Recompute::None => Self::None,
            Recompute::Selective => Self::Selective,
            Recompute::Full => Self::Full,
        }
    }
}

/// Recomputation settings of a training step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecomputeConfig {
    #[serde(default)]
    pub mode: Recompute,
    /// Block name prefixes for `full` (e.g. `encoder.layers.0`, …); empty: found by name
    /// scope.
    #[serde(default)]
    pub blocks: Vec<String>,
}

/// What [`recompute`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecomputeReport {
    /// Groups (blocks, or attention cores) with something recomputed.
    pub groups: usize,
    /// Forward nodes cloned into the backward.
    pub recomputed_nodes: usize,
}

/// Rewrites the step `g`, whose nodes before index `forward_len` are the forward (the loss
/// included) and the rest its backward and update, to recompute activations per `cfg`.
pub fn recompute(
    g: &Graph,
    forward_len: usize,
    cfg: &RecomputeConfig,
) -> Result<(Graph, RecomputeReport), TrainError> {
    let groups = match cfg.mode {
        Recompute::None => return Ok((g.clone(), RecomputeReport::default())),
        Recompute::Full => blocks(g, forward_len, &cfg.blocks),
        Recompute::Selective => attention_cores(g, forward_len),
    };
    let groups: Vec<BTreeSet<NodeId>> = groups
        .into_iter()
        .map(|grp| recomputed_part(g, forward_len, &grp, cfg.mode == Recompute::Full))
        .filter(|grp| !grp.is_empty())
        .collect();
    let mut group_of: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (k, grp) in groups.iter().enumerate() {
        for &id in grp {
            group_of.insert(id, k);
        }
    }
    let mut report = RecomputeReport::default();
    let mut r = Rebuilder::new(g);
    // Clones of recomputed values, once their group has been emitted.
    let mut clone: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    let mut emitted = vec![false; groups.len()];
    for (id, n) in g.iter() {
        if matches!(n.op, Op::Input) {
            continue;
        }
        if id.index() < forward_len {
            match keyed_dropout(&n.op, &n.name) {
                // Renaming (the rebuilder renumbers numeric names) must not change the
                // mask: the backward replays it by the original name.
                Some(op) => {
                    let ins = n.inputs.iter().map(|v| r.value(*v)).collect();
                    let new = r.add(op, ins, Some(&n.name))?;
                    r.alias(id, vec![new.into()]);
                }
                None => {
                    r.copy(id)?;
                }
            }
            continue;
        }
        // Emit the groups this backward node needs that are not emitted yet.
        let need: BTreeSet<usize> = n
            .inputs
            .iter()
            .filter_map(|v| group_of.get(&v.node).copied())
            .filter(|k| !emitted[*k])
            .collect();
        for k in need {
            emitted[k] = true;
            for &cid in &groups[k] {
                let c = g.node(cid);
                let ins = c
                    .inputs
                    .iter()
                    .map(|v| clone.get(v).copied().unwrap_or_else(|| r.value(*v)))
                    .collect();
                // A cloned dropout draws the original's mask.
                let op = keyed_dropout(&c.op, &c.name).unwrap_or_else(|| c.op.clone());
                let new = r.add(op, ins, Some(&format!("{}.recompute", c.name)))?;
                for port in 0..c.outputs.len() as u32 {
                    clone.insert(ValueRef::new(cid, port), ValueRef::new(new, port));
                }
                report.recomputed_nodes += 1;
            }
            report.groups += 1;
        }
        if n.inputs.iter().any(|v| clone.contains_key(v)) {
            let ins = n
                .inputs
                .iter()
                .map(|v| clone.get(v).copied().unwrap_or_else(|| r.value(*v)))
                .collect();
            let new = r.add(n.op.clone(), ins, Some(&n.name))?;
            let outs = (0..n.outputs.len() as u32)
                .map(|p| ValueRef::new(new, p))
                .collect();
            r.alias(id, outs);
        } else {
            r.copy(id)?;
        }
    }
    let out = r.finish();
    oar_ir::verify(&out).map_err(|e| TrainError::Verify(e.to_string()))?;
    Ok((out, report))
}

/// A dropout that draws the mask of node `name` (or of the node it already replays).
fn keyed_dropout(op: &Op, name: &str) -> Option<Op> {
    let Op::Dropout { p, mode, mask_of } = op else {
        return None;
    };
    Some(Op::Dropout {
        p: *p,
        mode: *mode,
        mask_of: Some(mask_of.clone().unwrap_or_else(|| name.to_string())),
    })
}

/// Whether a node may be run a second time: pure, not a source, not communication.
fn recomputable(op: &Op) -> bool {
    !op.is_source() && !op.has_effects()
}

/// The nodes of group `grp` to recompute: those the backward (or another such node) needs,
/// whose values the backward reads are not graph outputs, and — with `keep_escaping`, for blocks — that no forward node
/// outside the group reads. A block's outputs are the next block's checkpoint: its backward
/// reads them first, and recomputing them there would hold this block's clones through the
/// next block's backward. An attention core's output is read by its own block's backward
/// only, so selective recomputation clones it too.
fn recomputed_part(
    g: &Graph,
    forward_len: usize,
    grp: &BTreeSet<NodeId>,
    keep_escaping: bool,
) -> BTreeSet<NodeId> {
    let outputs: BTreeSet<ValueRef> = g.outputs().iter().copied().collect();
    let mut escapes: BTreeSet<NodeId> = BTreeSet::new();
    let mut read_by_backward: BTreeSet<NodeId> = BTreeSet::new();
    for (id, n) in g.iter() {
        for v in &n.inputs {
            if !grp.contains(&v.node) {
                continue;
            }
            if id.index() >= forward_len {
                read_by_backward.insert(v.node);
                // A graph output stays alive to the end anyway: cloning it saves nothing.
                if outputs.contains(v) {
                    escapes.insert(v.node);
                }
            } else if keep_escaping && !grp.contains(&id) {
                escapes.insert(v.node);
            }
        }
    }
    let candidates: BTreeSet<NodeId> = grp
        .iter()
        .copied()
        .filter(|id| !escapes.contains(id) && recomputable(&g.node(*id).op))
        .collect();
    // Needed: read by the backward, then (walking back) the candidates those clones read.
    let mut need: BTreeSet<NodeId> = candidates
        .iter()
        .copied()
        .filter(|id| read_by_backward.contains(id))
        .collect();
    let mut stack: Vec<NodeId> = need.iter().copied().collect();
    while let Some(id) = stack.pop() {
        for v in &g.node(id).inputs {
            if candidates.contains(&v.node) && need.insert(v.node) {
                stack.push(v.node);
            }
        }
    }
    need
}

/// `full`'s groups. A block is named by the parameters it reads: `prefixes` when given,
/// else the name scope of each parameter ([`scope_block`]); node names are often bare
/// numbers, parameter names keep the model's scopes. A block spans the forward nodes from
/// the first to the last that reads one of its parameters (model builders emit a layer's
/// ops together), clipped so blocks do not overlap.
fn blocks(g: &Graph, forward_len: usize, prefixes: &[String]) -> Vec<BTreeSet<NodeId>> {
    let block_of = |name: &str| -> Option<String> {
        if prefixes.is_empty() {
            return scope_block(name);
        }
        prefixes
            .iter()
            .filter(|p| name == p.as_str() || name.starts_with(&format!("{p}.")))
            .max_by_key(|p| p.len())
            .cloned()
    };
    let mut span: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (id, n) in g.iter().take(forward_len) {
        for v in &n.inputs {
            let Op::Param(p) = &g.node(v.node).op else {
                continue;
            };
            if let Some(k) = block_of(&p.name) {
                let e = span.entry(k).or_insert((id.index(), id.index()));
                e.0 = e.0.min(id.index());
                e.1 = e.1.max(id.index());
            }
        }
    }
    let mut spans: Vec<(usize, usize)> = span.into_values().collect();
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut next_free = 0;
    for (lo, hi) in spans {
        let lo = lo.max(next_free);
        if lo > hi {
            continue;
        }
        next_free = hi + 1;
        out.push(
            (lo..=hi)
                .map(|i| NodeId(i as u32))
                .filter(|id| !matches!(g.node(*id).op, Op::Input))
                .collect(),
        );
    }
    out
}

/// The block scope of a parameter name: up to the first numeric component that has a scope
/// before it and more name after it (`encoder.layers.3.attn.q.weight` →
/// `encoder.layers.3`; `blocks3.0.dw_conv.weight` → `blocks3.0`; optimizer-style names
/// ending in a number are no block).
fn scope_block(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let k = parts
        .iter()
        .position(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))?;
    (k >= 1 && k + 1 < parts.len()).then(|| parts[..=k].join("."))
}

/// `selective`'s groups: for each softmax over attention scores (rank ≥ 3), the chain from
/// the score matmul through scale/mask ops to the softmax and the dropout after it.
fn attention_cores(g: &Graph, forward_len: usize) -> Vec<BTreeSet<NodeId>> {
    let mut users: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    for (id, n) in g.iter().take(forward_len) {
        for v in &n.inputs {
            users.entry(v.node).or_default().push(id);
        }
    }
    let mut out = Vec::new();
    for (id, n) in g.iter().take(forward_len) {
        let Op::Softmax { .. } = n.op else { continue };
        if n.outputs[0].rank() < 3 {
            continue;
        }
        let mut grp = BTreeSet::from([id]);
        // Back to the score matmul through elementwise ops (scale, mask add, causal mask).
        let mut cur = n.inputs[0].node;
        loop {
            let c = g.node(cur);
            if let Op::MatMul(_) = c.op {
                grp.insert(cur);
                break;
            }
            if !(c.op.is_elementwise() || matches!(c.op, Op::CausalMask { .. })) {
                break;
            }
            grp.insert(cur);
            // Follow the operand of the score's shape (the mask broadcasts).
            match c.inputs.iter().find(|v| {
                g.value_type(**v).map(|t| t.shape.clone()) == Some(n.outputs[0].shape.clone())
            }) {
                Some(v) => cur = v.node,
                None => break,
            }
        }
        // Forward through the dropout on the probabilities.
        for &u in users.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
            if matches!(g.node(u).op, Op::Dropout { .. }) {
                grp.insert(u);
            }
        }
        out.push(grp);
    }
    out
}
