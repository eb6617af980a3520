//! The partitioner: per-rank graphs with local shapes and collectives inserted where
//! placements disagree. Placements start from hints on inputs and parameters and propagate
//! forward op by op (sharding completion); each op's rule says what it needs from its
//! operands on each mesh axis and what placement its result has. Operands that do not match
//! are resharded: partial → replicated by all-reduce, sharded → replicated by all-gather,
//! replicated → sharded by a local slice. Any op without a sharding rule runs replicated, so
//! every graph partitions; graph outputs are replicated on every rank.

use super::sharding_rules::rule;
use oar_ir::dist::{Placement, ProcessMesh};
use oar_ir::op::{CommGroup, Op, ReshapeDim, SliceAttrs};
use oar_ir::{Dim, Graph, TensorType, ValueRef};
use std::collections::BTreeMap;

/// Placements of inputs and parameters, by name; one placement per mesh axis.
#[derive(Debug, Clone, Default)]
pub struct ShardingHints {
    pub inputs: BTreeMap<String, Vec<Placement>>,
    pub params: BTreeMap<String, Vec<Placement>>,
}

/// One rank's graph and how its inputs and parameters are sliced from the global ones.
#[derive(Debug, Clone)]
pub struct RankGraph {
    pub rank: u64,
    pub graph: Graph,
    /// Placement of each graph input (in order) and each parameter (by name).
    pub input_placements: Vec<Vec<Placement>>,
    pub param_placements: BTreeMap<String, Vec<Placement>>,
    pub collectives: usize,
}

/// Replaces symbolic dims by values: partitioning works on concrete shapes.
pub fn specialize(g: &Graph, b: &BTreeMap<String, u64>) -> Result<Graph, String> {
    let fix = |d: &Dim| -> Result<Dim, String> {
        for s in d.symbols() {
            if !b.contains_key(s) {
                return Err(format!("symbol `{s}` needs a value"));
            }
        }
        Ok(Dim::Static(d.eval(b, 1)))
    };
    let fix_ty = |t: &TensorType| -> Result<TensorType, String> {
        Ok(TensorType::new(
            t.dtype,
            t.shape.0.iter().map(fix).collect::<Result<_, _>>()?,
        ))
    };
    let mut out = Graph::new(g.name.clone());
    out.meshes = g.meshes.clone();
    out.functions = g.functions.clone();
    let mut map: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    for (id, n) in g.iter() {
        let ins: Vec<ValueRef> = n.inputs.iter().map(|v| map[v]).collect();
        let new = match &n.op {
            Op::Input => out.add_input(n.name.clone(), fix_ty(&n.outputs[0])?).node,
            op if op.is_source() => {
                let tys = n.outputs.iter().map(fix_ty).collect::<Result<_, _>>()?;
                out.add_node_typed(op.clone(), ins, tys, Some(n.name.clone()))
                    .map_err(|e| e.to_string())?
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
                    .map_err(|e| e.to_string())?
            }
            op => out
                .add_node(op.clone(), ins, Some(n.name.clone()))
                .map_err(|e| e.to_string())?,
        };
        for p in 0..n.outputs.len() as u32 {
            map.insert(ValueRef::new(id, p), ValueRef::new(new, p));
        }
    }
    out.set_outputs(g.outputs().iter().map(|v| map[v]).collect());
    Ok(out)
}

/// The local type of a global type under per-axis placements.
fn local_type(t: &TensorType, pl: &[Placement], mesh: &ProcessMesh) -> Result<TensorType, String> {
    let mut dims = t.shape.0.clone();
    for (a, p) in pl.iter().enumerate() {
        if let Placement::Shard(d) = p {
            let parts = mesh.shape[a];
            dims[*d] = dims
                .get(*d)
                .and_then(|x| x.div_exact(&Dim::Static(parts)))
                .ok_or_else(|| {
                    format!("{t}: dim {d} does not split evenly over {parts} devices")
                })?;
        }
    }
    Ok(TensorType::new(t.dtype, dims))
}

