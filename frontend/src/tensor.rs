//! `Tensor`: a cheap handle to one value of the graph under construction, with a method for
//! every IR op and `+ - * /` overloaded. Every method is `#[track_caller]`, so a misuse is
//! reported at the user's line. After the first error, handles are poisoned and further ops
//! on them do nothing; `ModelBuilder::finish` returns that first error.

use crate::builder::ModelBuilder;
use oar_ir::dist::{DeviceKind, DeviceRef, OpDist, Placement, ReduceOp};
use oar_ir::op::*;
use oar_ir::{DType, Dim, TensorType, ValueRef};

/// A value in the graph under construction.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) b: ModelBuilder,
    pub(crate) value: Option<ValueRef>,
}

impl Tensor {
    pub(crate) fn new(b: ModelBuilder, v: ValueRef) -> Tensor {
        Tensor { b, value: Some(v) }
    }

    pub(crate) fn poisoned(b: ModelBuilder) -> Tensor {
        Tensor { b, value: None }
    }

    /// The builder this tensor belongs to.
    pub fn builder(&self) -> &ModelBuilder {
        &self.b
    }

    /// The IR value, unless an earlier error poisoned this handle.
    pub fn value(&self) -> Option<ValueRef> {
        self.value
    }

    /// dtype and shape (None after an error).
    pub fn ty(&self) -> Option<TensorType> {
        self.b.type_of(self)
    }

    /// Rank (0 after an error).
    pub fn rank(&self) -> usize {
        self.ty().map(|t| t.rank()).unwrap_or(0)
    }

    /// Dim `i` (negative counts from the end); `1` after an error.
    pub fn dim(&self, i: i64) -> Dim {
        let t = self.ty();
        t.and_then(|t| norm_axis(i, t.rank()).ok().map(|a| t.shape.0[a].clone()))
            .unwrap_or(Dim::Static(1))
    }
}

/// One method per IR op: a table, kept one line per op.
#[rustfmt::skip]
impl Tensor {
    #[track_caller]
    fn un(&self, op: UnaryOp) -> Tensor {
        self.b.apply(Op::Unary(op), &[self])
    }

    #[track_caller]
    fn bin(&self, op: BinaryOp, other: &Tensor) -> Tensor {
        self.b.apply(Op::Binary(op), &[self, other])
    }

    // Elementwise, one input.
    #[track_caller]
    pub fn neg(&self) -> Tensor { self.un(UnaryOp::Neg) }
    #[track_caller]
    pub fn exp(&self) -> Tensor { self.un(UnaryOp::Exp) }
    #[track_caller]
    pub fn log(&self) -> Tensor { self.un(UnaryOp::Log) }
    #[track_caller]
    pub fn sqrt(&self) -> Tensor { self.un(UnaryOp::Sqrt) }
    #[track_caller]
    pub fn rsqrt(&self) -> Tensor { self.un(UnaryOp::Rsqrt) }
    #[track_caller]
    pub fn tanh(&self) -> Tensor { self.un(UnaryOp::Tanh) }
    #[track_caller]
    pub fn erf(&self) -> Tensor { self.un(UnaryOp::Erf) }
    #[track_caller]
    pub fn abs(&self) -> Tensor { self.un(UnaryOp::Abs) }
    #[track_caller]
    pub fn relu(&self) -> Tensor { self.un(UnaryOp::Relu) }
    #[track_caller]
    pub fn relu6(&self) -> Tensor { self.un(UnaryOp::Relu6) }
    #[track_caller]
    pub fn leaky_relu(&self, alpha: f64) -> Tensor { self.un(UnaryOp::LeakyRelu { alpha }) }
    #[track_caller]
    pub fn sigmoid(&self) -> Tensor { self.un(UnaryOp::Sigmoid) }
    /// `clip(alpha·x + beta, 0, 1)`; Paddle's default is alpha = 1/6, beta = 0.5.
    #[track_caller]
    pub fn hardsigmoid(&self, alpha: f64, beta: f64) -> Tensor { self.un(UnaryOp::HardSigmoid { alpha, beta }) }
    #[track_caller]
    pub fn hardswish(&self) -> Tensor { self.un(UnaryOp::HardSwish) }
    /// Exact (erf) GELU.
    #[track_caller]
    pub fn gelu(&self) -> Tensor { self.un(UnaryOp::Gelu { tanh: false }) }
    /// tanh-approximated GELU.
    #[track_caller]
    pub fn gelu_tanh(&self) -> Tensor { self.un(UnaryOp::Gelu { tanh: true }) }
    #[track_caller]
    pub fn silu(&self) -> Tensor { self.un(UnaryOp::Silu) }
    #[track_caller]
    pub fn mish(&self) -> Tensor { self.un(UnaryOp::Mish) }
    #[track_caller]
    pub fn clip(&self, min: f64, max: f64) -> Tensor { self.un(UnaryOp::Clip { min, max }) }

