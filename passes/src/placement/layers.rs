//! A graph as a chain of layers, and each layer's training time per sample on each device
//! kind from the roofline cost model.
//!
//! Grouping rule (documented in docs/heterps.md):
//! 1. a parameter, and an op whose name has a dot (the zoo's CTR models name every op
//!    `<layer>.<op>_<index>`), belongs to the layer its name names: the name up to its
//!    first all-digit segment, inclusive (`blocks.3.dw.weight` → `blocks.3`), or else its
//!    first segment (`fc0.weight`, `fc0.matmul_12` → `fc0`; `emb.weight` → `emb`);
//! 2. another op (default names are numbers) belongs to the layer of the first parameter
//!    it reads, else to the latest layer among its inputs; an op that reads only graph
//!    inputs and constants to the layer of its first consumer;
//! 3. layers are ordered by the data flowing between them (ties in graph order); values
//!    flowing both ways between two layers are an error (the graph is not a chain).
//!
//! Per layer and kind, seconds per sample = Σ over its ops of the roofline time at the
//! replica batch / batch, × 3 for training (backward ≈ two forward passes), except sparse
//! lookups (an `embedding` or `gather` reading a parameter table), which are memory-bound:
//! the forward reads the rows touched (the op's bytes: ids + rows read and written), the
//! backward writes each touched row's gradient and the optimizer (Adagrad) reads and writes
//! the row and its accumulator — 5 more row transfers — all at the kind's memory bandwidth
//! × the cost model's memory efficiency, plus three kernel launches.

use super::problem::Layer;
use super::PlacementError;
use crate::roofline::CostModel;
use oar_ir::cluster::DeviceSpec;
use oar_ir::op::{op_cost, Op};
use oar_ir::{Graph, Node, TensorType};
use std::collections::BTreeMap;

/// Training passes of a dense op: forward plus a backward of about twice its work.
const TRAINING_FACTOR: f64 = 3.0;
/// Row transfers a sparse lookup adds in training: gradient row written, then the table row
/// and its Adagrad accumulator each read and written by the optimizer.
const SPARSE_BACKWARD_ROW_PASSES: f64 = 5.0;
/// Optimizer state stored beside a sparse table (Adagrad: one accumulator per weight).
const SPARSE_STATE_FACTOR: f64 = 2.0;

/// The layer a parameter name names (rule 1).
pub fn layer_key(param: &str) -> String {
    let parts: Vec<&str> = param.split('.').collect();
    match parts
        .iter()
        .position(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        Some(i) if i > 0 => parts[..=i].join("."),
        _ => parts[0].to_string(),
    }
}

/// Whether `n` is a sparse lookup: an `embedding` of a parameter table (what the zoo's CTR
/// models use; an imported model's `gather` of a table is priced as a dense op).
fn is_sparse_lookup(g: &Graph, n: &Node) -> bool {
    matches!(n.op, Op::Embedding)
        && n.inputs
            .first()
            .is_some_and(|v| matches!(g.node(v.node).op, Op::Param(_)))
}

/// Which layer (by index into the returned names) each node belongs to; `None` for graph
/// inputs, constants and ops no layer consumes.
fn assign(g: &Graph) -> (Vec<Option<usize>>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut of: Vec<Option<usize>> = vec![None; g.len()];
    for (id, n) in g.iter() {
        let mut named = |name: &str| {
            let key = layer_key(name);
            let next = names.len();
            let i = *index.entry(key.clone()).or_insert(next);
            if i == next {
                names.push(key);
            }
            Some(i)
        };
        let layer = if let Op::Param(p) = &n.op {
            named(&p.name)
        } else if n.op.is_source() {
            None
        } else if n.name.contains('.') {
            named(&n.name)
        } else {
            let by_param = n
                .inputs
                .iter()
                .find(|v| matches!(g.node(v.node).op, Op::Param(_)))
                .and_then(|v| of[v.node.index()]);
            by_param.or_else(|| n.inputs.iter().filter_map(|v| of[v.node.index()]).max())
        };
        of[id.index()] = layer;
    }
    // Rule 2's last case: ops on inputs alone join their first consumer's layer.
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); g.len()];
    for (id, n) in g.iter() {
        for v in &n.inputs {
            consumers[v.node.index()].push(id.index());
        }
    }
    for (id, n) in g.iter().collect::<Vec<_>>().into_iter().rev() {
        if of[id.index()].is_none() && !n.op.is_source() {
            of[id.index()] = consumers[id.index()].iter().find_map(|&c| of[c]);
        }
    }
    (of, names)
}

/// Layer indices in chain order (rule 3).
fn order(g: &Graph, of: &[Option<usize>], names: &[String]) -> Result<Vec<usize>, PlacementError> {
    let n = names.len();
    let mut edges = vec![vec![false; n]; n];
    for (id, node) in g.iter() {
        let Some(to) = of[id.index()] else { continue };
        if node.op.is_source() {
            continue;
        }
        for v in &node.inputs {
            if matches!(g.node(v.node).op, Op::Param(_)) {
                continue;
            }
            if let Some(from) = of[v.node.index()] {
                if from != to {
                    if edges[to][from] {
                        return Err(PlacementError::NotAChain {
                            a: names[from].clone(),
                            b: names[to].clone(),
                        });
                    }
                    edges[from][to] = true;
                }
            }
        }
    }
    let mut indegree: Vec<usize> = (0..n)
        .map(|j| (0..n).filter(|&i| edges[i][j]).count())
        .collect();
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(next) = (0..n).find(|&i| !done[i] && indegree[i] == 0) else {
            let stuck: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
            return Err(PlacementError::NotAChain {
                a: names[stuck[0]].clone(),
                b: names[*stuck.last().unwrap_or(&stuck[0])].clone(),
            });
        };
        done[next] = true;
        out.push(next);
        for j in 0..n {
            if edges[next][j] {
                indegree[j] -= 1;
            }
        }
    }
    Ok(out)
}

