//! A small builder over a graph under construction: the arithmetic, reductions, sources and
//! selects that losses and optimizer updates are written in. Every node it adds gets a fresh,
//! unique name under one prefix, so the appended training nodes read as a block in the text
//! format and never collide with the model's names.

use super::TrainError;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, Init, Literal, Op, ParamAttrs, ReduceOverAxes, UnaryOp};
use oar_ir::{DType, Graph, TensorType, ValueRef};
use std::collections::HashSet;

/// Appends nodes to a graph; see the module docs.
pub struct Emit<'g> {
    g: &'g mut Graph,
    prefix: String,
    taken: HashSet<String>,
    counter: usize,
}

impl<'g> Emit<'g> {
    /// Builds into `g`; node names start with `prefix`.
    pub fn new(g: &'g mut Graph, prefix: &str) -> Emit<'g> {
        let taken = g.nodes().iter().map(|n| n.name.clone()).collect();
        Emit {
            g,
            prefix: prefix.to_string(),
            taken,
            counter: 0,
        }
    }

    /// The graph so far.
    pub fn graph(&self) -> &Graph {
        self.g
    }

    /// Mutable access, for what the builder does not cover (state updates, outputs).
    pub fn graph_mut(&mut self) -> &mut Graph {
        self.g
    }

    /// The type of a value of the graph.
    pub fn ty(&self, v: ValueRef) -> Result<TensorType, TrainError> {
        self.g
            .value_type(v)
            .cloned()
            .ok_or_else(|| TrainError::Graph {
                node: v.to_string(),
                message: "the value does not exist in the graph".into(),
            })
    }

    fn fresh(&mut self, tag: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{}.{}.{}", self.prefix, tag, self.counter);
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    /// Adds a one-output op whose type is inferred.
    pub fn op(&mut self, op: Op, inputs: Vec<ValueRef>, tag: &str) -> Result<ValueRef, TrainError> {
        let name = self.fresh(tag);
        Ok(self.g.add_node(op, inputs, Some(name))?.into())
    }

    /// A constant of type `ty` filled with `value`.
    pub fn fill(&mut self, value: f64, ty: TensorType) -> Result<ValueRef, TrainError> {
        let n = ty
            .shape
            .numel()
            .as_static()
            .ok_or_else(|| TrainError::Graph {
                node: self.prefix.clone(),
                message: format!("a constant of the symbolic type {ty}"),
            })? as usize;
        let lit = if ty.dtype.is_float() {
            Literal::Floats(vec![value; n])
        } else {
            Literal::Ints(vec![value as i64; n])
        };
        let name = self.fresh("const");
        Ok(self
            .g
            .add_node_typed(Op::Constant(lit), vec![], vec![ty], Some(name))?
            .into())
    }

    /// A rank-0 f32 constant.
    pub fn scalar(&mut self, value: f64) -> Result<ValueRef, TrainError> {
        self.fill(value, TensorType::new(DType::F32, vec![]))
    }

    /// A parameter named `name` of type `ty`, initialised to the constant `init`.
    pub fn param(&mut self, name: &str, ty: TensorType, init: f64) -> Result<ValueRef, TrainError> {
        let op = Op::Param(ParamAttrs {
            name: name.to_string(),
            init: Some(Init::Constant(init)),
        });
        let node = self.fresh("state");
        Ok(self
            .g
            .add_node_typed(op, vec![], vec![ty], Some(node))?
            .into())
    }

    /// The graph input `name`, added with type `ty` if the graph has none of that name; an
    /// existing input of that name and type is reused, one of another type is an error.
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<ValueRef, TrainError> {
        let found = self
            .g
            .inputs()
            .iter()
            .copied()
            .find(|&id| self.g.node(id).name == name);
        if let Some(id) = found {
            let have = &self.g.node(id).outputs[0];
            if *have != ty {
                return Err(TrainError::InputType {
                    name: name.to_string(),
                    want: ty.to_string(),
                    found: have.to_string(),
                });
            }
            return Ok(id.into());
        }
        if !self.taken.insert(name.to_string()) {
            return Err(TrainError::Graph {
                node: name.to_string(),
                message: "a node of the model already has this name; rename it to add the input"
                    .into(),
            });
        }
        Ok(self.g.add_input(name, ty))
    }

    pub fn binary(
        &mut self,
        op: BinaryOp,
        a: ValueRef,
        b: ValueRef,
    ) -> Result<ValueRef, TrainError> {
        let tag = format!("{op:?}").to_lowercase();
        self.op(Op::Binary(op), vec![a, b], &tag)
    }

    pub fn add(&mut self, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn sub(&mut self, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
        self.binary(BinaryOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
        self.binary(BinaryOp::Mul, a, b)
    }

    pub fn div(&mut self, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
        self.binary(BinaryOp::Div, a, b)
    }

    pub fn max(&mut self, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
        self.binary(BinaryOp::Max, a, b)
    }

    /// `v * c` for a constant `c`.
    pub fn scale(&mut self, v: ValueRef, c: f64) -> Result<ValueRef, TrainError> {
        let s = self.scalar(c)?;
        self.mul(v, s)
    }

    /// `v + c` for a constant `c`.
    pub fn offset(&mut self, v: ValueRef, c: f64) -> Result<ValueRef, TrainError> {
        let s = self.scalar(c)?;
        self.add(v, s)
    }

    /// `c - v` for a constant `c`.
    pub fn rsub(&mut self, c: f64, v: ValueRef) -> Result<ValueRef, TrainError> {
        let s = self.scalar(c)?;
        self.sub(s, v)
    }

    pub fn unary(&mut self, op: UnaryOp, v: ValueRef) -> Result<ValueRef, TrainError> {
        let tag = format!("{op:?}").to_lowercase();
        self.op(Op::Unary(op), vec![v], &tag)
    }

    pub fn sqrt(&mut self, v: ValueRef) -> Result<ValueRef, TrainError> {
        self.unary(UnaryOp::Sqrt, v)
    }

    /// A reduction over `axes` (all axes when empty).
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        v: ValueRef,
        axes: Vec<i64>,
        keepdims: bool,
    ) -> Result<ValueRef, TrainError> {
        let r = ReduceOverAxes { op, axes, keepdims };
        self.op(Op::Reduce(r), vec![v], "reduce")
    }

    /// The mean of all elements, as a rank-0 value.
    pub fn mean_all(&mut self, v: ValueRef) -> Result<ValueRef, TrainError> {
        self.reduce(ReduceOp::Mean, v, vec![], false)
    }

    /// `Σ v²` over all elements, as a rank-0 value.
    pub fn sum_squares(&mut self, v: ValueRef) -> Result<ValueRef, TrainError> {
        let sq = self.mul(v, v)?;
        self.reduce(ReduceOp::Sum, sq, vec![], false)
    }

    /// `cond ? a : b` with broadcasting.
    pub fn select(
        &mut self,
        cond: ValueRef,
        a: ValueRef,
        b: ValueRef,
    ) -> Result<ValueRef, TrainError> {
        self.op(Op::Where, vec![cond, a, b], "where")
    }
}
