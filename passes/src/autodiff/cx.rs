//! The graph under construction during differentiation, with the small builders every
//! gradient rule uses (constants, arithmetic, un-broadcasting).

use super::AutodiffError;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, Literal, MatMulAttrs, Op, ReduceOverAxes, ReshapeDim, UnaryOp};
use oar_ir::{DType, Dim, Graph, NodeId, TensorType, ValueRef};

/// The forward graph plus the backward nodes appended so far.
pub struct GradCx {
    graph: Graph,
    counter: usize,
}

impl GradCx {
    /// A context over `graph` (the walk starts from the forward graph; per-rule tests drive
    /// one rule directly with [`super::rules::vjp`]); `finish` returns the graph with the
    /// emitted nodes.
    pub fn for_graph(graph: Graph) -> GradCx {
        GradCx { graph, counter: 0 }
    }

    /// The graph with every node emitted so far.
    pub fn finish(self) -> Graph {
        self.graph
    }

    /// The graph so far (the forward nodes keep their ids).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The type of a value of the graph. Values come from this graph, so a miss is a bug
    /// in a rule.
    pub fn ty(&self, v: ValueRef) -> TensorType {
        self.graph
            .value_type(v)
            .cloned()
            .unwrap_or_else(|| panic!("autodiff rule used a value {v} that does not exist"))
    }

    /// Static dims of a value (shapes are static once differentiation starts).
    pub fn dims(&self, v: ValueRef) -> Vec<u64> {
        self.ty(v).shape.as_static().unwrap_or_default()
    }

    fn fresh_name(&mut self, of: NodeId) -> String {
        self.counter += 1;
        format!("grad.{}.{}", self.graph.node(of).name, self.counter)
    }

    /// Adds a node computing part of the gradient of `of`; returns the node.
    pub fn emit_node(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        of: NodeId,
    ) -> Result<NodeId, AutodiffError> {
        let name = self.fresh_name(of);
        self.graph
            .add_node(op, inputs, Some(name))
            .map_err(|e| AutodiffError::Graph {
                node: self.graph.node(of).name.clone(),
                message: e.to_string(),
            })
    }

    /// Adds a one-output node computing part of the gradient of `of`.
    pub fn emit(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        Ok(self.emit_node(op, inputs, of)?.into())
    }

    /// Adds a source node (constant, parameter) with its declared types.
    pub fn emit_source(
        &mut self,
        op: Op,
        declared: Vec<TensorType>,
        of: NodeId,
    ) -> Result<NodeId, AutodiffError> {
        let name = self.fresh_name(of);
        self.graph
            .add_node_typed(op, vec![], declared, Some(name))
            .map_err(|e| AutodiffError::Graph {
                node: self.graph.node(of).name.clone(),
                message: e.to_string(),
            })
    }

    /// A constant of type `ty` holding `values` (row-major).
    pub fn constant(
        &mut self,
        values: Vec<f64>,
        ty: TensorType,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let name = self.fresh_name(of);
        let lit = if ty.dtype.is_float() {
            Literal::Floats(values)
        } else {
            Literal::Ints(values.into_iter().map(|v| v as i64).collect())
        };
        self.graph
            .add_node_typed(Op::Constant(lit), vec![], vec![ty], Some(name))
            .map(ValueRef::from)
            .map_err(|e| AutodiffError::Graph {
                node: self.graph.node(of).name.clone(),
                message: e.to_string(),
            })
    }

    /// A rank-0 constant of `dtype`.
    pub fn scalar(
        &mut self,
        value: f64,
        dtype: DType,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        self.constant(vec![value], TensorType::new(dtype, vec![]), of)
    }

    /// `op(a, b)` with numpy broadcasting.
    pub fn binary(
        &mut self,
        op: BinaryOp,
        a: ValueRef,
        b: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        self.emit(Op::Binary(op), vec![a, b], of)
    }

    pub fn add(&mut self, a: ValueRef, b: ValueRef, of: NodeId) -> Result<ValueRef, AutodiffError> {
        self.binary(BinaryOp::Add, a, b, of)
    }

    pub fn sub(&mut self, a: ValueRef, b: ValueRef, of: NodeId) -> Result<ValueRef, AutodiffError> {
        self.binary(BinaryOp::Sub, a, b, of)
    }

    pub fn mul(&mut self, a: ValueRef, b: ValueRef, of: NodeId) -> Result<ValueRef, AutodiffError> {
        self.binary(BinaryOp::Mul, a, b, of)
    }

    pub fn div(&mut self, a: ValueRef, b: ValueRef, of: NodeId) -> Result<ValueRef, AutodiffError> {
        self.binary(BinaryOp::Div, a, b, of)
    }

    /// `v * c` for a scalar `c` (in `v`'s dtype).
    pub fn scale(&mut self, v: ValueRef, c: f64, of: NodeId) -> Result<ValueRef, AutodiffError> {
        let dtype = self.ty(v).dtype;
        let s = self.scalar(c, dtype, of)?;
        self.mul(v, s, of)
    }

