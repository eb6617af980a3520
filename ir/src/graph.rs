//! The graph: an arena of nodes in topological order, with explicit inputs, parameters,
//! constants and outputs, and the meshes its distribution attributes refer to.

use crate::dist::{DeviceRef, OpDist, ProcessMesh};
use crate::mode::ExecMode;
use crate::op::{infer_types, InferCtx, Op};
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A node's index in its graph. Its `Display` (`%7`) is the node's default text name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One output of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueRef {
    pub node: NodeId,
    pub port: u32,
}

impl ValueRef {
    /// Output `port` of `node`.
    pub fn new(node: NodeId, port: u32) -> ValueRef {
        ValueRef { node, port }
    }
}

impl From<NodeId> for ValueRef {
    fn from(node: NodeId) -> ValueRef {
        ValueRef { node, port: 0 }
    }
}

impl fmt::Display for ValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 0 {
            write!(f, "{}", self.node)
        } else {
            write!(f, "{}#{}", self.node, self.port)
        }
    }
}

/// One operation with its operands, result types and annotations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueRef>,
    pub outputs: Vec<TensorType>,
    /// The text-format name (without `%`), unique in the graph.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist: Option<OpDist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRef>,
}

/// A failure to add a node: names the node and op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("%{node} ({op}): {message}")]
pub struct NodeError {
    pub node: String,
    pub op: &'static str,
    pub message: String,
}

impl NodeError {
    /// The message without a leading "`op`: " (callers that name the op themselves use this).
    pub fn detail(&self) -> &str {
        let prefix = format!("`{}`: ", self.op);
        self.message.strip_prefix(&prefix).unwrap_or(&self.message)
    }
}

/// A dataflow graph. Nodes are kept in topological order: a node's inputs come from nodes
/// added before it. Graph inputs come first in canonical graphs (see [`Graph::canonicalize_order`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    /// Meshes referred to by `#dist` attributes and collectives, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meshes: BTreeMap<String, ProcessMesh>,
    /// Bodies of `fused` nodes, by name (graphs without meshes or functions of their own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, Graph>,
    /// Inference or training (see [`crate::mode`]).
    #[serde(default, skip_serializing_if = "is_inference")]
    pub mode: ExecMode,
    /// State updates: the last `state.len()` outputs are the new values of these
    /// parameters, in order (a training step's new batch_norm running statistics). Keeping
    /// them as outputs means every pass that maps outputs keeps them alive and remapped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    nodes: Vec<Node>,
    inputs: Vec<NodeId>,
    outputs: Vec<ValueRef>,
}

