//! Rebuilding a graph node by node: passes copy, replace or drop nodes and the rebuilder
//! keeps the value mapping, the module's meshes and functions, and unique names.

use oar_ir::op::Op;
use oar_ir::{Graph, Node, NodeError, NodeId, TensorType, ValueRef};
use std::collections::HashSet;

/// A new graph under construction from an old one.
pub struct Rebuilder<'a> {
    pub old: &'a Graph,
    pub new: Graph,
    /// For each old node, its outputs in the new graph (empty until mapped).
    map: Vec<Vec<ValueRef>>,
    names: HashSet<String>,
}

impl<'a> Rebuilder<'a> {
    /// Starts with the old graph's inputs, meshes, functions, mode and state names.
    pub fn new(old: &'a Graph) -> Rebuilder<'a> {
        let new = old.empty_like();
        let mut r = Rebuilder {
            old,
            new,
            map: vec![Vec::new(); old.len()],
            names: HashSet::new(),
        };
        for &i in old.inputs() {
            let n = old.node(i);
            let v = r.new.add_input(n.name.clone(), n.outputs[0].clone());
            r.copy_annotations(i, v.node);
            r.names.insert(n.name.clone());
            r.map[i.index()] = vec![v];
        }
        r
    }

    /// The new value for an old one.
    pub fn value(&self, v: ValueRef) -> ValueRef {
        self.map[v.node.index()][v.port as usize]
    }

    /// Whether an old node has been mapped.
    pub fn is_mapped(&self, id: NodeId) -> bool {
        !self.map[id.index()].is_empty()
    }

    /// Maps an old node's outputs to existing new values (the node is replaced).
    pub fn alias(&mut self, old: NodeId, values: Vec<ValueRef>) {
        self.map[old.index()] = values;
    }

    /// A name for a new node: the preferred one if free and not numeric, else automatic.
    fn pick_name(&mut self, preferred: &str) -> Option<String> {
        let numeric = preferred.chars().all(|c| c.is_ascii_digit());
        if !numeric && !self.names.contains(preferred) {
            self.names.insert(preferred.to_string());
            Some(preferred.to_string())
        } else {
            None
        }
    }

    fn copy_annotations(&mut self, old: NodeId, new: NodeId) {
        let (dist, device) = (self.old.node(old).dist.clone(), self.old.node(old).device);
        let n = self.new.node_mut(new);
        n.dist = dist;
        n.device = device;
    }

    /// Copies an old node with its inputs remapped.
    pub fn copy(&mut self, id: NodeId) -> Result<NodeId, NodeError> {
        let n: &Node = self.old.node(id);
        let inputs = n.inputs.iter().map(|v| self.value(*v)).collect();
        let name = self.pick_name(&n.name.clone());
        let new = self
            .new
            .add_node_typed(n.op.clone(), inputs, n.outputs.clone(), name)?;
        self.copy_annotations(id, new);
        let outs = (0..self.new.node(new).outputs.len() as u32)
            .map(|p| ValueRef::new(new, p))
            .collect();
        self.map[id.index()] = outs;
        Ok(new)
    }

    /// Adds a new node (types inferred), named after `like` when possible.
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        like: Option<&str>,
    ) -> Result<NodeId, NodeError> {
        let name = like.and_then(|l| self.pick_name(l));
        self.new.add_node(op, inputs, name)
    }

    /// Adds a new source node of a declared type.
    pub fn add_source(
        &mut self,
        op: Op,
        ty: TensorType,
        like: Option<&str>,
    ) -> Result<NodeId, NodeError> {
        let name = like.and_then(|l| self.pick_name(l));
        self.new.add_node_typed(op, vec![], vec![ty], name)
    }

    /// Finishes with the old graph's outputs remapped.
    pub fn finish(mut self) -> Graph {
        let outs = self.old.outputs().iter().map(|v| self.value(*v)).collect();
        self.new.set_outputs(outs);
        self.new
    }
}