    /// Sum over `axes`.
    pub fn reduce_sum(
        &mut self,
        v: ValueRef,
        axes: Vec<i64>,
        keepdims: bool,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        self.emit(
            Op::Reduce(ReduceOverAxes {
                op: ReduceOp::Sum,
                axes,
                keepdims,
            }),
            vec![v],
            of,
        )
    }

    /// Reshape to static `dims`.
    pub fn reshape(
        &mut self,
        v: ValueRef,
        dims: &[u64],
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let shape = dims
            .iter()
            .map(|&d| ReshapeDim::Dim(Dim::Static(d)))
            .collect();
        self.emit(Op::Reshape { shape }, vec![v], of)
    }

    /// The gradient of a value broadcast from `to` to `g`'s shape: `g` summed over the
    /// broadcast dims and reshaped to `to`.
    pub fn unbroadcast(
        &mut self,
        g: ValueRef,
        to: &TensorType,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let gd = self.dims(g);
        let td = to.shape.as_static().unwrap_or_default();
        if gd == td {
            return Ok(g);
        }
        let lead = gd.len().saturating_sub(td.len());
        let mut axes: Vec<i64> = (0..lead as i64).collect();
        for (i, &t) in td.iter().enumerate() {
            if t == 1 && gd.get(lead + i).copied().unwrap_or(1) != 1 {
                axes.push((lead + i) as i64);
            }
        }
        let summed = if axes.is_empty() {
            g
        } else {
            self.reduce_sum(g, axes, true, of)?
        };
        if self.dims(summed) == td {
            Ok(summed)
        } else {
            self.reshape(summed, &td, of)
        }
    }

    /// `v` broadcast (numpy rules) to static `dims`; `v` itself when it already has them.
    pub fn broadcast_to(
        &mut self,
        v: ValueRef,
        dims: &[u64],
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        if self.dims(v) == dims && self.ty(v).rank() == dims.len() {
            return Ok(v);
        }
        let shape = dims.iter().map(|&d| Dim::Static(d)).collect();
        self.emit(Op::BroadcastTo { shape }, vec![v], of)
    }

    /// Zeros of type `ty`: a scalar zero broadcast, so no literal of the full size is built.
    pub fn zeros(&mut self, ty: &TensorType, of: NodeId) -> Result<ValueRef, AutodiffError> {
        let z = self.scalar(0.0, ty.dtype, of)?;
        let dims = ty.shape.as_static().unwrap_or_default();
        self.broadcast_to(z, &dims, of)
    }

    /// A rank-0 constant in `like`'s dtype (to broadcast against `like`).
    pub fn scalar_for(
        &mut self,
        value: f64,
        like: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let dtype = self.ty(like).dtype;
        self.scalar(value, dtype, of)
    }

    /// `v + c` for a scalar `c`.
    pub fn add_scalar(
        &mut self,
        v: ValueRef,
        c: f64,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let s = self.scalar_for(c, v, of)?;
        self.add(v, s, of)
    }

    /// `c - v` for a scalar `c`.
    pub fn rsub_scalar(
        &mut self,
        c: f64,
        v: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let s = self.scalar_for(c, v, of)?;
        self.sub(s, v, of)
    }

    pub fn unary(
        &mut self,
        u: UnaryOp,
        v: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        self.emit(Op::Unary(u), vec![v], of)
    }

    /// `where(cond, a, b)` with broadcasting.
    pub fn select(
        &mut self,
        cond: ValueRef,
        a: ValueRef,
        b: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        self.emit(Op::Where, vec![cond, a, b], of)
    }

    /// The mask `v > c` (`greater`) or `v < c` (`!greater`) for a scalar `c`.
    pub fn compare_scalar(
        &mut self,
        v: ValueRef,
        greater: bool,
        c: f64,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let s = self.scalar_for(c, v, of)?;
        let op = if greater {
            BinaryOp::Greater
        } else {
            BinaryOp::Less
        };
        self.binary(op, v, s, of)
    }

    /// `g` where `mask` holds, zero elsewhere (the shape of `g` and `mask` broadcast).
    pub fn keep_where(
        &mut self,
        mask: ValueRef,
        g: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let z = self.scalar_for(0.0, g, of)?;
        self.select(mask, g, z, of)
    }

    /// `a · b` over the last two dims, with optional transposes.
    pub fn matmul(
        &mut self,
        a: ValueRef,
        b: ValueRef,
        transpose_a: bool,
        transpose_b: bool,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let mm = MatMulAttrs {
            transpose_a,
            transpose_b,
        };
        self.emit(Op::MatMul(mm), vec![a, b], of)
    }

    /// Reduce with `op` over `axes`, keeping the dims (so the result broadcasts back).
    pub fn reduce_keep(
        &mut self,
        op: ReduceOp,
        v: ValueRef,
        axes: Vec<i64>,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        self.emit(
            Op::Reduce(ReduceOverAxes {
                op,
                axes,
                keepdims: true,
            }),
            vec![v],
            of,
        )
    }

    /// Concatenation along `axis`.
    pub fn concat(
        &mut self,
        vs: Vec<ValueRef>,
        axis: i64,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        if vs.len() == 1 {
            return Ok(vs[0]);
        }
        self.emit(Op::Concat { axis }, vs, of)
    }
}