struct RankBuilder<'a> {
    mesh_name: &'a str,
    mesh: &'a ProcessMesh,
    coords: Vec<u64>,
    g: Graph,
    collectives: usize,
}

impl RankBuilder<'_> {
    fn add(&mut self, op: Op, ins: Vec<ValueRef>) -> Result<ValueRef, String> {
        if op.comm_group().is_some() {
            self.collectives += 1;
        }
        self.g
            .add_node(op, ins, None)
            .map(ValueRef::from)
            .map_err(|e| e.to_string())
    }

    /// Moves a value from `from` to `to` on mesh axis `a`.
    fn reshard(
        &mut self,
        v: ValueRef,
        a: usize,
        from: Placement,
        to: Placement,
    ) -> Result<ValueRef, String> {
        use Placement::*;
        let group = CommGroup {
            mesh: self.mesh_name.to_string(),
            axis: a,
        };
        let v = match from {
            _ if from == to => return Ok(v),
            Partial(op) => self.add(
                Op::AllReduce {
                    op,
                    group: group.clone(),
                },
                vec![v],
            )?,
            Shard(d) => self.add(
                Op::AllGather {
                    axis: d as i64,
                    group: group.clone(),
                },
                vec![v],
            )?,
            Replicate => v,
        };
        match to {
            Replicate => Ok(v),
            Shard(d) => {
                let t = self.g.value_type(v).cloned().ok_or("missing type")?;
                let full = t.shape.0[d].as_static().ok_or("sharding a symbolic dim")? as i64;
                let len = full / self.mesh.shape[a] as i64;
                let start = self.coords[a] as i64 * len;
                let s = SliceAttrs {
                    axes: vec![d as i64],
                    starts: vec![start],
                    ends: vec![start + len],
                    steps: vec![1],
                };
                self.add(Op::Slice(s), vec![v])
            }
            Partial(_) => Err("cannot make a value partial".into()),
        }
    }
}

/// A node name worth keeping: automatic (numeric) names are re-assigned in the new graph.
fn kept(name: &str) -> Option<String> {
    (!name.chars().all(|c| c.is_ascii_digit())).then(|| name.to_string())
}

