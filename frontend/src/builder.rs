//! `ModelBuilder`: owns the graph under construction, hands out `Tensor` handles, names
//! parameters hierarchically, and records the first misuse with the user's source line.

use crate::tensor::Tensor;
use oar_ir::dist::{DeviceRef, OpDist, ProcessMesh};
use oar_ir::op::{Init, Literal, Op, ParamAttrs};
use oar_ir::{DType, Dim, Graph, NodeError, NodeId, TensorType, ValueRef};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;

/// A misuse of the DSL, located at the user's call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BuildError {
    /// `file:line:column` of the user's call.
    pub location: String,
    /// The op or builder method that failed.
    pub op: String,
    pub message: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.op, self.message)
    }
}

pub(crate) struct State {
    pub(crate) graph: Graph,
    scope: Vec<String>,
    stage: Option<u32>,
    device: Option<DeviceRef>,
    params: HashSet<String>,
    pub(crate) error: Option<BuildError>,
}

/// Builds one graph. Cheap to clone: clones share the graph.
#[derive(Clone)]
pub struct ModelBuilder {
    pub(crate) state: Rc<RefCell<State>>,
}

fn location(loc: &Location) -> String {
    format!("{}:{}:{}", loc.file(), loc.line(), loc.column())
}

impl ModelBuilder {
    /// A builder for a graph called `name`.
    pub fn new(name: &str) -> ModelBuilder {
        ModelBuilder {
            state: Rc::new(RefCell::new(State {
                graph: Graph::new(name),
                scope: Vec::new(),
                stage: None,
                device: None,
                params: HashSet::new(),
                error: None,
            })),
        }
    }

    /// Records a misuse (the first one wins) and returns a poisoned tensor.
    #[track_caller]
    pub(crate) fn fail(&self, op: &str, message: String) -> Tensor {
        let mut st = self.state.borrow_mut();
        if st.error.is_none() {
            st.error = Some(BuildError {
                location: location(Location::caller()),
                op: op.to_string(),
                message,
            });
        }
        Tensor::poisoned(self.clone())
    }

    /// The first error so far, if any.
    pub fn error(&self) -> Option<BuildError> {
        self.state.borrow().error.clone()
    }

    /// Adds a node — with a declared type for sources, inferred otherwise — and tags it
    /// with the current stage and device scopes.
    fn add(
        &self,
        op: Op,
        inputs: Vec<ValueRef>,
        declared: Option<TensorType>,
        name: Option<String>,
    ) -> Result<NodeId, NodeError> {
        let mut st = self.state.borrow_mut();
        let (stage, device) = (st.stage, st.device);
        let id = match declared {
            Some(t) => st.graph.add_node_typed(op, inputs, vec![t], name)?,
            None => st.graph.add_node(op, inputs, name)?,
        };
        let node = st.graph.node_mut(id);
        if stage.is_some() {
            node.dist = Some(OpDist {
                stage,
                ..Default::default()
            });
        }
        node.device = device;
        Ok(id)
    }

    /// A source node of one declared type, as a tensor.
    #[track_caller]
    fn source(&self, what: &str, op: Op, ty: TensorType, name: Option<String>) -> Tensor {
        match self.add(op, vec![], Some(ty), name) {
            Ok(id) => Tensor::new(self.clone(), id.into()),
            Err(e) => self.fail(what, e.detail().to_string()),
        }
    }

    /// Adds `op` on `inputs` with inferred types; the first output as a tensor.
    #[track_caller]
    pub(crate) fn apply(&self, op: Op, inputs: &[&Tensor]) -> Tensor {
        self.apply_multi(op, inputs)
            .into_iter()
            .next()
            .unwrap_or_else(|| Tensor::poisoned(self.clone()))
    }

    /// Adds `op` and returns every output.
    #[track_caller]
    pub(crate) fn apply_multi(&self, op: Op, inputs: &[&Tensor]) -> Vec<Tensor> {
        let Some(values) = inputs
            .iter()
            .map(|t| t.value)
            .collect::<Option<Vec<ValueRef>>>()
        else {
            return vec![Tensor::poisoned(self.clone())];
        };
        let name = op.name();
        match self.add(op, values, None, None) {
            Ok(id) => {
                let n = self.state.borrow().graph.node(id).outputs.len() as u32;
                (0..n)
                    .map(|p| Tensor::new(self.clone(), ValueRef::new(id, p)))
                    .collect()
            }
            Err(e) => vec![self.fail(name, e.detail().to_string())],
        }
    }

