//! Liveness estimate: how many bytes of activations one device needs, from a best-fit
//! buffer reuse over the graph. A report only: the runtime plans the storage it actually
//! uses per compiled program (`oar_runtime::program::Program::plan_storage`, over kernel
//! steps, after lowering), so the two figures can differ. Registered as the `memory` pass.
//!
//! Every value that is not a view gets a buffer; a view (reshape, squeeze, unsqueeze,
//! flatten) shares its operand's. A value lives from its definition to its last use (graph
//! outputs to the end). Buffers are assigned best-fit from the buffers freed so far, else a
//! new one is made. Parameters and constants live in a separate weights region.

use crate::pass::{Pass, PassContext, PassFailure};
use oar_ir::{Graph, ValueRef};
use std::collections::BTreeMap;

/// Where each value would live and what it all would take.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LivenessEstimate {
    /// Buffer index for each value (views share their source's); weights have none.
    pub buffer_of: BTreeMap<ValueRef, usize>,
    /// Size of each buffer, bytes.
    pub buffers: Vec<u64>,
    /// The most bytes of activations live at any one time.
    pub peak_live_bytes: u64,
    /// Sum of buffer sizes: what the arena needs.
    pub arena_bytes: u64,
    /// Sum of all activation sizes: what no reuse would need.
    pub no_reuse_bytes: u64,
    /// Parameters and constants.
    pub weight_bytes: u64,
}

/// Estimates buffers for `g` with symbols bound by `b` (unbound count as 1).
pub fn estimate_liveness(g: &Graph, b: &BTreeMap<String, u64>) -> LivenessEstimate {
    let n = g.len();
    // The value whose buffer each value occupies (itself, or a view's source, transitively).
    let mut root: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    let mut last_use: BTreeMap<ValueRef, usize> = BTreeMap::new();
    let mut plan = LivenessEstimate::default();
    for (id, node) in g.iter() {
        for (p, t) in node.outputs.iter().enumerate() {
            let v = ValueRef::new(id, p as u32);
            if node.op.is_weight() {
                plan.weight_bytes += t.bytes(b, 1);
                continue;
            }
            let r = if node.op.is_view() {
                root.get(&node.inputs[0]).copied().unwrap_or(v)
            } else {
                v
            };
            root.insert(v, r);
            last_use.insert(r, id.index());
        }
        for input in &node.inputs {
            if let Some(&r) = root.get(input) {
                last_use.insert(r, id.index().max(last_use.get(&r).copied().unwrap_or(0)));
            }
        }
    }
    for v in g.outputs() {
        if let Some(&r) = root.get(v) {
            last_use.insert(r, n);
        }
    }
    // Free buffers by size, for best fit; `dying[i]` are the roots whose last use is node i.
    let mut free: Vec<usize> = Vec::new();
    let mut dying: BTreeMap<usize, Vec<ValueRef>> = BTreeMap::new();
    for (&r, &t) in &last_use {
        dying.entry(t).or_default().push(r);
    }
    let mut live = 0u64;
    for (id, node) in g.iter() {
        for (p, t) in node.outputs.iter().enumerate() {
            let v = ValueRef::new(id, p as u32);
            let Some(&r) = root.get(&v) else { continue };
            if r != v {
                if let Some(&buf) = plan.buffer_of.get(&r) {
                    plan.buffer_of.insert(v, buf);
                }
                continue;
            }
            let size = t.bytes(b, 1);
            plan.no_reuse_bytes += size;
            live += size;
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &buf)| plan.buffers[buf] >= size)
                .min_by_key(|(_, &buf)| plan.buffers[buf])
                .map(|(i, _)| i);
            let buf = match fit {
                Some(i) => free.swap_remove(i),
                None => {
                    plan.buffers.push(size);
                    plan.buffers.len() - 1
                }
            };
            plan.buffer_of.insert(v, buf);
        }
        plan.peak_live_bytes = plan.peak_live_bytes.max(live);
        for r in dying.remove(&id.index()).unwrap_or_default() {
            if let Some(&buf) = plan.buffer_of.get(&r) {
                free.push(buf);
                live -= g.value_type(r).map(|t| t.bytes(b, 1)).unwrap_or(0);
            }
        }
    }
    plan.arena_bytes = plan.buffers.iter().sum();
    plan
}

/// The `memory` pass: an analysis that reports the liveness estimate and leaves the graph
/// unchanged.
pub struct LivenessPass;

impl Pass for LivenessPass {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn description(&self) -> &'static str {
        "liveness estimate of buffer reuse; reports peak and arena bytes"
    }
    fn run(&self, g: Graph, cx: &PassContext) -> Result<(Graph, Vec<String>), PassFailure> {
        let p = estimate_liveness(&g, &cx.bindings);
        let mb = |x: u64| x as f64 / 1e6;
        let notes = vec![format!(
            "peak live activations {:.2} MB; arena {:.2} MB in {} buffers (without reuse {:.2} MB); weights {:.2} MB",
            mb(p.peak_live_bytes),
            mb(p.arena_bytes),
            p.buffers.len(),
            mb(p.no_reuse_bytes),
            mb(p.weight_bytes)
        )];
        Ok((g, notes))
    }
}