/// Partitions a graph with static shapes over `mesh` (declared in the graph as `mesh_name`).
pub fn partition(
    g: &Graph,
    mesh_name: &str,
    hints: &ShardingHints,
) -> Result<Vec<RankGraph>, String> {
    let mesh = g
        .meshes
        .get(mesh_name)
        .ok_or_else(|| format!("unknown mesh @{mesh_name}"))?;
    let axes = mesh.shape.len();
    let mut out = Vec::new();
    for (pos, &rank) in mesh.device_ids.iter().enumerate() {
        let mut coords = vec![0u64; axes];
        let mut rest = pos as u64;
        for d in (0..axes).rev() {
            coords[d] = rest % mesh.shape[d];
            rest /= mesh.shape[d];
        }
        let mut rb = RankBuilder {
            mesh_name,
            mesh,
            coords,
            g: Graph::new(format!("{}_rank{rank}", g.name)),
            collectives: 0,
        };
        rb.g.meshes.insert(mesh_name.to_string(), mesh.clone());
        let mut vals: BTreeMap<ValueRef, (ValueRef, Vec<Placement>)> = BTreeMap::new();
        let mut input_placements = Vec::new();
        let mut param_placements = BTreeMap::new();
        for (id, n) in g.iter() {
            let gv = ValueRef::new(id, 0);
            match &n.op {
                Op::Input => {
                    let pl = hints
                        .inputs
                        .get(&n.name)
                        .cloned()
                        .unwrap_or(vec![Placement::Replicate; axes]);
                    let v =
                        rb.g.add_input(n.name.clone(), local_type(&n.outputs[0], &pl, mesh)?);
                    input_placements.push(pl.clone());
                    vals.insert(gv, (v, pl));
                    continue;
                }
                Op::Param(p) => {
                    let pl = hints
                        .params
                        .get(&p.name)
                        .cloned()
                        .unwrap_or(vec![Placement::Replicate; axes]);
                    let t = local_type(&n.outputs[0], &pl, mesh)?;
                    let id2 =
                        rb.g.add_node_typed(n.op.clone(), vec![], vec![t], kept(&n.name))
                            .map_err(|e| e.to_string())?;
                    param_placements.insert(p.name.clone(), pl.clone());
                    vals.insert(gv, (id2.into(), pl));
                    continue;
                }
                op if op.is_source() => {
                    let id2 =
                        rb.g.add_node_typed(op.clone(), vec![], n.outputs.clone(), kept(&n.name))
                            .map_err(|e| e.to_string())?;
                    vals.insert(gv, (id2.into(), vec![Placement::Replicate; axes]));
                    continue;
                }
                _ => {}
            }
            let ins_t: Vec<TensorType> = n
                .inputs
                .iter()
                .filter_map(|v| g.value_type(*v).cloned())
                .collect();
            let mut locals: Vec<ValueRef> = Vec::new();
            let mut pls: Vec<Vec<Placement>> = Vec::new();
            for v in &n.inputs {
                let (lv, pl) = vals
                    .get(v)
                    .cloned()
                    .ok_or_else(|| format!("%{}: operand {v} has no value", n.name))?;
                locals.push(lv);
                pls.push(pl);
            }
            let mut out_pl = Vec::with_capacity(axes);
            for a in 0..axes {
                let here: Vec<Placement> = pls.iter().map(|p| p[a]).collect();
                let r = rule(&n.op, &ins_t, &n.outputs, &here, mesh.shape[a]);
                for (k, need) in r.need.iter().enumerate() {
                    if pls[k][a] != *need {
                        locals[k] = rb.reshard(locals[k], a, pls[k][a], *need)?;
                        pls[k][a] = *need;
                    }
                }
                out_pl.push(r.out);
            }
            let local_out: Vec<TensorType> = n
                .outputs
                .iter()
                .map(|t| local_type(t, &out_pl, mesh))
                .collect::<Result<_, _>>()?;
            let op = match &n.op {
                // Reshape targets are global sizes: use the local ones.
                Op::Reshape { .. } => Op::Reshape {
                    shape: local_out[0]
                        .shape
                        .0
                        .iter()
                        .cloned()
                        .map(ReshapeDim::Dim)
                        .collect(),
                },
                op => op.clone(),
            };
            let id2 =
                rb.g.add_node(op, locals, kept(&n.name))
                    .map_err(|e| format!("%{}: {}", n.name, e.message))?;
            if rb.g.node(id2).outputs != local_out {
                return Err(format!(
                    "%{} ({}): local result {:?} but the placements say {:?}",
                    n.name,
                    n.op.name(),
                    rb.g.node(id2).outputs,
                    local_out
                ));
            }
            for p in 0..n.outputs.len() as u32 {
                vals.insert(
                    ValueRef::new(id, p),
                    (ValueRef::new(id2, p), out_pl.clone()),
                );
            }
        }
        // Every rank ends with the whole outputs.
        let mut outs = Vec::new();
        for v in g.outputs() {
            let (mut lv, pl) = vals[v].clone();
            for (a, p) in pl.iter().enumerate() {
                lv = rb.reshard(lv, a, *p, Placement::Replicate)?;
            }
            outs.push(lv);
        }
        rb.g.set_outputs(outs);
        oar_ir::verify(&rb.g).map_err(|e| e.to_string())?;
        out.push(RankGraph {
            rank,
            graph: rb.g,
            input_placements,
            param_placements,
            collectives: rb.collectives,
        });
    }
    Ok(out)
}
