//! The peak memory of one compiled f32 training step on one CPU device, predicted from the
//! step graph alone: what `oar plan` reports for a one-device CPU cluster.
//!
//! The CPU executor allocates every buffer of its program when it is built and keeps them
//! all for its lifetime, so the step's peak is the sum of what it holds, plus the outputs
//! read back after a run. This model derives those from the graph, without lowering it or
//! reading the compiled program's storage plan (`oar_runtime::program::Program::
//! plan_storage`), so the test that compares the two (`codegen/tests/step_memory.rs`)
//! can fail:
//!
//! - the state: parameters, running statistics and optimizer slots (the graph's `param`s),
//!   and the graph inputs (the batch, `lr`, `step`), each its own buffer;
//! - the step's outputs: the loss and logits, and every updated state tensor, which keep
//!   their own memory until the update is committed; a copy of the loss and logits is read
//!   back to the host each step;
//! - training dropout's masks, one f32 tensor per dropout stream (a backward dropout
//!   replays its forward's mask);
//! - temporaries: one buffer per value, except views (reshape, squeeze, unsqueeze,
//!   flatten: their operand's buffer) and elementwise ops computed inside their only
//!   reader's kernel (an elementwise reader of the same size: the backend's in-place
//!   fusion). A temporary lives from the kernel that writes it to the last that reads it;
//!   buffers whose lifetimes do not overlap share memory, assigned best-fit in graph order.
//!   Forward values read by the backward stay live across the loss: these are the
//!   activations kept for the backward;
//! - buffers the lowering adds per op ([`lowering_buffers`]): zero-padded copies of
//!   convolution inputs (kept, since their borders must stay zero), im2col matrices,
//!   transposed operands;
//! - each thread's GEMM packing scratch (a figure of the CPU's blocking, given).

use oar_ir::op::Op;
use oar_ir::{DType, ExecMode, Graph, NodeId, ValueRef};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod fusion;
mod lowering;
pub use lowering::lowering_buffers;

/// What the prediction needs beside the graph.
#[derive(Debug, Clone, Default)]
pub struct StepMemoryOptions {
    /// Names of the optimizer's slots (moments, accumulators) among the graph's
    /// parameters; the rest count as parameters.
    pub slots: BTreeSet<String>,
    /// Executor threads, each with its own GEMM scratch.
    pub threads: u64,
    /// Bytes of GEMM packing scratch per thread (the backend's blocking for the CPU).
    pub scratch_per_thread: u64,
}

/// The predicted peak, bytes, by what holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StepMemory {
    /// Trainable parameters and running statistics (graph parameters that are not slots).
    pub parameters: u64,
    /// Optimizer slots.
    pub optimizer_state: u64,
    /// The batch and the scalar inputs.
    pub inputs: u64,
    /// Constants and values computed from constants alone (loaded once).
    pub constants: u64,
    /// New values of the state, held until the step is committed.
    pub updated_state: u64,
    /// The loss, the logits and any loss parts: in the executor, and read back to the host.
    pub outputs: u64,
    /// Training dropout's masks.
    pub dropout_masks: u64,
    /// Zero-padded copies of convolution inputs (each keeps its own memory).
    pub padded_copies: u64,
    /// Shared temporaries first opened by a forward value: the activations kept for the
    /// backward (and the loss's chain).
    pub activations: u64,
    /// Shared temporaries first opened by the backward or the update: gradients,
    /// the logits' gradient, im2col and transposed copies.
    pub backward: u64,
    /// Per-thread GEMM scratch.
    pub scratch: u64,
}

impl StepMemory {
    /// The predicted peak.
    pub fn total(&self) -> u64 {
        self.parameters
            + self.optimizer_state
            + self.inputs
            + self.constants
            + self.updated_state
            + self.outputs
            + self.dropout_masks
            + self.padded_copies
            + self.activations
            + self.backward
            + self.scratch
    }

