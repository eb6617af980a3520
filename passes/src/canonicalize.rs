//! canonicalize: constant folding, identity elimination, CSE and DCE, repeated to a fixpoint.
//!
//! Folding evaluates nodes whose operands are all literal constants with the reference
//! interpreter, and `shape` of a statically shaped value from its type, so the shape
//! sub-graphs exported models carry (shape → gather/slice → concat, shape arithmetic)
//! collapse to constants; results are kept up to `FOLD_LIMIT` elements.
//! Parameters are never folded here: their values are not part of the graph.

use crate::pass::{Pass, PassContext, PassFailure};
use crate::rebuild::Rebuilder;
use oar_ir::op::{BinaryOp, DropoutMode, Literal, LoadTime, Op};
use oar_ir::{ExecMode, Graph, NodeError, NodeId, ValueRef};
use oar_runtime::{HostTensor, TensorData};
use std::collections::HashMap;

/// Largest folded constant, in elements.
pub const FOLD_LIMIT: u64 = 1 << 16;

/// The canonicalize pass.
pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }
    fn description(&self) -> &'static str {
        "constant folding, identity elimination, CSE, DCE"
    }
    fn run(&self, mut g: Graph, _cx: &PassContext) -> Result<(Graph, Vec<String>), PassFailure> {
        let mut totals = [0usize; 4];
        for _ in 0..8 {
            let (g1, folded) = fold_constants(&g)?;
            let (g2, ids) = eliminate_identities(&g1)?;
            let (g3, cse) = cse(&g2)?;
            let (g4, dead) = dce(&g3)?;
            g = g4;
            for (t, n) in totals.iter_mut().zip([folded, ids, cse, dead]) {
                *t += n;
            }
            if folded + ids + cse + dead == 0 {
                break;
            }
        }
        let notes = vec![format!(
            "folded {} nodes, removed {} identities, merged {} duplicates, removed {} dead nodes",
            totals[0], totals[1], totals[2], totals[3]
        )];
        Ok((g, notes))
    }
}

fn literal_of(g: &Graph, v: ValueRef) -> Option<(&Literal, &oar_ir::TensorType)> {
    if let Op::Constant(l) = &g.node(v.node).op {
        Some((l, &g.node(v.node).outputs[0]))
    } else {
        None
    }
}

fn tensor_of(lit: &Literal, ty: &oar_ir::TensorType) -> Option<HostTensor> {
    let shape: Vec<usize> = ty.shape.as_static()?.iter().map(|&d| d as usize).collect();
    Some(match (lit, ty.dtype) {
        (Literal::Floats(v), oar_ir::DType::F32) => {
            HostTensor::f32(shape, v.iter().map(|&x| x as f32).collect())
        }
        (Literal::Ints(v), oar_ir::DType::I64) => HostTensor::i64(shape, v.clone()),
        (Literal::Ints(v), oar_ir::DType::Bool) => {
            HostTensor::bool(shape, v.iter().map(|&x| x != 0).collect())
        }
        _ => return None,
    })
}

fn literal_from(t: &HostTensor) -> Literal {
    match &t.data {
        TensorData::F32(v) => Literal::Floats(v.iter().map(|&x| x as f64).collect()),
        TensorData::F64(v) => Literal::Floats(v.clone()),
        TensorData::I64(v) => Literal::Ints(v.clone()),
        TensorData::Bool(v) => Literal::Ints(v.iter().map(|&b| b as i64).collect()),
    }
}

/// Evaluates one node on literal operands with the interpreter.
fn evaluate(g: &Graph, id: NodeId) -> Option<Vec<Literal>> {
    let n = g.node(id);
    let mut mini = Graph::new("fold");
    mini.meshes = g.meshes.clone();
    let mut ins = Vec::new();
    for v in &n.inputs {
        let (lit, ty) = literal_of(g, *v)?;
        let c = mini
            .add_node_typed(Op::Constant(lit.clone()), vec![], vec![ty.clone()], None)
            .ok()?;
        ins.push(ValueRef::from(c));
    }
    let out = mini
        .add_node_typed(n.op.clone(), ins, n.outputs.clone(), None)
        .ok()?;
    mini.set_outputs(
        (0..n.outputs.len() as u32)
            .map(|p| ValueRef::new(out, p))
            .collect(),
    );
    let res = oar_runtime::run(&mini, &[], &Default::default()).ok()?;
    Some(res.iter().map(literal_from).collect())
}