fn input_types(g: &Graph, n: &Node) -> Vec<TensorType> {
    n.inputs
        .iter()
        .filter_map(|v| g.value_type(*v).cloned())
        .collect()
}

/// Training seconds of one node at the bound batch on a device priced by `m`.
fn node_seconds(g: &Graph, n: &Node, m: &CostModel, b: &BTreeMap<String, u64>) -> f64 {
    if n.op.is_free() {
        return 0.0;
    }
    if is_sparse_lookup(g, n) {
        let ins = input_types(g, n);
        let forward = op_cost(&n.op, &ins, &n.outputs, b, 1).bytes as f64;
        let rows: f64 = n.outputs.iter().map(|t| t.bytes(b, 1) as f64).sum();
        let bytes = forward + SPARSE_BACKWARD_ROW_PASSES * rows;
        return bytes / (m.bandwidth * m.memory_efficiency) + 3.0 * m.launch_s;
    }
    TRAINING_FACTOR * m.node_time(g, n, b)
}

/// The graph as a chain of layers with their per-kind times at `batch` samples per replica
/// (`bindings` must bind the graph's batch symbol to `batch`; other symbols as the model
/// needs).
pub fn layer_chain(
    g: &Graph,
    devices: &[DeviceSpec],
    bindings: &BTreeMap<String, u64>,
    batch: u64,
) -> Result<Vec<Layer>, PlacementError> {
    let (of, names) = assign(g);
    if names.is_empty() {
        return Err(PlacementError::NoLayers {
            model: g.name.clone(),
        });
    }
    let chain = order(g, &of, &names)?;
    let mut position = vec![0usize; names.len()];
    for (p, &l) in chain.iter().enumerate() {
        position[l] = p;
    }
    let models: Vec<CostModel> = devices.iter().map(CostModel::for_device).collect();
    let batch_f = batch.max(1) as f64;
    let mut layers: Vec<Layer> = chain
        .iter()
        .map(|&l| Layer {
            name: names[l].clone(),
            seconds_per_sample: vec![0.0; devices.len()],
            dense_param_bytes: 0.0,
            sparse_table_bytes: 0.0,
            cut_bytes_after: 0.0,
            sparse: false,
        })
        .collect();
    // Tables: parameters read by a sparse lookup.
    let mut table = vec![false; g.len()];
    for (_, n) in g.iter() {
        if is_sparse_lookup(g, n) {
            if let Some(v) = n.inputs.first() {
                table[v.node.index()] = true;
            }
        }
    }
    // The last layer position that reads each node's values (cuts it crosses).
    let mut last_use: Vec<Option<usize>> = vec![None; g.len()];
    for (id, n) in g.iter() {
        let Some(l) = of[id.index()] else { continue };
        for v in &n.inputs {
            let u = &mut last_use[v.node.index()];
            *u = Some(u.map_or(position[l], |p: usize| p.max(position[l])));
        }
    }
    for (id, n) in g.iter() {
        let layer = of[id.index()].map(|l| position[l]);
        if let (Some(p), Op::Param(_)) = (layer, &n.op) {
            let bytes: f64 = n.outputs.iter().map(|t| t.bytes(bindings, 1) as f64).sum();
            if table[id.index()] {
                layers[p].sparse_table_bytes += SPARSE_STATE_FACTOR * bytes;
                layers[p].sparse = true;
            } else {
                layers[p].dense_param_bytes += bytes;
            }
            continue;
        }
        if matches!(n.op, Op::Constant(_)) {
            continue;
        }
        // Values (and graph inputs, produced "before" the chain) cross every cut between
        // their producer and their last reader.
        if let Some(last) = last_use[id.index()] {
            let from = layer.unwrap_or(0);
            let bytes: f64 = n.outputs.iter().map(|t| t.bytes(bindings, 1) as f64).sum();
            for cut in layers.iter_mut().take(last).skip(from) {
                cut.cut_bytes_after += bytes / batch_f;
            }
        }
        let Some(p) = layer else { continue };
        for (k, m) in models.iter().enumerate() {
            layers[p].seconds_per_sample[k] += node_seconds(g, n, m, bindings) / batch_f;
        }
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_keys_follow_the_naming_rule() {
        assert_eq!(layer_key("fc0.weight"), "fc0");
        assert_eq!(layer_key("emb.weight"), "emb");
        assert_eq!(layer_key("blocks.3.dw.weight"), "blocks.3");
        assert_eq!(layer_key("encoder.layers.11.ffn.w1"), "encoder.layers.11");
        assert_eq!(layer_key("3.weight"), "3");
        assert_eq!(layer_key("bias"), "bias");
    }
}
