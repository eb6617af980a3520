//! The reference interpreter: runs any `ir::Graph` on host tensors, one node at a time, with
//! loops written for obviousness. It is the oracle every optimised or compiled path is tested
//! against. Computes in f32, with i64 and bool where ops need them; bf16 and f16 values are
//! stored as f32 rounded to their precision (see [`precision`]). Graphs typed in f64 run every
//! float kernel in f64 (see [`float`]): autodiff's gradient checks use that to compare rules
//! with finite differences well below f32's rounding noise.

mod collective;
mod data_movement;
pub mod debug;
mod deform;
mod elementwise;
pub(crate) mod float;
mod grad_ops;
mod linalg;
mod nms;
mod norm_reduce_pool;
mod precision;
mod training;

pub use debug::{first_non_finite, NonFinite};
pub use norm_reduce_pool::resize_matrix;
pub use precision::{round_bf16, round_f16, round_to_dtype, stored_dtype};
pub use training::{
    dropout_keep, dropout_keep_mask, run_with_options, train_step, RunOptions, RunResult,
};

use crate::comm::Communicator;
use crate::io::weights::Weights;
use crate::tensor::{HostTensor, TensorData};
use oar_ir::op::{GradOp, Literal, Op};
use oar_ir::{Dim, Graph, Node};
use std::collections::BTreeMap;

pub(crate) type Res<T> = Result<T, String>;

pub(crate) fn err<T>(m: impl Into<String>) -> Res<T> {
    Err(m.into())
}

pub(crate) fn norm_axis(axis: i64, rank: usize) -> Res<usize> {
    oar_ir::op::norm_axis(axis, rank).map_err(|e| e.0)
}

/// Why a graph could not be run.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("graph takes {expected} inputs, {given} were given")]
    InputCount { expected: usize, given: usize },
    #[error("input %{name}: {message}")]
    Input { name: String, message: String },
    #[error("no weight for parameter `{0}` (load a weights file or initialise with a seed)")]
    MissingWeight(String),
    #[error("{0}")]
    Invalid(#[from] oar_ir::VerifyErrors),
    #[error("%{node} ({op}): {message}")]
    Node {
        node: String,
        op: &'static str,
        message: String,
    },
}

/// Binds symbols from the input shapes and checks every static dim.
fn bind_inputs(graph: &Graph, inputs: &[HostTensor]) -> Result<BTreeMap<String, u64>, InterpError> {
    if inputs.len() != graph.inputs().len() {
        return Err(InterpError::InputCount {
            expected: graph.inputs().len(),
            given: inputs.len(),
        });
    }
    let mut b = BTreeMap::new();
    let pairs: Vec<(&Node, &HostTensor)> = graph
        .inputs()
        .iter()
        .map(|&i| graph.node(i))
        .zip(inputs)
        .collect();
    let fail = |n: &Node, message: String| InterpError::Input {
        name: n.name.clone(),
        message,
    };
    for (n, t) in &pairs {
        let ty = &n.outputs[0];
        if stored_dtype(ty.dtype) != t.dtype() {
            return Err(fail(n, format!("expected {ty}, found {}", t.describe())));
        }
        if ty.rank() != t.shape.len() {
            return Err(fail(
                n,
                format!("expected rank {} ({ty}), found {}", ty.rank(), t.describe()),
            ));
        }
        for (d, &v) in ty.shape.0.iter().zip(&t.shape) {
            if let Dim::Sym(_) = d {
                // A plain symbol binds; products are checked below once all are bound.
                if let [s] = d.symbols().as_slice() {
                    if d.to_string() == *s {
                        if let Some(&old) = b.get(*s) {
                            if old != v as u64 {
                                return Err(fail(
                                    n,
                                    format!(
                                        "symbol {s} is {old} from an earlier input but {v} here"
                                    ),
                                ));
                            }
                        }
                        b.insert(s.to_string(), v as u64);
                    }
                }
            }
        }
    }
    for (n, t) in &pairs {
        let want = n.outputs[0].shape.eval(&b, 0);
        if want.iter().map(|&d| d as usize).ne(t.shape.iter().copied()) {
            return Err(fail(
                n,
                format!(
                    "expected {} = {want:?}, found {}",
                    n.outputs[0],
                    t.describe()
                ),
            ));
        }
    }
    Ok(b)
}