    /// A graph input of the given type, e.g. `b.input("x", "f32[N,3,224,224]")`.
    #[track_caller]
    pub fn input(&self, name: &str, ty: &str) -> Tensor {
        match ty.parse::<TensorType>() {
            Ok(t) => {
                let v = self.state.borrow_mut().graph.add_input(name, t);
                Tensor::new(self.clone(), v)
            }
            Err(e) => self.fail("input", e),
        }
    }

    /// The current parameter-name prefix joined with `local`.
    fn qualified(&self, local: &str) -> String {
        let st = self.state.borrow();
        st.scope
            .iter()
            .map(String::as_str)
            .chain([local])
            .collect::<Vec<_>>()
            .join(".")
    }

    /// A parameter named `<scope>.<local>` with an initializer.
    #[track_caller]
    pub fn param(&self, local: &str, shape: &[u64], init: Init) -> Tensor {
        let name = self.qualified(local);
        if !self.state.borrow_mut().params.insert(name.clone()) {
            return self.fail("param", format!("parameter `{name}` is defined twice"));
        }
        // The node reads as its parameter name in printed IR when that name is usable. Auto
        // names are numeric, so a non-numeric parameter name (unique by the check above)
        // cannot collide with another node.
        let usable =
            oar_ir::verify::is_value_name(&name) && !name.chars().all(|c| c.is_ascii_digit());
        let node_name = usable.then(|| name.clone());
        let op = Op::Param(ParamAttrs {
            name,
            init: Some(init),
        });
        self.source("param", op, TensorType::f32(shape), node_name)
    }

    /// A constant tensor of f32 values.
    #[track_caller]
    pub fn constant(&self, shape: &[u64], values: Vec<f64>) -> Tensor {
        self.source(
            "constant",
            Op::Constant(Literal::Floats(values)),
            TensorType::f32(shape),
            None,
        )
    }

    /// A constant tensor of i64 values (indices, shapes).
    #[track_caller]
    pub fn constant_i64(&self, shape: &[u64], values: Vec<i64>) -> Tensor {
        let ty = TensorType::new(DType::I64, shape.iter().map(|&d| Dim::Static(d)).collect());
        self.source("constant", Op::Constant(Literal::Ints(values)), ty, None)
    }

    /// A scalar f32 constant.
    #[track_caller]
    pub fn scalar(&self, v: f64) -> Tensor {
        self.constant(&[], vec![v])
    }

    /// Runs `f` with `name` appended to the parameter-name prefix (`blocks.3`).
    pub fn scope<R>(&self, name: impl fmt::Display, f: impl FnOnce() -> R) -> R {
        self.state.borrow_mut().scope.push(name.to_string());
        let r = f();
        self.state.borrow_mut().scope.pop();
        r
    }

    /// Runs `f` with every node it creates assigned to pipeline stage `k`.
    pub fn stage<R>(&self, k: u32, f: impl FnOnce() -> R) -> R {
        let old = self.state.borrow_mut().stage.replace(k);
        let r = f();
        self.state.borrow_mut().stage = old;
        r
    }

    /// Runs `f` with every node it creates placed on a device kind.
    pub fn on_device<R>(&self, d: DeviceRef, f: impl FnOnce() -> R) -> R {
        let old = self.state.borrow_mut().device.replace(d);
        let r = f();
        self.state.borrow_mut().device = old;
        r
    }

    /// Declares a mesh for sharding hints and collectives.
    #[track_caller]
    pub fn mesh(&self, name: &str, mesh: ProcessMesh) {
        if let Err(e) = mesh.validate() {
            self.fail("mesh", format!("mesh @{name}: {e}"));
            return;
        }
        self.state
            .borrow_mut()
            .graph
            .meshes
            .insert(name.to_string(), mesh);
    }

    /// A symbolic dim, for reshape targets.
    pub fn sym(name: &str) -> Dim {
        Dim::sym(name)
    }

    /// Finishes the graph with these outputs: canonical order, verified.
    pub fn finish(self, outputs: &[&Tensor]) -> Result<Graph, BuildError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let mut st = self.state.borrow_mut();
        let outs: Vec<ValueRef> = outputs.iter().filter_map(|t| t.value).collect();
        st.graph.set_outputs(outs);
        st.graph.canonicalize_order();
        oar_ir::verify(&st.graph).map_err(|e| BuildError {
            location: "finish".into(),
            op: "verify".into(),
            message: e.to_string(),
        })?;
        Ok(st.graph.clone())
    }

    /// The dtype and shape of a tensor.
    pub fn type_of(&self, t: &Tensor) -> Option<TensorType> {
        t.value
            .and_then(|v| self.state.borrow().graph.value_type(v).cloned())
    }

    /// Number of nodes so far.
    pub fn len(&self) -> usize {
        self.state.borrow().graph.len()
    }

    /// Whether nothing has been added yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
