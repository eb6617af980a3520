//! A layered layout of a graph for the graph page, in Rust rather than graphviz: the output
//! is the same bytes on every machine (graphviz's coordinates change between versions, which
//! would break the snapshot tests), needs no subprocess, and every node keeps the stable id
//! the page's scripts and tests look for.
//!
//! Operations go on layers by longest path from the inputs; weights (parameters, constants)
//! sit one layer above their first consumer, next to it. Each layer is ordered by the mean
//! position of its operands (one barycentre sweep, top to bottom) and spread so boxes do not
//! overlap. Good enough for the chains and residual diamonds of inference graphs; not a
//! crossing minimiser.

use oar_ir::Graph;

/// Width and height of an operation's box and of a weight's smaller box.
pub const OP_BOX: (f64, f64) = (150.0, 34.0);
pub const WEIGHT_BOX: (f64, f64) = (110.0, 18.0);
const GAP_X: f64 = 14.0;
const LAYER_H: f64 = 64.0;
const MARGIN: f64 = 20.0;

/// A node's box: centre and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Boxes by node index, and the drawing's size.
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: Vec<Placed>,
    pub width: f64,
    pub height: f64,
}

/// Places each node (in a layer's list) at its wanted centre, pushing right to keep `GAP_X`
/// between boxes, then shifts the layer back so its mean matches the wanted mean.
fn spread(items: &mut [(usize, f64)], widths: &[f64]) -> Vec<(usize, f64)> {
    items.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut out: Vec<(usize, f64)> = Vec::with_capacity(items.len());
    for &(i, want) in items.iter() {
        let x = match out.last() {
            Some(&(j, px)) => want.max(px + widths[j] / 2.0 + GAP_X + widths[i] / 2.0),
            None => want,
        };
        out.push((i, x));
    }
    if !out.is_empty() {
        let n = out.len() as f64;
        let shift =
            (items.iter().map(|i| i.1).sum::<f64>() - out.iter().map(|o| o.1).sum::<f64>()) / n;
        for o in &mut out {
            o.1 += shift;
        }
    }
    out
}