    /// `(label, bytes)` per part, for reports.
    pub fn parts(&self) -> [(&'static str, u64); 11] {
        [
            ("parameters and running statistics", self.parameters),
            ("optimizer state", self.optimizer_state),
            ("inputs (batch, lr, step)", self.inputs),
            ("constants", self.constants),
            ("updated state (until committed)", self.updated_state),
            ("loss and logits (and their host copy)", self.outputs),
            ("dropout masks", self.dropout_masks),
            ("padded convolution inputs", self.padded_copies),
            ("activations kept for the backward", self.activations),
            ("gradients and backward temporaries", self.backward),
            ("GEMM scratch (all threads)", self.scratch),
        ]
    }
}

/// Why the prediction cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum StepMemoryError {
    #[error("the step graph is not a training graph (mode=training): `{0}`")]
    NotTraining(String),
    #[error("`{node}` has the type {ty}: the prediction needs static shapes (bind the batch and sequence length first)")]
    Symbolic { node: String, ty: String },
    #[error(
        "`{node}` holds {dtype} values, which the CPU backend does not compile (f32, i64, bool)"
    )]
    Dtype { node: String, dtype: String },
}

/// A buffer the lowering of one node adds beside the node's own outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraBuffer {
    pub bytes: u64,
    /// Kept for the executor's lifetime (a zero-padded copy), else a temporary of the node.
    pub pinned: bool,
}

fn static_bytes(g: &Graph, id: NodeId, port: usize) -> Result<u64, StepMemoryError> {
    let node = g.node(id);
    let t = &node.outputs[port];
    let Some(dims) = t.shape.as_static() else {
        return Err(StepMemoryError::Symbolic {
            node: node.name.clone(),
            ty: t.to_string(),
        });
    };
    let elem = match t.dtype {
        DType::F32 | DType::I64 | DType::Bool => t.dtype.size_bytes(),
        other => {
            return Err(StepMemoryError::Dtype {
                node: node.name.clone(),
                dtype: other.name().to_string(),
            })
        }
    };
    Ok(dims.iter().product::<u64>() * elem)
}

/// Predicts the peak memory of the compiled step `g` (static shapes).
pub fn predict_step_memory(
    g: &Graph,
    opts: &StepMemoryOptions,
) -> Result<StepMemory, StepMemoryError> {
    if g.mode != ExecMode::Training {
        return Err(StepMemoryError::NotTraining(g.name.clone()));
    }
    let mut m = StepMemory {
        scratch: opts.threads.max(1) * opts.scratch_per_thread,
        ..Default::default()
    };
    let inline = fusion::in_place(g);
    let fixed = oar_ir::analysis::weight_only(g);
    let forward = forward_nodes(g);
    let pinned_outputs: BTreeSet<ValueRef> = g.outputs().iter().copied().collect();
    // The kernel that computes each node: its own, or its reader's when computed in place.
    let host = fusion::hosts(g, &inline);
    // Each value's buffer: the value itself, or a view's source (transitively).
    let mut root: HashMap<ValueRef, ValueRef> = HashMap::new();
    // Shared temporaries: (bytes, first step, last step, opened by the forward).
    let mut temps: BTreeMap<ValueRef, Temp> = BTreeMap::new();
    let mut extras: Vec<Temp> = Vec::new();
    let mut mask_streams: BTreeSet<(String, Vec<u64>)> = BTreeSet::new();
    for (id, node) in g.iter() {
        let v0 = ValueRef::new(id, 0);
        let step = id.index();
        // Inputs, parameters and constants each keep their own buffer.
        if let Op::Input = &node.op {
            m.inputs += static_bytes(g, id, 0)?;
            continue;
        }
        if let Op::Param(p) = &node.op {
            let b = static_bytes(g, id, 0)?;
            if opts.slots.contains(&p.name) {
                m.optimizer_state += b;
            } else {
                m.parameters += b;
            }
            continue;
        }
        if let Op::Constant(_) | Op::Shape = &node.op {
            m.constants += static_bytes(g, id, 0)?;
            continue;
        }
        if node.op.is_view() {
            let r = root.get(&node.inputs[0]).copied().unwrap_or(node.inputs[0]);
            root.insert(v0, r);
            continue;
        }
        // Uses: a node computed in place reads its operands in its host's kernel.
        let at = host[step];
        for v in &node.inputs {
            let r = root.get(v).copied().unwrap_or(*v);
            if let Some(t) = temps.get_mut(&r) {
                t.last = t.last.max(at);
            }
        }
        if inline[step] {
            continue;
        }
        if let Op::Dropout { mask_of, .. } = &node.op {
            let stream = mask_of.clone().unwrap_or_else(|| node.name.clone());
            let shape = node.outputs[0].shape.as_static().unwrap_or_default();
            if mask_streams.insert((stream, shape)) {
                m.dropout_masks += static_bytes(g, id, 0)?;
            }
        }
        for x in lowering_buffers(g, id) {
            if x.pinned {
                m.padded_copies += x.bytes;
            } else {
                extras.push(Temp {
                    bytes: x.bytes,
                    first: step,
                    last: step,
                    forward: forward[step],
                });
            }
        }
        for p in 0..node.outputs.len() {
            let v = ValueRef::new(id, p as u32);
            let bytes = static_bytes(g, id, p)?;
            if fixed[step] {
                // Computed once at load time from constants: never shared.
                m.constants += bytes;
                continue;
            }
            if pinned_outputs.contains(&v) {
                continue;
            }
            temps.insert(
                v,
                Temp {
                    bytes,
                    first: step,
                    last: step,
                    forward: forward[step],
                },
            );
        }
    }
    // Outputs keep their own buffer (a view of an input or parameter gets a copy).
    let model_outputs = g.model_outputs().len();
    let mut seen = BTreeSet::new();
    for (k, v) in g.outputs().iter().enumerate() {
        let bytes = static_bytes(g, v.node, v.port as usize)?;
        let r = root.get(v).copied().unwrap_or(*v);
        let fresh = seen.insert(r) || r != *v;
        match (k < model_outputs, fresh) {
            // The loss and logits are read back to the host after each run as well.
            (true, true) => m.outputs += 2 * bytes,
            (true, false) => m.outputs += bytes,
            (false, true) => m.updated_state += bytes,
            (false, false) => {}
        }
    }
    let all: Vec<Temp> = temps.into_values().chain(extras).collect();
    let (fwd, bwd) = best_fit(&all);
    m.activations = fwd;
    m.backward = bwd;
    Ok(m)
}