fn literal_tensor(lit: &Literal, shape: Vec<usize>, dtype: oar_ir::DType) -> HostTensor {
    let bool_out = dtype == oar_ir::DType::Bool;
    match lit {
        // An f64 constant keeps every digit of its literal.
        Literal::Floats(v) if dtype == oar_ir::DType::F64 => HostTensor::f64(shape, v.clone()),
        Literal::Floats(v) => HostTensor::f32(shape, v.iter().map(|&x| x as f32).collect()),
        Literal::Ints(v) if bool_out => {
            HostTensor::bool(shape, v.iter().map(|&x| x != 0).collect())
        }
        Literal::Ints(v) => HostTensor::i64(shape, v.clone()),
    }
}

fn eval(
    node: &Node,
    ins: &[&HostTensor],
    weights: &Weights,
    out_shapes: &[Vec<usize>],
    cx: &RunCtx,
) -> Result<Vec<HostTensor>, InterpError> {
    let one = |r: Res<HostTensor>| r.map(|t| vec![t]);
    let res: Res<Vec<HostTensor>> = match &node.op {
        Op::Input => unreachable!("inputs are bound before evaluation"),
        Op::Param(p) => {
            let w = weights
                .get(&p.name)
                .ok_or_else(|| InterpError::MissingWeight(p.name.clone()))?;
            if w.shape != out_shapes[0] || w.dtype() != stored_dtype(node.outputs[0].dtype) {
                Err(format!(
                    "weight `{}` is {} but the graph declares {}",
                    p.name,
                    w.describe(),
                    node.outputs[0]
                ))
            } else {
                Ok(vec![w.clone()])
            }
        }
        Op::Constant(lit) => Ok(vec![literal_tensor(
            lit,
            out_shapes[0].clone(),
            node.outputs[0].dtype,
        )]),
        Op::Unary(u) => one(elementwise::unary(*u, ins[0])),
        Op::Binary(b) => one(elementwise::binary(*b, ins[0], ins[1])),
        Op::Where => one(elementwise::where_(ins[0], ins[1], ins[2])),
        Op::Cast { to } => one(elementwise::cast(ins[0], *to)),
        // A replaying dropout (autodiff's backward) draws the mask of the node it names.
        Op::Dropout { p, mode, mask_of } => {
            let key = mask_of.as_deref().unwrap_or(&node.name);
            one(training::dropout(ins[0], *p, *mode, key, &cx.opts))
        }
        Op::MatMul(m) => one(linalg::matmul(ins[0], ins[1], m)),
        Op::Conv2d(c) => one(linalg::conv2d(ins[0], ins[1], ins.get(2).copied(), c)),
        Op::ConvTranspose2d(c) => one(linalg::conv_transpose2d(
            ins[0],
            ins[1],
            ins.get(2).copied(),
            &c.conv,
            c.output_padding,
        )),
        Op::BatchNorm {
            eps,
            momentum: None,
        } => one(norm_reduce_pool::batch_norm(
            ins[0],
            [ins[1], ins[2], ins[3], ins[4]],
            *eps,
        )),
        Op::BatchNorm {
            eps,
            momentum: Some(m),
        } => training::batch_norm_train(ins[0], [ins[1], ins[2], ins[3], ins[4]], *eps, *m),
        Op::LayerNorm { axis, eps } => one(norm_reduce_pool::layer_norm(
            ins[0], ins[1], ins[2], *axis, *eps,
        )),
        Op::Softmax { axis } => one(norm_reduce_pool::softmax(ins[0], *axis, false)),
        Op::LogSoftmax { axis } => one(norm_reduce_pool::softmax(ins[0], *axis, true)),
        Op::CausalMask { fill } => one(norm_reduce_pool::causal_mask(ins[0], *fill)),
        Op::Reduce(r) => one(norm_reduce_pool::reduce(ins[0], r)),
        Op::Pool(p) => one(norm_reduce_pool::pool(ins[0], p)),
        Op::GlobalPool(k) => one(norm_reduce_pool::global_pool(ins[0], *k)),
        Op::Resize(r) => {
            let s = &out_shapes[0];
            one(norm_reduce_pool::resize(ins[0], r, [s[2], s[3]]))
        }
        Op::Nms(a) => nms::nms(ins[0], ins[1], a),
        Op::DeformConv2d(a) => one(deform::deform_conv2d(ins, a)),
        Op::Concat { axis } => one(data_movement::concat(ins, *axis)),
        Op::Split { axis, sizes } => data_movement::split(ins[0], *axis, sizes),
        Op::Slice(s) => one(data_movement::slice(ins[0], s)),
        Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } => {
            // Views: same data, the shape inference already computed.
            Ok(vec![HostTensor {
                shape: out_shapes[0].clone(),
                data: ins[0].data.clone(),
            }])
        }
        Op::Transpose { perm } => one(data_movement::transpose(ins[0], perm)),
        Op::BroadcastTo { .. } => one(data_movement::broadcast_to(ins[0], &out_shapes[0])),
        Op::Gather { axis } => one(data_movement::gather(ins[0], ins[1], *axis)),
        Op::GatherElements { axis } => one(data_movement::gather_elements(ins[0], ins[1], *axis)),
        Op::Embedding => one(data_movement::embedding(ins[0], ins[1])),
        Op::Grad(GradOp::Conv2dWeight { conv, kernel }) => {
            one(grad_ops::conv2d_grad_weight(ins[0], ins[1], conv, *kernel))
        }
        Op::Grad(GradOp::DeformConv2d(a)) => deform::deform_conv2d_grad(ins, a),
        Op::Grad(GradOp::Pool(p)) => one(grad_ops::pool_grad(ins[0], ins[1], p)),
        Op::Grad(GradOp::ScatterAdd { axis }) => {
            one(grad_ops::scatter_add(ins[0], ins[1], ins[2], *axis))
        }
        Op::Grad(GradOp::Gather { axis, rows }) => {
            one(grad_ops::gather_grad(ins[0], ins[1], *axis, *rows))
        }
        Op::Shape => Ok(vec![HostTensor::i64(
            vec![ins[0].shape.len()],
            ins[0].shape.iter().map(|&d| d as i64).collect(),
        )]),
        Op::FusedConv2d { conv, epilogue } => {
            // The bias goes through conv2d, which adds it per channel.
            let bias = if epilogue.bias {
                ins.get(2).copied()
            } else {
                None
            };
            let residual = ins.get(2 + usize::from(epilogue.bias)).copied();
            one(linalg::conv2d(ins[0], ins[1], bias, conv)
                .and_then(|y| elementwise::epilogue(y, epilogue, residual)))
        }
        Op::FusedMatMul { mm, epilogue } => {
            let residual = ins.get(2 + usize::from(epilogue.bias)).copied();
            one(linalg::matmul(ins[0], ins[1], mm)
                .and_then(|y| match epilogue.bias {
                    true => elementwise::binary(oar_ir::op::BinaryOp::Add, &y, ins[2]),
                    false => Ok(y),
                })
                .and_then(|y| elementwise::epilogue(y, epilogue, residual)))
        }
        Op::Fused { func } => match cx.functions.get(func) {
            Some(f) => {
                let owned: Vec<HostTensor> = ins.iter().map(|t| (*t).clone()).collect();
                run_with(f, &owned, weights, cx).map_err(|e| format!("in @{func}: {e}"))
            }
            None => err(format!("unknown function @{func}")),
        },
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. } => match cx.comm {
            Some(c) => one(collective::run(&node.op, ins[0], cx.meshes, c)),
            None => err("collectives need a communicator: run per-rank graphs with run_on_rank"),
        },
        Op::Send { peer } => match cx.comm {
            Some(c) => collective::send(*peer, ins[0], c).map(|()| vec![]),
            None => err("send needs a communicator: run per-rank graphs with run_on_rank"),
        },
        Op::Recv { peer } => match cx.comm {
            Some(c) => one(collective::recv(
                *peer,
                node.outputs[0].dtype,
                &out_shapes[0],
                c,
            )),
            None => err("recv needs a communicator: run per-rank graphs with run_on_rank"),
        },
    };
    let mut outs = res.map_err(|message| InterpError::Node {
        node: node.name.clone(),
        op: node.op.name(),
        message,
    })?;
    for (i, (t, want)) in outs.iter_mut().zip(out_shapes).enumerate() {
        if &t.shape != want || t.dtype() != stored_dtype(node.outputs[i].dtype) {
            return Err(InterpError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                message: format!(
                    "computed {} but the graph declares {} = {want:?}",
                    t.describe(),
                    node.outputs[i]
                ),
            });
        }
        // A bf16/f16 result computed in f32 is rounded once, on "store".
        if let TensorData::F32(v) = &mut t.data {
            round_to_dtype(node.outputs[i].dtype, v);
        }
    }
    Ok(outs)
}

