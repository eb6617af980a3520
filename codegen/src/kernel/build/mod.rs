//! Graph → kernels and a [`Program`]: one buffer per value (views alias their source),
//! weights and constants loaded once, one or more kernels per node.

mod comm;
mod contraction;
mod conv_grad;
mod data_movement;
mod depthwise;
mod gemv;
mod grad_ops;
mod inplace;
mod norm_reduce_pool;
mod padded;
mod pointwise;
mod resize;
mod train_ops;

use super::{Body, CpuModel, Elem, Kernel, Tiling};
use oar_ir::op::{Literal, Op};
use oar_ir::{DType, Graph, ProcessMesh, ValueRef};
use oar_runtime::program::{BufferDecl, BufferRole, Program, Step};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A compiled graph: the program and the kernels it calls (by index), for one CPU.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub program: Program,
    pub kernels: Vec<Kernel>,
    /// The CPU the kernels are shaped for (object files and assembly target it).
    pub cpu: CpuModel,
}

impl Compiled {
    /// The GEMM blocking the kernels were built with.
    pub fn tiling(&self) -> Tiling {
        Tiling::for_cpu(&self.cpu)
    }
}

/// Why a graph could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("codegen: node %{node} ({op}): {message}")]
pub struct BuildError {
    pub node: String,
    pub op: String,
    pub message: String,
}

/// Buffer shapes and kernels under construction.
pub(crate) struct Builder {
    pub program: Program,
    pub kernels: Vec<Kernel>,
    /// The buffer of each value.
    pub buf: HashMap<ValueRef, usize>,
    /// Kernels already emitted, by body and parameter types: equal layers share code.
    pub seen: HashMap<String, usize>,
    /// Buffers whose contents depend only on weights and constants.
    pub fixed_bufs: HashSet<usize>,
    /// Per step: whether it reads only fixed buffers (and so belongs to the prologue).
    step_fixed: Vec<bool>,
    /// Whether the node being lowered reads only fixed buffers.
    node_fixed: bool,
    /// GEMM blocking for the target CPU.
    pub tiling: Tiling,
    /// The graph's meshes, which collectives' groups refer to.
    pub meshes: BTreeMap<String, ProcessMesh>,
    /// A training graph: dropout draws its mask, batch_norm may take its training form.
    pub training: bool,
}

/// A value's buffer and static shape, as op builders see it.
#[derive(Debug, Clone)]
pub(crate) struct Arg {
    pub buf: usize,
    pub shape: Vec<i64>,
    pub dtype: DType,
}

fn elem_of(d: DType) -> Result<Elem, String> {
    match d {
        DType::F32 => Ok(Elem::F32),
        DType::I64 => Ok(Elem::I64),
        DType::Bool => Ok(Elem::Bool),
        other => Err(format!(
            "{} tensors are not compiled (f32, i64, bool)",
            other.name()
        )),
    }
}

impl Builder {
    /// A new temporary buffer.
    pub fn temp(&mut self, name: &str, shape: &[i64], dtype: DType) -> usize {
        self.program.buffers.push(BufferDecl {
            name: name.to_string(),
            dtype,
            shape: shape.iter().map(|&d| d as usize).collect(),
            role: BufferRole::Temp,
        });
        self.program.buffers.len() - 1
    }