    // Elementwise, two inputs (numpy broadcasting).
    #[track_caller]
    pub fn add(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Add, o) }
    #[track_caller]
    pub fn sub(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Sub, o) }
    #[track_caller]
    pub fn mul(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Mul, o) }
    #[track_caller]
    pub fn div(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Div, o) }
    #[track_caller]
    pub fn pow(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Pow, o) }
    #[track_caller]
    pub fn maximum(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Max, o) }
    #[track_caller]
    pub fn minimum(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Min, o) }
    #[track_caller]
    pub fn equal(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Equal, o) }
    #[track_caller]
    pub fn less(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Less, o) }
    #[track_caller]
    pub fn greater(&self, o: &Tensor) -> Tensor { self.bin(BinaryOp::Greater, o) }

    /// `self + c` for a scalar.
    #[track_caller]
    pub fn add_scalar(&self, c: f64) -> Tensor { self.add(&self.b.scalar(c)) }
    /// `self * c` for a scalar.
    #[track_caller]
    pub fn mul_scalar(&self, c: f64) -> Tensor { self.mul(&self.b.scalar(c)) }

    /// `where(self, a, b)`: `self` is the bool condition.
    #[track_caller]
    pub fn select(&self, a: &Tensor, b: &Tensor) -> Tensor { self.b.apply(Op::Where, &[self, a, b]) }
    #[track_caller]
    pub fn cast(&self, to: DType) -> Tensor { self.b.apply(Op::Cast { to }, &[self]) }
    #[track_caller]
    pub fn dropout(&self, p: f64) -> Tensor { self.dropout_with(p, DropoutMode::default()) }
    /// Dropout with Paddle's `mode` (`downscale_in_infer` scales by `1 - p` at inference).
    #[track_caller]
    pub fn dropout_with(&self, p: f64, mode: DropoutMode) -> Tensor { self.b.apply(Op::Dropout { p, mode, mask_of: None }, &[self]) }

    // Contractions.
    #[track_caller]
    pub fn matmul(&self, o: &Tensor) -> Tensor { self.b.apply(Op::MatMul(MatMulAttrs::default()), &[self, o]) }
    /// `self · oᵀ` over the last two dims.
    #[track_caller]
    pub fn matmul_t(&self, o: &Tensor) -> Tensor {
        self.b.apply(Op::MatMul(MatMulAttrs { transpose_a: false, transpose_b: true }), &[self, o])
    }
    #[track_caller]
    pub fn conv2d(&self, w: &Tensor, bias: Option<&Tensor>, attrs: ConvAttrs) -> Tensor {
        let mut ins = vec![self, w];
        ins.extend(bias);
        self.b.apply(Op::Conv2d(attrs), &ins)
    }
    #[track_caller]
    pub fn conv_transpose2d(&self, w: &Tensor, bias: Option<&Tensor>, attrs: ConvTransposeAttrs) -> Tensor {
        let mut ins = vec![self, w];
        ins.extend(bias);
        self.b.apply(Op::ConvTranspose2d(attrs), &ins)
    }

    // Normalisation.
    #[track_caller]
    pub fn batch_norm(&self, scale: &Tensor, bias: &Tensor, mean: &Tensor, var: &Tensor, eps: f64) -> Tensor {
        self.b.apply(Op::BatchNorm { eps, momentum: None }, &[self, scale, bias, mean, var])
    }
    #[track_caller]
    pub fn layer_norm(&self, scale: &Tensor, bias: &Tensor, axis: i64, eps: f64) -> Tensor {
        self.b.apply(Op::LayerNorm { axis, eps }, &[self, scale, bias])
    }
    #[track_caller]
    pub fn softmax(&self, axis: i64) -> Tensor { self.b.apply(Op::Softmax { axis }, &[self]) }
    #[track_caller]
    pub fn log_softmax(&self, axis: i64) -> Tensor { self.b.apply(Op::LogSoftmax { axis }, &[self]) }
    /// Masks attention scores above the (bottom-aligned) diagonal with `fill`.
    #[track_caller]
    pub fn causal_mask(&self, fill: f64) -> Tensor { self.b.apply(Op::CausalMask { fill }, &[self]) }

    #[track_caller]
    fn reduce(&self, op: ReduceOp, axes: &[i64], keepdims: bool) -> Tensor {
        self.b.apply(Op::Reduce(ReduceOverAxes { op, axes: axes.to_vec(), keepdims }), &[self])
    }
    #[track_caller]
    pub fn reduce_sum(&self, axes: &[i64], keepdims: bool) -> Tensor { self.reduce(ReduceOp::Sum, axes, keepdims) }
    #[track_caller]
    pub fn reduce_mean(&self, axes: &[i64], keepdims: bool) -> Tensor { self.reduce(ReduceOp::Mean, axes, keepdims) }
    #[track_caller]
    pub fn reduce_max(&self, axes: &[i64], keepdims: bool) -> Tensor { self.reduce(ReduceOp::Max, axes, keepdims) }
    #[track_caller]
    pub fn reduce_min(&self, axes: &[i64], keepdims: bool) -> Tensor { self.reduce(ReduceOp::Min, axes, keepdims) }
    #[track_caller]
    pub fn reduce_prod(&self, axes: &[i64], keepdims: bool) -> Tensor { self.reduce(ReduceOp::Prod, axes, keepdims) }

    // Pooling and resizing.
    #[track_caller]
    pub fn pool(&self, attrs: PoolAttrs) -> Tensor { self.b.apply(Op::Pool(attrs), &[self]) }
    /// Square max pooling with symmetric padding.
    #[track_caller]
    pub fn max_pool(&self, kernel: u64, stride: u64, padding: u64) -> Tensor {
        self.pool(PoolAttrs {
            kind: PoolKind::Max,
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 4],
            ceil_mode: false,
            count_include_pad: false,
        })
    }
    /// Square average pooling with symmetric padding (padding not counted).
    #[track_caller]
    pub fn avg_pool(&self, kernel: u64, stride: u64, padding: u64) -> Tensor {
        self.pool(PoolAttrs {
            kind: PoolKind::Avg,
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 4],
            ceil_mode: false,
            count_include_pad: false,
        })
    }
    #[track_caller]
    pub fn global_avg_pool(&self) -> Tensor { self.b.apply(Op::GlobalPool(PoolKind::Avg), &[self]) }
    #[track_caller]
    pub fn global_max_pool(&self) -> Tensor { self.b.apply(Op::GlobalPool(PoolKind::Max), &[self]) }
    #[track_caller]
    pub fn resize(&self, mode: ResizeMode, coord: CoordMode, size: [Dim; 2]) -> Tensor {
        self.b.apply(Op::Resize(ResizeAttrs { mode, coord, size }), &[self])
    }

    // Shape ops.
    #[track_caller]
    pub fn split(&self, axis: i64, sizes: &[u64]) -> Vec<Tensor> {
        self.b.apply_multi(Op::Split { axis, sizes: sizes.to_vec() }, &[self])
    }
    #[track_caller]
    pub fn slice(&self, axes: &[i64], starts: &[i64], ends: &[i64], steps: &[i64]) -> Tensor {
        let attrs = SliceAttrs { axes: axes.to_vec(), starts: starts.to_vec(), ends: ends.to_vec(), steps: steps.to_vec() };
        self.b.apply(Op::Slice(attrs), &[self])
    }
    /// Reshape; `-1` (as `ReshapeDim::Infer`) infers one dim.
    #[track_caller]
    pub fn reshape(&self, shape: Vec<ReshapeDim>) -> Tensor { self.b.apply(Op::Reshape { shape }, &[self]) }
    #[track_caller]
    pub fn transpose(&self, perm: &[usize]) -> Tensor { self.b.apply(Op::Transpose { perm: perm.to_vec() }, &[self]) }
    #[track_caller]
    pub fn squeeze(&self, axes: &[i64]) -> Tensor { self.b.apply(Op::Squeeze { axes: axes.to_vec() }, &[self]) }
    #[track_caller]
    pub fn unsqueeze(&self, axes: &[i64]) -> Tensor { self.b.apply(Op::Unsqueeze { axes: axes.to_vec() }, &[self]) }
    #[track_caller]
    pub fn flatten(&self, axis: i64) -> Tensor { self.b.apply(Op::Flatten { axis }, &[self]) }
    #[track_caller]
    pub fn gather(&self, indices: &Tensor, axis: i64) -> Tensor { self.b.apply(Op::Gather { axis }, &[self, indices]) }
    #[track_caller]
    pub fn gather_elements(&self, indices: &Tensor, axis: i64) -> Tensor {
        self.b.apply(Op::GatherElements { axis }, &[self, indices])
    }
    /// `self` is the table `[vocab, dim]`; `ids` are integer token ids.
    #[track_caller]
    pub fn embedding(&self, ids: &Tensor) -> Tensor { self.b.apply(Op::Embedding, &[self, ids]) }

    // Collectives over one axis of a declared mesh.
    #[track_caller]
    pub fn all_reduce(&self, op: ReduceOp, mesh: &str, axis: usize) -> Tensor {
        self.b.apply(Op::AllReduce { op, group: CommGroup { mesh: mesh.into(), axis } }, &[self])
    }
    #[track_caller]
    pub fn all_gather(&self, dim: i64, mesh: &str, axis: usize) -> Tensor {
        self.b.apply(Op::AllGather { axis: dim, group: CommGroup { mesh: mesh.into(), axis } }, &[self])
    }
    #[track_caller]
    pub fn reduce_scatter(&self, op: ReduceOp, dim: i64, mesh: &str, axis: usize) -> Tensor {
        self.b.apply(Op::ReduceScatter { op, axis: dim, group: CommGroup { mesh: mesh.into(), axis } }, &[self])
    }
    #[track_caller]
    pub fn all_to_all(&self, split_dim: i64, concat_dim: i64, mesh: &str, axis: usize) -> Tensor {
        let group = CommGroup { mesh: mesh.into(), axis };
        self.b.apply(Op::AllToAll { split_axis: split_dim, concat_axis: concat_dim, group }, &[self])
    }
    #[track_caller]
    pub fn broadcast_from(&self, root: u64, mesh: &str, axis: usize) -> Tensor {
        self.b.apply(Op::Broadcast { root, group: CommGroup { mesh: mesh.into(), axis } }, &[self])
    }

}