fn is_inference(m: &ExecMode) -> bool {
    *m == ExecMode::Inference
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// What shape inference needs from the module: meshes and functions.
    pub fn infer_ctx(&self) -> InferCtx<'_> {
        InferCtx {
            meshes: Some(&self.meshes),
            functions: Some(&self.functions),
        }
    }

    /// All nodes in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Nodes with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId(i as u32), n))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this id. Ids come from this graph, so a miss is a caller bug.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Mutable access to a node's annotations and name.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// Graph inputs, in signature order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Graph outputs.
    pub fn outputs(&self) -> &[ValueRef] {
        &self.outputs
    }

    /// Sets the graph outputs (state updates, if any, are the last `state.len()`).
    pub fn set_outputs(&mut self, outputs: Vec<ValueRef>) {
        self.outputs = outputs;
    }

    /// The outputs the model returns: all outputs but the state updates.
    pub fn model_outputs(&self) -> &[ValueRef] {
        let n = self.outputs.len().saturating_sub(self.state.len());
        &self.outputs[..n]
    }

    /// State updates: (parameter name, its new value).
    pub fn state_updates(&self) -> impl Iterator<Item = (&str, ValueRef)> {
        let n = self.model_outputs().len();
        self.state
            .iter()
            .map(String::as_str)
            .zip(self.outputs[n..].iter().copied())
    }

    /// Records that `value` is the new value of parameter `param` after a run.
    pub fn add_state_update(&mut self, param: impl Into<String>, value: ValueRef) {
        self.outputs.push(value);
        self.state.push(param.into());
    }

    /// An empty graph with this one's name, meshes, functions, mode and state names: the
    /// start of a rebuild that maps outputs one to one.
    pub fn empty_like(&self) -> Graph {
        Graph {
            name: self.name.clone(),
            meshes: self.meshes.clone(),
            functions: self.functions.clone(),
            mode: self.mode,
            state: self.state.clone(),
            ..Default::default()
        }
    }

    /// The type of a value, if it exists.
    pub fn value_type(&self, v: ValueRef) -> Option<&TensorType> {
        self.nodes
            .get(v.node.index())
            .and_then(|n| n.outputs.get(v.port as usize))
    }

    /// Finds a node by its text name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| NodeId(i as u32))
    }

    fn next_id(&self) -> NodeId {
        NodeId(self.nodes.len() as u32)
    }

    fn fresh_name(&self, name: Option<String>) -> String {
        name.unwrap_or_else(|| self.next_id().0.to_string())
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueRef {
        let id = self.next_id();
        self.nodes.push(Node {
            op: Op::Input,
            inputs: vec![],
            outputs: vec![ty],
            name: name.into(),
            dist: None,
            device: None,
        });
        self.inputs.push(id);
        id.into()
    }

    /// Adds a node with declared output types: sources take them as given, other ops must
    /// infer exactly these types.
    pub fn add_node_typed(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        declared: Vec<TensorType>,
        name: Option<String>,
    ) -> Result<NodeId, NodeError> {
        let name = self.fresh_name(name);
        let fail = |message: String| NodeError {
            node: name.clone(),
            op: op.name(),
            message,
        };
        if matches!(op, Op::Input) {
            return Err(fail("graph inputs are added with add_input".into()));
        }
        let mut in_types = Vec::with_capacity(inputs.len());
        for v in &inputs {
            let t = self
                .value_type(*v)
                .ok_or_else(|| fail(format!("operand {v} does not exist")))?;
            in_types.push(t.clone());
        }
        let ctx = self.infer_ctx();
        let inferred = infer_types(&op, &in_types, &declared, &ctx).map_err(|e| fail(e.0))?;
        if !op.is_source() && inferred != declared {
            return Err(fail(format!(
                "declared type {} but the op produces {}",
                types_text(&declared),
                types_text(&inferred)
            )));
        }
        Ok(self.push(op, inputs, inferred, name))
    }

    /// Adds an op whose output types are inferred.
    pub fn add_node(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        name: Option<String>,
    ) -> Result<NodeId, NodeError> {
        let name = self.fresh_name(name);
        let in_types: Vec<TensorType> = inputs
            .iter()
            .map(|v| self.value_type(*v).cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| NodeError {
                node: name.clone(),
                op: op.name(),
                message: "an operand does not exist".into(),
            })?;
        let ctx = self.infer_ctx();
        let outs = infer_types(&op, &in_types, &[], &ctx).map_err(|e| NodeError {
            node: name.clone(),
            op: op.name(),
            message: e.0,
        })?;
        self.add_node_typed(op, inputs, outs, Some(name))
    }

    fn push(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        outputs: Vec<TensorType>,
        name: String,
    ) -> NodeId {
        let id = self.next_id();
        self.nodes.push(Node {
            op,
            inputs,
            outputs,
            name,
            dist: None,
            device: None,
        });
        id
    }

    /// Reorders nodes so graph inputs come first (others keep their relative order), the
    /// canonical order the text format prints.
    pub fn canonicalize_order(&mut self) {
        let n = self.nodes.len();
        let is_input: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| matches!(n.op, Op::Input))
            .collect();
        let order: Vec<usize> = (0..n)
            .filter(|&i| is_input[i])
            .chain((0..n).filter(|&i| !is_input[i]))
            .collect();
        let mut new_of = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            new_of[old] = new as u32;
        }
        let remap = |v: ValueRef| ValueRef::new(NodeId(new_of[v.node.index()]), v.port);
        let old = std::mem::take(&mut self.nodes);
        let mut slots: Vec<Option<Node>> = old.into_iter().map(Some).collect();
        for &i in &order {
            let mut node = slots[i]
                .take()
                .expect("each index appears once in the order");
            node.inputs = node.inputs.into_iter().map(remap).collect();
            self.nodes.push(node);
        }
        self.inputs = self
            .inputs
            .iter()
            .map(|&i| NodeId(new_of[i.index()]))
            .collect();
        self.outputs = self.outputs.iter().map(|&v| remap(v)).collect();
    }
}

/// `f32[2]` or `(f32[2], f32[3])`.
pub fn types_text(ts: &[TensorType]) -> String {
    if ts.len() == 1 {
        ts[0].to_string()
    } else {
        let parts: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
        format!("({})", parts.join(", "))
    }
}
