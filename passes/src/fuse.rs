//! fuse: groups the remaining elementwise and reduction chains into `fused` nodes whose
//! bodies are module-level functions, by the rules XLA and Inductor use: a producer joins its
//! consumer's kernel only when nothing else reads it (vertical fusion without duplicating
//! work); reductions fuse with their elementwise prologue and epilogue; small contractions
//! on reduced tensors (the 1×1 convs of a squeeze-and-excitation gate) may ride along; a
//! group holds at most `max_nodes` ops.

use crate::pass::{Pass, PassContext, PassFailure};
use crate::rebuild::Rebuilder;
use oar_ir::op::Op;
use oar_ir::{Graph, NodeId, ValueRef};
use std::collections::BTreeMap;

/// The fuse pass.
pub struct Fuse {
    pub max_nodes: usize,
    /// Largest output (elements) of a contraction that may join a fused group.
    pub small_contraction: u64,
}

impl Default for Fuse {
    fn default() -> Self {
        Fuse {
            max_nodes: 16,
            small_contraction: 4096,
        }
    }
}

impl Fuse {
    fn fusible(&self, g: &Graph, id: NodeId, known: &[bool], b: &BTreeMap<String, u64>) -> bool {
        let n = g.node(id);
        // Computations on weights alone (folded batch norms) run once at load time.
        if known[id.index()] {
            return false;
        }
        match &n.op {
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::CausalMask { .. } => {
                true
            }
            Op::Reduce(_) | Op::GlobalPool(_) | Op::Softmax { .. } | Op::LogSoftmax { .. } => true,
            Op::Conv2d(_) | Op::FusedConv2d { .. } | Op::MatMul(_) | Op::FusedMatMul { .. } => {
                n.outputs[0].shape.numel().eval(b, 1) <= self.small_contraction
            }
            Op::Input
            | Op::Param(_)
            | Op::Constant(_)
            | Op::Recv { .. }
            | Op::Dropout { .. }
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Pool(_)
            | Op::Resize(_)
            | Op::Nms(_)
            | Op::DeformConv2d(_)
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
            | Op::BroadcastTo { .. }
            | Op::Gather { .. }
            | Op::GatherElements { .. }
            | Op::Embedding
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::Fused { .. }
            | Op::Grad(_)
            | Op::Send { .. } => false,
        }
    }

    /// Group id per node (None for unfused nodes), groups in creation order.
    fn groups(
        &self,
        g: &Graph,
        b: &BTreeMap<String, u64>,
    ) -> (Vec<Option<usize>>, Vec<Vec<NodeId>>) {
        let known = oar_ir::analysis::weight_only(g);
        let mut users = vec![0usize; g.len()];
        for n in g.nodes() {
            for v in &n.inputs {
                users[v.node.index()] += 1;
            }
        }
        for v in g.outputs() {
            users[v.node.index()] += 1;
        }
        let mut group_of: Vec<Option<usize>> = vec![None; g.len()];
        let mut groups: Vec<Vec<NodeId>> = Vec::new();
        for (id, n) in g.iter() {
            if !self.fusible(g, id, &known, b) || n.outputs.len() != 1 {
                continue;
            }
            // Join the group of a fusible producer whose only reader is this node.
            let join = n.inputs.iter().find_map(|v| {
                let p = v.node;
                let gid = group_of[p.index()]?;
                (users[p.index()] == 1
                    && groups[gid].len() < self.max_nodes
                    && *groups[gid].last()? == p)
                    .then_some(gid)
            });
            match join {
                Some(gid) => {
                    groups[gid].push(id);
                    group_of[id.index()] = Some(gid);
                }
                None => {
                    groups.push(vec![id]);
                    group_of[id.index()] = Some(groups.len() - 1);
                }
            }
        }
        (group_of, groups)
    }
}

/// A function graph for a group: its external inputs become the function's inputs.
fn function_for(
    g: &Graph,
    name: &str,
    members: &[NodeId],
) -> Result<(Graph, Vec<ValueRef>), PassFailure> {
    let inside: std::collections::BTreeSet<NodeId> = members.iter().copied().collect();
    let mut f = Graph::new(name);
    let mut ext: Vec<ValueRef> = Vec::new();
    let mut map: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    for &m in members {
        for v in &g.node(m).inputs {
            if !inside.contains(&v.node) && !map.contains_key(v) {
                let t = g
                    .value_type(*v)
                    .cloned()
                    .ok_or(PassFailure::MissingOperandType)?;
                let fv = f.add_input(format!("in{}", ext.len()), t);
                map.insert(*v, fv);
                ext.push(*v);
            }
        }
    }
    for &m in members {
        let n = g.node(m);
        let ins = n.inputs.iter().map(|v| map[v]).collect();
        let id = f.add_node_typed(n.op.clone(), ins, n.outputs.clone(), None)?;
        map.insert(ValueRef::new(m, 0), ValueRef::new(id, 0));
    }
    let tail = *members.last().ok_or(PassFailure::EmptyGroup)?;
    f.set_outputs(vec![map[&ValueRef::new(tail, 0)]]);
    Ok((f, ext))
}

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }
    fn description(&self) -> &'static str {
        "groups elementwise and reduction chains into fused kernels with IR bodies"
    }
    fn run(&self, g: Graph, cx: &PassContext) -> Result<(Graph, Vec<String>), PassFailure> {
        let (group_of, groups) = self.groups(&g, &cx.bindings);
        let fused: Vec<&Vec<NodeId>> = groups.iter().filter(|m| m.len() >= 2).collect();
        let tails: BTreeMap<NodeId, usize> = fused
            .iter()
            .enumerate()
            .map(|(k, m)| (*m.last().unwrap_or(&m[0]), k))
            .collect();
        let mut r = Rebuilder::new(&g);
        let mut counter = g.functions.len();
        let mut sizes = Vec::new();
        for (id, _) in g.iter() {
            if r.is_mapped(id) {
                continue;
            }
            let in_fused_group = group_of[id.index()].is_some_and(|gid| groups[gid].len() >= 2);
            if let Some(&k) = tails.get(&id) {
                let members = fused[k];
                let name = loop {
                    let n = format!("fused{counter}");
                    counter += 1;
                    if !g.functions.contains_key(&n) {
                        break n;
                    }
                };
                let (f, ext) = function_for(&g, &name, members)?;
                r.new.functions.insert(name.clone(), f);
                let ins = ext.iter().map(|v| r.value(*v)).collect();
                let node = r.add(Op::Fused { func: name }, ins, Some(&g.node(id).name))?;
                r.alias(id, vec![ValueRef::new(node, 0)]);
                sizes.push(members.len());
            } else if !in_fused_group {
                r.copy(id)?;
            }
        }
        let total: usize = sizes.iter().sum();
        let notes = vec![format!(
            "{} fused kernels covering {} ops",
            sizes.len(),
            total
        )];
        Ok((r.finish(), notes))
    }
}