impl Tensor {
    // Distribution hints, recorded on the node that produced this tensor.
    /// Lays this tensor out on `mesh` with one placement per mesh axis.
    #[track_caller]
    pub fn shard(&self, mesh: &str, placements: &[Placement]) -> Tensor {
        let Some(v) = self.value else {
            return self.clone();
        };
        let err = {
            let mut st = self.b.state.borrow_mut();
            let rank = st.graph.value_type(v).map(|t| t.rank()).unwrap_or(0);
            match st.graph.meshes.get(mesh) {
                None => Some(format!(
                    "unknown mesh @{mesh}; declare it with ModelBuilder::mesh"
                )),
                Some(m) if m.shape.len() != placements.len() => Some(format!(
                    "mesh @{mesh} has {} axes ({}) but {} placements were given",
                    m.shape.len(),
                    m.axis_names.join(", "),
                    placements.len()
                )),
                Some(_) => match placements
                    .iter()
                    .find(|p| matches!(p, Placement::Shard(d) if *d >= rank))
                {
                    Some(p) => Some(format!(
                        "{p} shards a dim that a rank-{rank} tensor does not have"
                    )),
                    None => {
                        let node = st.graph.node_mut(v.node);
                        let n_out = node.outputs.len();
                        let d = node.dist.get_or_insert_with(OpDist::default);
                        d.mesh = Some(mesh.to_string());
                        if d.outputs.len() != n_out {
                            d.outputs = vec![vec![Placement::Replicate; placements.len()]; n_out];
                        }
                        d.outputs[v.port as usize] = placements.to_vec();
                        None
                    }
                },
            }
        };
        match err {
            Some(m) => self.b.fail("shard", m),
            None => self.clone(),
        }
    }