/// A shared temporary's size and lifetime (graph positions of its first and last kernel).
#[derive(Debug, Clone, Copy)]
struct Temp {
    bytes: u64,
    first: usize,
    last: usize,
    forward: bool,
}

/// Best-fit sharing in graph order: at each position the buffers first written there take
/// the smallest free slot that holds them (else the largest free one grows, else a new
/// slot), then those last read there free theirs. Returns the slots' bytes split by
/// whether a forward value opened the slot.
fn best_fit(temps: &[Temp]) -> (u64, u64) {
    let mut order: Vec<usize> = (0..temps.len()).collect();
    order.sort_by_key(|&i| (temps[i].first, i));
    let mut dying: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, t) in temps.iter().enumerate() {
        dying.entry(t.last).or_default().push(i);
    }
    // Slots: (bytes, opened by the forward).
    let mut slots: Vec<(u64, bool)> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut slot_of = vec![usize::MAX; temps.len()];
    let mut next = 0;
    let positions: BTreeSet<usize> = temps.iter().flat_map(|t| [t.first, t.last]).collect();
    for pos in positions {
        while next < order.len() && temps[order[next]].first == pos {
            let i = order[next];
            next += 1;
            let need = temps[i].bytes;
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &k)| slots[k].0 >= need)
                .min_by_key(|(_, &k)| slots[k].0)
                .or_else(|| free.iter().enumerate().max_by_key(|(_, &k)| slots[k].0))
                .map(|(p, _)| p);
            let k = match fit {
                Some(p) => free.swap_remove(p),
                None => {
                    slots.push((0, temps[i].forward));
                    slots.len() - 1
                }
            };
            slots[k].0 = slots[k].0.max(need);
            slot_of[i] = k;
        }
        for &i in dying.get(&pos).map_or(&[][..], Vec::as_slice) {
            if slot_of[i] != usize::MAX {
                free.push(slot_of[i]);
            }
        }
    }
    let fwd = slots.iter().filter(|s| s.1).map(|s| s.0).sum();
    let bwd = slots.iter().filter(|s| !s.1).map(|s| s.0).sum();
    (fwd, bwd)
}

/// Per node: whether the loss or the logits depend on it (the forward and the loss).
fn forward_nodes(g: &Graph) -> Vec<bool> {
    let mut fwd = vec![false; g.len()];
    for v in g.model_outputs() {
        fwd[v.node.index()] = true;
    }
    for (i, node) in g.nodes().iter().enumerate().rev() {
        if fwd[i] {
            for v in &node.inputs {
                fwd[v.node.index()] = true;
            }
        }
    }
    fwd
}
