//! Binds symbolic dims: partitioning works on concrete shapes.

use super::PartitionError;
use oar_ir::op::{Op, ReshapeDim};
use oar_ir::{Dim, Graph, TensorType, ValueRef};
use std::collections::BTreeMap;

/// Replaces symbolic dims by values; distribution attributes and devices are kept.
pub fn specialize(g: &Graph, b: &BTreeMap<String, u64>) -> Result<Graph, PartitionError> {
    let fix = |d: &Dim| -> Result<Dim, PartitionError> {
        for s in d.symbols() {
            if !b.contains_key(s) {
                return Err(PartitionError::UnboundSymbol(s.to_string()));
            }
        }
        Ok(Dim::Static(d.eval(b, 1)))
    };
    let fix_ty = |t: &TensorType| -> Result<TensorType, PartitionError> {
        Ok(TensorType::new(
            t.dtype,
            t.shape.0.iter().map(fix).collect::<Result<_, _>>()?,
        ))
    };
    let bad = |e: oar_ir::NodeError| PartitionError::Graph(e.to_string());
    // Mode, meshes, functions and state updates (the last outputs) carry over.
    let mut out = g.empty_like();
    let mut map: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    for (id, n) in g.iter() {
        let ins: Vec<ValueRef> = n.inputs.iter().map(|v| map[v]).collect();
        let new = match &n.op {
            Op::Input => out.add_input(n.name.clone(), fix_ty(&n.outputs[0])?).node,
            // op-contract: pass-through (sources keep their declared, now static, types)
            op if op.is_source() => {
                let tys = n.outputs.iter().map(fix_ty).collect::<Result<_, _>>()?;
                out.add_node_typed(op.clone(), ins, tys, Some(n.name.clone()))
                    .map_err(bad)?
            }
            Op::Reshape { shape } => {
                let shape = shape
                    .iter()
                    .map(|d| match d {
                        ReshapeDim::Infer => Ok(ReshapeDim::Infer),
                        ReshapeDim::Dim(d) => fix(d).map(ReshapeDim::Dim),
                    })
                    .collect::<Result<_, _>>()?;
                out.add_node(Op::Reshape { shape }, ins, Some(n.name.clone()))
                    .map_err(bad)?
            }
            // op-contract: pass-through (every other op is copied and re-inferred)
            op => out
                .add_node(op.clone(), ins, Some(n.name.clone()))
                .map_err(bad)?,
        };
        let node = out.node_mut(new);
        node.dist = n.dist.clone();
        node.device = n.device;
        for p in 0..n.outputs.len() as u32 {
            map.insert(ValueRef::new(id, p), ValueRef::new(new, p));
        }
    }
    out.set_outputs(g.outputs().iter().map(|v| map[v]).collect());
    Ok(out)
}