    /// Shards tensor dim `dim` along the mesh axis named `axis_name`, replicated on the others.
    #[track_caller]
    pub fn shard_along(&self, mesh: &str, axis_name: &str, dim: usize) -> Tensor {
        let found = {
            let st = self.b.state.borrow();
            st.graph
                .meshes
                .get(mesh)
                .map(|m| (m.axis(axis_name), m.axis_names.clone()))
        };
        match found {
            None => self.b.fail(
                "shard",
                format!("unknown mesh @{mesh}; declare it with ModelBuilder::mesh"),
            ),
            Some((None, names)) => self.b.fail(
                "shard",
                format!(
                    "mesh @{mesh} has no axis `{axis_name}` (its axes: {})",
                    names.join(", ")
                ),
            ),
            Some((Some(a), names)) => {
                let mut ps = vec![Placement::Replicate; names.len()];
                ps[a] = Placement::Shard(dim);
                self.shard(mesh, &ps)
            }
        }
    }

    /// Places the node that produced this tensor on a device kind (heterogeneous placement).
    pub fn place(&self, kind: DeviceKind) -> Tensor {
        if let Some(v) = self.value {
            self.b.state.borrow_mut().graph.node_mut(v.node).device =
                Some(DeviceRef { kind, index: None });
        }
        self.clone()
    }
}

impl ModelBuilder {
    /// Concatenates tensors along `axis`.
    #[track_caller]
    pub fn concat(&self, xs: &[&Tensor], axis: i64) -> Tensor {
        if xs.is_empty() {
            return self.fail("concat", "needs at least one tensor".into());
        }
        self.apply(Op::Concat { axis }, xs)
    }
}

macro_rules! overload {
    ($tr:ident, $m:ident, $op:ident) => {
        impl std::ops::$tr<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, o: &Tensor) -> Tensor {
                self.bin(BinaryOp::$op, o)
            }
        }
        impl std::ops::$tr<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, o: Tensor) -> Tensor {
                self.bin(BinaryOp::$op, &o)
            }
        }
        impl std::ops::$tr<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $m(self, o: &Tensor) -> Tensor {
                self.bin(BinaryOp::$op, o)
            }
        }
    };
}

overload!(Add, add, Add);
overload!(Sub, sub, Sub);
overload!(Mul, mul, Mul);
overload!(Div, div, Div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        self.un(UnaryOp::Neg)
    }
}