/// Lays out every node of `g` (weights included).
pub fn layout(g: &Graph) -> Layout {
    let n = g.len();
    let weight: Vec<bool> = g.nodes().iter().map(|x| x.op.is_weight()).collect();
    let mut layer = vec![0usize; n];
    // Nodes are in topological order, so one forward sweep gives longest paths.
    for (id, node) in g.iter() {
        if weight[id.index()] {
            continue;
        }
        layer[id.index()] = node
            .inputs
            .iter()
            .filter(|v| !weight[v.node.index()])
            .map(|v| layer[v.node.index()] + 1)
            .max()
            .unwrap_or(0);
    }
    // A weight sits one layer above its first consumer.
    let mut consumer: Vec<Option<usize>> = vec![None; n];
    for (id, node) in g.iter() {
        for v in &node.inputs {
            let w = v.node.index();
            if weight[w] {
                let c = id.index();
                let better = match consumer[w] {
                    Some(old) => layer[c] < layer[old],
                    None => true,
                };
                if better {
                    consumer[w] = Some(c);
                }
            }
        }
    }
    for i in 0..n {
        if weight[i] {
            layer[i] = consumer[i].map(|c| layer[c].saturating_sub(1)).unwrap_or(0);
        }
    }
    let layers = layer.iter().copied().max().map(|m| m + 1).unwrap_or(0);
    let widths: Vec<f64> = weight
        .iter()
        .map(|&w| if w { WEIGHT_BOX.0 } else { OP_BOX.0 })
        .collect();
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, &l) in layer.iter().enumerate() {
        by_layer[l].push(i);
    }
    // Pass 1: operations, each at the mean of its operands' positions.
    let mut x = vec![0.0f64; n];
    for members in &by_layer {
        let mut items: Vec<(usize, f64)> = Vec::new();
        let mut fresh = 0.0;
        for &i in members.iter().filter(|&&i| !weight[i]) {
            let preds: Vec<f64> = g.nodes()[i]
                .inputs
                .iter()
                .filter(|v| !weight[v.node.index()])
                .map(|v| x[v.node.index()])
                .collect();
            let want = if preds.is_empty() {
                fresh += OP_BOX.0 + GAP_X;
                fresh
            } else {
                preds.iter().sum::<f64>() / preds.len() as f64
            };
            items.push((i, want));
        }
        for (i, px) in spread(&mut items, &widths) {
            x[i] = px;
        }
    }
    // Pass 2: weights beside their consumer, then each layer spread again with them.
    let mut slot = vec![0usize; n];
    let mut count = vec![0usize; n];
    for i in 0..n {
        if let (true, Some(c)) = (weight[i], consumer[i]) {
            slot[i] = count[c];
            count[c] += 1;
        }
    }
    for members in &by_layer {
        if !members.iter().any(|&i| weight[i]) {
            continue;
        }
        let mut items: Vec<(usize, f64)> = members
            .iter()
            .map(|&i| match (weight[i], consumer[i]) {
                (true, Some(c)) => {
                    let k = count[c] as f64;
                    (
                        i,
                        x[c] + (slot[i] as f64 - (k - 1.0) / 2.0) * (WEIGHT_BOX.0 + GAP_X),
                    )
                }
                _ => (i, x[i]),
            })
            .collect();
        for (i, px) in spread(&mut items, &widths) {
            x[i] = px;
        }
    }
    let min_x = (0..n)
        .map(|i| x[i] - widths[i] / 2.0)
        .fold(f64::INFINITY, f64::min);
    let shift = if min_x.is_finite() {
        MARGIN - min_x
    } else {
        0.0
    };
    let nodes: Vec<Placed> = (0..n)
        .map(|i| {
            let (w, h) = if weight[i] { WEIGHT_BOX } else { OP_BOX };
            Placed {
                x: x[i] + shift,
                y: MARGIN + OP_BOX.1 / 2.0 + layer[i] as f64 * LAYER_H,
                w,
                h,
            }
        })
        .collect();
    let width = nodes.iter().map(|p| p.x + p.w / 2.0).fold(0.0, f64::max) + MARGIN;
    let height = MARGIN * 2.0 + layers as f64 * LAYER_H;
    Layout {
        nodes,
        width,
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &Placed, b: &Placed) -> bool {
        (a.x - b.x).abs() < (a.w + b.w) / 2.0 && (a.y - b.y).abs() < (a.h + b.h) / 2.0
    }

    #[test]
    fn boxes_never_overlap_and_edges_point_down() {
        let text = "graph @g(%x: f32[N,8]) -> (f32[N,8]) {\n  %w = param \"fc.weight\" : f32[8,8]\n  %b = param \"fc.bias\" : f32[8]\n  %0 = matmul(%x, %w) : f32[N,8]\n  %1 = add(%0, %b) : f32[N,8]\n  %2 = relu(%1) : f32[N,8]\n  %3 = sigmoid(%1) : f32[N,8]\n  %4 = mul(%2, %3) : f32[N,8]\n  %5 = add(%4, %x) : f32[N,8]\n  return %5\n}\n";
        let g = oar_ir::parse(text).unwrap();
        let l = layout(&g);
        assert_eq!(l.nodes.len(), g.len());
        for i in 0..l.nodes.len() {
            for j in i + 1..l.nodes.len() {
                assert!(!overlaps(&l.nodes[i], &l.nodes[j]), "{i} and {j}: {:?}", l);
            }
        }
        for (id, node) in g.iter() {
            for v in &node.inputs {
                assert!(l.nodes[v.node.index()].y < l.nodes[id.index()].y);
            }
        }
        assert!(l
            .nodes
            .iter()
            .all(|p| p.x - p.w / 2.0 >= 0.0 && p.x + p.w / 2.0 <= l.width));
    }
}