fn foldable(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    // Ops computable ahead of run time from known inputs (not sources, communication or
    // training randomness): the same rule as weight-only analysis.
    n.op.load_time(g.mode) == LoadTime::IfInputsKnown
        && !n.inputs.is_empty()
        && n.inputs.iter().all(|v| {
            literal_of(g, *v)
                .and_then(|(l, t)| tensor_of(l, t))
                .is_some()
        })
        && n.outputs.iter().all(|t| {
            t.shape.numel().as_static().is_some_and(|k| k <= FOLD_LIMIT)
                && matches!(
                    t.dtype,
                    oar_ir::DType::F32 | oar_ir::DType::I64 | oar_ir::DType::Bool
                )
        })
}

/// Replaces nodes computed from literals with literal constants.
pub fn fold_constants(g: &Graph) -> Result<(Graph, usize), NodeError> {
    let mut r = Rebuilder::new(g);
    let mut count = 0;
    for (id, n) in g.iter() {
        if r.is_mapped(id) {
            continue;
        }
        // A shape only needs the operand's type.
        let folded = if let Op::Shape = &n.op {
            g.value_type(n.inputs[0])
                .and_then(|t| t.shape.as_static())
                .map(|d| vec![Literal::Ints(d.iter().map(|&x| x as i64).collect())])
        } else if foldable(g, id) {
            evaluate(g, id)
        } else {
            None
        };
        match folded {
            Some(lits) => {
                let mut vals = Vec::new();
                for (lit, ty) in lits.into_iter().zip(&n.outputs) {
                    let c = r.add_source(Op::Constant(lit), ty.clone(), Some(&n.name))?;
                    vals.push(ValueRef::from(c));
                }
                r.alias(id, vals);
                count += 1;
            }
            None => {
                r.copy(id)?;
            }
        }
    }
    Ok((r.finish(), count))
}

fn scalar_value(g: &Graph, v: ValueRef) -> Option<f64> {
    match literal_of(g, v)? {
        (Literal::Floats(f), _) if f.len() == 1 => Some(f[0]),
        (Literal::Ints(i), _) if i.len() == 1 => Some(i[0] as f64),
        _ => None,
    }
}