/// Runs `graph` on `inputs` (one per graph input, in order) with parameters from `weights`,
/// with inference semantics (see [`run_with_options`] for training). Values are freed after
/// their last use.
pub fn run(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
) -> Result<Vec<HostTensor>, InterpError> {
    // The loops below index operands by arity: only well-formed graphs get here.
    oar_ir::verify(graph)?;
    run_with(
        graph,
        inputs,
        weights,
        &RunCtx::of(graph, None, RunOptions::default()),
    )
}

/// Runs one rank's graph; its collectives and send/recv go through `comm`.
pub fn run_on_rank(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
    comm: &dyn Communicator,
) -> Result<Vec<HostTensor>, InterpError> {
    // The loops below index operands by arity: only well-formed graphs get here.
    oar_ir::verify(graph)?;
    let cx = RunCtx::of(graph, Some(comm), RunOptions::default());
    run_with(graph, inputs, weights, &cx)
}

/// [`run_on_rank`] with training semantics (`opts`: mode, seed, step, batch shard).
pub fn run_with_options_on_rank(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
    opts: RunOptions,
    comm: &dyn Communicator,
) -> Result<Vec<HostTensor>, InterpError> {
    oar_ir::verify(graph)?;
    run_with(graph, inputs, weights, &RunCtx::of(graph, Some(comm), opts))
}