    /// Adds a kernel and the step that calls it on `args` (buffer ids, in parameter order).
    pub fn kernel(
        &mut self,
        name: &str,
        args: &[usize],
        body: Body,
        extent: i64,
        grain: i64,
    ) -> Result<(), String> {
        let params = args
            .iter()
            .map(|&b| {
                let d = &self.program.buffers[b];
                Ok((String::new(), elem_of(d.dtype)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let key = format!("{params:?}{body:?}{extent}");
        let k = match self.seen.get(&key) {
            Some(&k) => k,
            None => {
                let k = self.kernels.len();
                let name = format!("k{k}_{}", sanitize(name));
                self.program.kernels.push(name.clone());
                self.kernels.push(Kernel {
                    name,
                    params: params.iter().map(|(_, e)| (String::new(), *e)).collect(),
                    body,
                    extent: extent.max(1),
                    grain: grain.max(1),
                });
                self.seen.insert(key, k);
                k
            }
        };
        self.program
            .steps
            .push(Step::kernel(k, args.to_vec(), extent.max(1), grain.max(1)));
        self.step_fixed.push(self.node_fixed);
        Ok(())
    }

    /// Like [`Builder::kernel`], for a step that reads only fixed buffers (a weight's
    /// layout change): it goes to the prologue, and `out` becomes fixed.
    pub fn fixed_kernel(
        &mut self,
        name: &str,
        args: &[usize],
        body: Body,
        extent: i64,
        out: usize,
    ) -> Result<(), String> {
        let was = std::mem::replace(&mut self.node_fixed, true);
        let r = self.kernel(name, args, body, extent, 1);
        self.node_fixed = was;
        self.fixed_bufs.insert(out);
        r
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Inlines `fused` nodes' function bodies: codegen works on primitive ops.
fn inline_functions(g: &Graph) -> Result<Graph, String> {
    if !g.iter().any(|(_, n)| matches!(n.op, Op::Fused { .. })) {
        return Ok(g.clone());
    }
    // Same module (name, mode, meshes, state) without the bodies it inlines.
    let mut out = g.empty_like();
    out.functions.clear();
    let mut map: HashMap<ValueRef, ValueRef> = HashMap::new();
    let err = |e: oar_ir::NodeError| e.to_string();
    for (id, node) in g.iter() {
        let ins: Vec<ValueRef> = node.inputs.iter().map(|v| map[v]).collect();
        match &node.op {
            Op::Input => {
                map.insert(
                    id.into(),
                    out.add_input(node.name.clone(), node.outputs[0].clone()),
                );
            }
            Op::Fused { func } => {
                let f = g
                    .functions
                    .get(func)
                    .ok_or_else(|| format!("unknown function @{func}"))?;
                let mut fmap: HashMap<ValueRef, ValueRef> = HashMap::new();
                for (k, &i) in f.inputs().iter().enumerate() {
                    fmap.insert(i.into(), ins[k]);
                }
                for (fid, fnode) in f.iter() {
                    if matches!(fnode.op, Op::Input) {
                        continue;
                    }
                    let fins = fnode.inputs.iter().map(|v| fmap[v]).collect();
                    let name = format!("{}.{}", node.name, fnode.name);
                    let nid = out
                        .add_node_typed(fnode.op.clone(), fins, fnode.outputs.clone(), Some(name))
                        .map_err(err)?;
                    for p in 0..fnode.outputs.len() {
                        fmap.insert(ValueRef::new(fid, p as u32), ValueRef::new(nid, p as u32));
                    }
                }
                for (p, o) in f.outputs().iter().enumerate() {
                    map.insert(ValueRef::new(id, p as u32), fmap[o]);
                }
            }
            // op-contract: pass-through (every other op is copied unchanged)
            op => {
                let nid = out
                    .add_node_typed(
                        op.clone(),
                        ins,
                        node.outputs.clone(),
                        Some(node.name.clone()),
                    )
                    .map_err(err)?;
                for p in 0..node.outputs.len() {
                    map.insert(ValueRef::new(id, p as u32), ValueRef::new(nid, p as u32));
                }
            }
        }
    }
    out.set_outputs(g.outputs().iter().map(|o| map[o]).collect());
    Ok(out)
}

fn literal_bytes(lit: &Literal, dtype: DType) -> Vec<u8> {
    match (lit, dtype) {
        (Literal::Floats(v), DType::F32) => {
            v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
        }
        (Literal::Ints(v), DType::F32) => {
            v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
        }
        (Literal::Ints(v), DType::Bool) => v.iter().map(|&x| (x != 0) as u8).collect(),
        (Literal::Floats(v), DType::Bool) => v.iter().map(|&x| (x != 0.0) as u8).collect(),
        (Literal::Ints(v), _) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        (Literal::Floats(v), _) => v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect(),
    }
}

/// Compiles `g` for `cpu` with symbols bound by `bindings` (unbound symbols are 1).
pub fn build_kernels(
    g: &Graph,
    bindings: &BTreeMap<String, u64>,
    cpu: &CpuModel,
) -> Result<Compiled, BuildError> {
    let top = |message: String| BuildError {
        node: g.name.clone(),
        op: "graph".into(),
        message,
    };
    // A training graph compiles like any other: parameters are not load-time constants
    // there (`analysis::weight_only` reads the mode), dropout multiplies by a mask the
    // executor draws per step, and the state updates are copied into their weights
    // (`Program::updates`).
    let training = g.mode == oar_ir::ExecMode::Training;
    let g = inline_functions(g).map_err(top)?;
    let inline = inplace::inline_plan(&g, bindings);
    let mut b = Builder {
        program: Program::default(),
        kernels: Vec::new(),
        buf: HashMap::new(),
        seen: HashMap::new(),
        fixed_bufs: HashSet::new(),
        step_fixed: Vec::new(),
        node_fixed: false,
        tiling: Tiling::for_cpu(cpu),
        meshes: g.meshes.clone(),
        training,
    };
    let mut input_index = 0;
    let weight_only = oar_ir::analysis::weight_only(&g);
    for (id, node) in g.iter() {
        // Nodes computed from weights and constants alone run once, in the prologue.
        let from_fixed = weight_only[id.index()];
        let fail = |message: String| BuildError {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            message,
        };
        // f64 exists for the interpreter's gradient checks; kernels compute in f32.
        if node.outputs.iter().any(|t| t.dtype == oar_ir::DType::F64) {
            return Err(fail(
                "f64 values are not supported by the compiled backend (run f64 graphs, \
                 such as gradient checks, with the interpreter)"
                    .into(),
            ));
        }
        let shapes: Vec<Vec<i64>> = node
            .outputs
            .iter()
            .map(|t| {
                t.shape
                    .eval(bindings, 1)
                    .iter()
                    .map(|&d| d as i64)
                    .collect()
            })
            .collect();
        let role = match &node.op {
            Op::Input => {
                input_index += 1;
                Some(BufferRole::Input(input_index - 1))
            }
            Op::Param(p) => Some(BufferRole::Weight(p.name.clone())),
            Op::Constant(lit) => Some(BufferRole::Constant(literal_bytes(
                lit,
                node.outputs[0].dtype,
            ))),
            Op::Shape => {
                let dims: Vec<i64> = g
                    .value_type(node.inputs[0])
                    .map(|t| {
                        t.shape
                            .eval(bindings, 1)
                            .iter()
                            .map(|&d| d as i64)
                            .collect()
                    })
                    .unwrap_or_default();
                Some(BufferRole::Constant(
                    dims.iter().flat_map(|d| d.to_le_bytes()).collect(),
                ))
            }
            Op::Recv { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
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
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Grad(_)
            | Op::Send { .. } => None,
        };
        if let Some(role) = role {
            elem_of(node.outputs[0].dtype).map_err(fail)?;
            b.program.buffers.push(BufferDecl {
                name: node.name.clone(),
                dtype: node.outputs[0].dtype,
                shape: shapes[0].iter().map(|&d| d as usize).collect(),
                role,
            });
            b.buf.insert(id.into(), b.program.buffers.len() - 1);
            if weight_only[id.index()] {
                b.fixed_bufs.insert(b.program.buffers.len() - 1);
            }
            continue;
        }
        // Views (and dropout when it is the identity: upscale_in_train at inference) share
        // their operand's buffer.
        if node.op.is_view()
            || !training
                && matches!(
                    node.op,
                    Op::Dropout {
                        mode: oar_ir::op::DropoutMode::UpscaleInTrain,
                        ..
                    }
                )
        {
            let src = b.buf[&node.inputs[0]];
            b.buf.insert(id.into(), src);
            continue;
        }
        // Computed in place by its reader's kernel.
        if inline[id.index()] {
            continue;
        }
        let arg = |b: &Builder, v: &ValueRef| -> Result<Arg, BuildError> {
            let t = g
                .value_type(*v)
                .ok_or_else(|| fail(format!("operand {v:?} has no type")))?;
            Ok(Arg {
                buf: *b
                    .buf
                    .get(v)
                    .ok_or_else(|| fail(format!("operand {v:?} has no buffer")))?,
                shape: t
                    .shape
                    .eval(bindings, 1)
                    .iter()
                    .map(|&d| d as i64)
                    .collect(),
                dtype: t.dtype,
            })
        };
        let fused = node.inputs.iter().any(|v| inline[v.node.index()]);
        let mut leaves: Vec<ValueRef> = Vec::new();
        let tree = if fused {
            Some(expr_tree(&g, &inline, id, &mut leaves).map_err(fail)?)
        } else {
            None
        };
        let ins: Vec<Arg> = if fused { &leaves } else { &node.inputs }
            .iter()
            .map(|v| arg(&b, v))
            .collect::<Result<_, _>>()?;
        let mut outs = Vec::new();
        for (p, t) in node.outputs.iter().enumerate() {
            elem_of(t.dtype).map_err(fail)?;
            let name = if p == 0 {
                node.name.clone()
            } else {
                format!("{}#{p}", node.name)
            };
            let buf = b.temp(&name, &shapes[p], t.dtype);
            b.buf.insert(ValueRef::new(id, p as u32), buf);
            outs.push(Arg {
                buf,
                shape: shapes[p].clone(),
                dtype: t.dtype,
            });
        }
        b.node_fixed = from_fixed;
        match &tree {
            Some(t) => {
                let name = format!("fused_{}_{}", node.op.name(), node.name);
                inplace::fused(&mut b, &name, t, &ins, &outs[0])
            }
            None => lower_node(&mut b, &node.name, &node.op, &ins, &outs),
        }
        .map_err(fail)?;
        b.node_fixed = false;
        if from_fixed {
            b.fixed_bufs.extend(outs.iter().map(|o| o.buf));
        }
    }
    // Outputs whose buffer has another shape (a view of an input) get their own copy.
    for o in g.outputs() {
        let t = g.value_type(*o).expect("verified graph");
        let shape: Vec<i64> = t
            .shape
            .eval(bindings, 1)
            .iter()
            .map(|&d| d as i64)
            .collect();
        let src = b.buf[o];
        let decl = &b.program.buffers[src];
        let id = if decl.shape.iter().map(|&d| d as i64).collect::<Vec<_>>() == shape
            && decl.role == BufferRole::Temp
        {
            src
        } else {
            let dst = b.temp("output", &shape, t.dtype);
            let n: i64 = shape.iter().product();
            pointwise::copy(&mut b, src, dst, n, t.dtype).map_err(top)?;
            dst
        };
        b.program.outputs.push(id);
    }
    if training {
        train_ops::state_updates(&mut b, &g).map_err(top)?;
    }
    // Fixed steps depend only on fixed steps, so moving them all first keeps the order valid.
    let (pre, post): (Vec<_>, Vec<_>) = std::mem::take(&mut b.program.steps)
        .into_iter()
        .zip(std::mem::take(&mut b.step_fixed))
        .partition(|(_, f)| *f);
    b.program.prologue = pre.len();
    b.program.steps = pre.into_iter().chain(post).map(|(s, _)| s).collect();
    b.program.scratch_bytes = b.tiling.scratch_bytes();
    b.program.plan_storage();
    Ok(Compiled {
        program: b.program,
        kernels: b.kernels,
        cpu: cpu.clone(),
    })
}

/// The elementwise expression of node `id` with its in-place operands expanded; the
/// stored operands it reads are appended to `leaves` (once each).
fn expr_tree(
    g: &Graph,
    inline: &[bool],
    id: oar_ir::NodeId,
    leaves: &mut Vec<ValueRef>,
) -> Result<inplace::Tree, String> {
    let node = g.node(id);
    let op = inplace::expr_operator(&node.op)
        .ok_or_else(|| format!("internal: `{}` read an operand in place", node.op.name()))?;
    let mut kids = Vec::new();
    for v in &node.inputs {
        kids.push(if inline[v.node.index()] {
            inplace::Operand::Op(Box::new(expr_tree(g, inline, v.node, leaves)?))
        } else {
            let k = leaves.iter().position(|l| l == v).unwrap_or_else(|| {
                leaves.push(*v);
                leaves.len() - 1
            });
            inplace::Operand::Leaf(k)
        });
    }
    Ok(inplace::Tree { op, kids })
}

fn lower_node(
    b: &mut Builder,
    name: &str,
    op: &Op,
    ins: &[Arg],
    outs: &[Arg],
) -> Result<(), String> {
    let node_name = name;
    let name = &format!("{}_{name}", op.name());
    match op {
        Op::Dropout { p, mode, mask_of } if b.training => {
            let stream = mask_of.as_deref().unwrap_or(node_name);
            train_ops::dropout(b, name, stream, *p, *mode, &ins[0], &outs[0])
        }
        Op::BatchNorm {
            eps,
            momentum: Some(m),
        } => train_ops::batch_norm(b, name, *eps, *m, ins, outs),
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::CausalMask { .. }
        | Op::Dropout { .. }
        | Op::BatchNorm { .. } => pointwise::lower(b, name, op, ins, &outs[0]),
        Op::MatMul(_) | Op::FusedMatMul { .. } | Op::Conv2d(_) | Op::FusedConv2d { .. } => {
            contraction::lower(b, name, op, ins, &outs[0])
        }
        Op::LayerNorm { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reduce(_)
        | Op::GlobalPool(_)
        | Op::Pool(_) => norm_reduce_pool::lower(b, name, op, ins, &outs[0]),
        Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice(_)
        | Op::Transpose { .. }
        | Op::BroadcastTo { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::Embedding => data_movement::lower(b, name, op, ins, outs),
        Op::Grad(g) => data_movement::lower_grad(b, name, g, ins, &outs[0]),
        // conv2d's data gradient; a reference loop nest like the gradient ops.
        Op::ConvTranspose2d(t) => grad_ops::conv_transpose(b, name, t, ins, &outs[0]),
        Op::Resize(r) => resize::lower(b, name, r, &ins[0], &outs[0]),
        // NMS is a sort and a data-dependent greedy walk, not a loop nest, and the packaged
        // executor (package/runtime.c) runs kernel steps only: no host-call escape yet.
        Op::Nms(_) => Err(format!(
            "`{}` has no CPU kernel: detection post-processing runs in the interpreter \
             (`oar run`); the compiled executor has no host-op step yet",
            op.name()
        )),
        Op::DeformConv2d(_) => {
            Err("`deform_conv2d` has no CPU kernel yet (the interpreter runs it)".to_string())
        }
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::Shape
        | Op::Fused { .. } => Err(format!("`{}` has no CPU kernel yet", op.name())),
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::Send { .. }
        | Op::Recv { .. } => comm::lower(b, op, ins, outs),
    }
}