/// The input a node merely passes through, if it is an identity here.
fn identity_source(g: &Graph, id: NodeId) -> Option<ValueRef> {
    let n = g.node(id);
    let first = *n.inputs.first()?;
    let same_type = n.outputs.len() == 1 && g.value_type(first) == Some(&n.outputs[0]);
    let passes = match &n.op {
        // Dropout is an identity only at inference and only when training did the scaling.
        Op::Dropout { mode, .. } => {
            g.mode == ExecMode::Inference && *mode == DropoutMode::UpscaleInTrain
        }
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::BroadcastTo { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Cast { .. } => same_type,
        Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
        Op::Concat { .. } => n.inputs.len() == 1,
        Op::Slice(s) => {
            same_type && s.starts.iter().all(|&x| x == 0) && s.steps.iter().all(|&x| x == 1)
        }
        Op::Binary(BinaryOp::Mul) => same_type && scalar_value(g, n.inputs[1]) == Some(1.0),
        Op::Binary(BinaryOp::Add | BinaryOp::Sub) => {
            same_type && scalar_value(g, n.inputs[1]) == Some(0.0)
        }
        Op::Binary(BinaryOp::Div) => same_type && scalar_value(g, n.inputs[1]) == Some(1.0),
        Op::Binary(
            BinaryOp::Pow
            | BinaryOp::Max
            | BinaryOp::Min
            | BinaryOp::Equal
            | BinaryOp::Less
            | BinaryOp::Greater,
        )
        | Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        | Op::Unary(_)
        | Op::Where
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
        | Op::Split { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::Embedding
        | Op::Shape
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::FusedConv2d { .. }
        | Op::FusedMatMul { .. }
        | Op::Fused { .. }
        | Op::Grad(_)
        | Op::Send { .. } => false,
    };
    passes.then_some(first)
}

/// Forwards identities' inputs to their users.
pub fn eliminate_identities(g: &Graph) -> Result<(Graph, usize), NodeError> {
    let mut r = Rebuilder::new(g);
    let mut count = 0;
    for (id, _) in g.iter() {
        if r.is_mapped(id) {
            continue;
        }
        match identity_source(g, id) {
            Some(src) => {
                let v = r.value(src);
                r.alias(id, vec![v]);
                count += 1;
            }
            None => {
                r.copy(id)?;
            }
        }
    }
    Ok((r.finish(), count))
}

/// Merges nodes with the same op on the same operands (constants by value).
pub fn cse(g: &Graph) -> Result<(Graph, usize), NodeError> {
    let mut r = Rebuilder::new(g);
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    let mut count = 0;
    for (id, n) in g.iter() {
        if r.is_mapped(id) {
            continue;
        }
        // Sources other than constants are distinct values however alike they print,
        // communication must run as often as written, and each training dropout draws its
        // own mask.
        let distinct = n.op.has_effects()
            || n.op.is_source() && !matches!(n.op, Op::Constant(_))
            || g.mode == ExecMode::Training && matches!(n.op, Op::Dropout { .. });
        let key = if distinct || n.dist.is_some() || n.device.is_some() {
            None
        } else {
            let ins: Vec<String> = n.inputs.iter().map(|v| r.value(*v).to_string()).collect();
            Some(format!("{:?}|{}|{:?}", n.op, ins.join(","), n.outputs))
        };
        match key.as_ref().and_then(|k| seen.get(k)) {
            Some(&prev) => {
                let vals = (0..n.outputs.len() as u32)
                    .map(|p| ValueRef::new(prev, p))
                    .collect();
                r.alias(id, vals);
                count += 1;
            }
            None => {
                let new = r.copy(id)?;
                if let Some(k) = key {
                    seen.insert(k, new);
                }
            }
        }
    }
    Ok((r.finish(), count))
}

/// Removes nodes no output or side effect depends on.
pub fn dce(g: &Graph) -> Result<(Graph, usize), NodeError> {
    let mut live = vec![false; g.len()];
    for v in g.outputs() {
        live[v.node.index()] = true;
    }
    for (id, n) in g.iter() {
        if n.op.has_effects() || matches!(n.op, Op::Input) {
            live[id.index()] = true;
        }
    }
    for (id, n) in g.iter().collect::<Vec<_>>().into_iter().rev() {
        if live[id.index()] {
            for v in &n.inputs {
                live[v.node.index()] = true;
            }
        }
    }
    let mut r = Rebuilder::new(g);
    let mut count = 0;
    for (id, _) in g.iter() {
        if r.is_mapped(id) {
            continue;
        }
        if live[id.index()] {
            r.copy(id)?;
        } else {
            count += 1;
        }
    }
    Ok((r.finish(), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_subgraphs_fold_to_constants() {
        let text = "graph @g(%x: f32[2,3,4]) -> (i64[2], f32[2,12]) {
  %s = shape(%x) : i64[3]
  %i = constant {value=[0]} : i64[1]
  %b = gather(%s, %i) {axis=0} : i64[1]
  %k = constant {value=[12]} : i64[1]
  %t = concat(%b, %k) {axis=0} : i64[2]
  %y = reshape(%x) {shape=[2, 12]} : f32[2,12]
  %z = dropout(%y) {p=0.5} : f32[2,12]
  return %t, %z
}
";
        let g = oar_ir::parse(text).unwrap();
        let (out, _) = Canonicalize.run(g, &PassContext::host()).unwrap();
        let ops: Vec<&str> = out.nodes().iter().map(|n| n.op.name()).collect();
        assert_eq!(
            ops,
            ["input", "constant", "reshape"],
            "{}",
            oar_ir::print(&out)
        );
        let t = out.node(out.outputs()[0].node);
        assert_eq!(t.op, Op::Constant(Literal::Ints(vec![2, 12])));
    }
}