/// The module a graph runs in: fusion bodies, meshes, and the communicator if any.
struct RunCtx<'a> {
    functions: &'a BTreeMap<String, Graph>,
    meshes: &'a BTreeMap<String, oar_ir::ProcessMesh>,
    comm: Option<&'a dyn Communicator>,
    /// Mode, seed and step (dropout's mask).
    opts: RunOptions,
}

impl<'a> RunCtx<'a> {
    /// The context of `graph` as the top-level module.
    fn of(graph: &'a Graph, comm: Option<&'a dyn Communicator>, opts: RunOptions) -> Self {
        RunCtx {
            functions: &graph.functions,
            meshes: &graph.meshes,
            comm,
            opts,
        }
    }
}

/// Evaluates `node` on the values computed so far (`values[node index][port]`).
fn eval_at(
    node: &Node,
    values: &[Option<Vec<HostTensor>>],
    bindings: &BTreeMap<String, u64>,
    weights: &Weights,
    cx: &RunCtx,
) -> Result<Vec<HostTensor>, InterpError> {
    let ins: Vec<&HostTensor> = node
        .inputs
        .iter()
        .map(|v| {
            values[v.node.index()]
                .as_ref()
                .and_then(|o| o.get(v.port as usize))
                .ok_or_else(|| InterpError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!("operand {v} has no value"),
                })
        })
        .collect::<Result<_, _>>()?;
    let out_shapes: Vec<Vec<usize>> = node
        .outputs
        .iter()
        .map(|t| {
            t.shape
                .eval(bindings, 0)
                .into_iter()
                .map(|d| d as usize)
                .collect()
        })
        .collect();
    eval(node, &ins, weights, &out_shapes, cx)
}

/// Runs `graph` in the module context `cx`.
fn run_with(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
    cx: &RunCtx,
) -> Result<Vec<HostTensor>, InterpError> {
    let bindings = bind_inputs(graph, inputs)?;
    let mut last_use = vec![0usize; graph.len()];
    for (id, n) in graph.iter() {
        for v in &n.inputs {
            last_use[v.node.index()] = id.index();
        }
    }
    for v in graph.outputs() {
        last_use[v.node.index()] = usize::MAX;
    }
    let mut values: Vec<Option<Vec<HostTensor>>> = vec![None; graph.len()];
    for (&id, t) in graph.inputs().iter().zip(inputs) {
        values[id.index()] = Some(vec![t.clone()]);
    }
    for (id, node) in graph.iter() {
        if matches!(node.op, Op::Input) {
            continue;
        }
        let outs = eval_at(node, &values, &bindings, weights, cx)?;
        values[id.index()] = Some(outs);
        for v in &node.inputs {
            if last_use[v.node.index()] == id.index() {
                values[v.node.index()] = None;
            }
        }
    }
    graph
        .outputs()
        .iter()
        .map(|v| {
            values[v.node.index()]
                .as_ref()
                .and_then(|o| o.get(v.port as usize))
                .cloned()
                .ok_or_else(|| InterpError::Node {
                    node: graph.node(v.node).name.clone(),
                    op: graph.node(v.node).op.name(),
                    message: "output has no value".into(),
                })
        })
        .collect()
}
