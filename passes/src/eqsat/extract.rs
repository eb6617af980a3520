//! DAG-aware extraction. egg's default extractor charges a shared sub-term at every use;
//! tensor graphs share heavily (weights, residuals, merged Q/K/V), so this one charges each
//! class once: a node's cost is its own plus the union of the classes its children need,
//! found greedily to a fixpoint (the "greedy-DAG" heuristic). It is not optimal like an ILP,
//! but it runs in well under a second on graphs of thousands of e-nodes and never
//! double-counts sharing, which is what decides Q/K/V merging and epilogue fusion.

use super::lang::{TensorNode, EG};
use egg::{Id, Language};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// The chosen e-node per class, and the total cost of what the roots need.
pub struct Extraction {
    pub choice: BTreeMap<Id, TensorNode>,
    pub cost: f64,
}

#[derive(Clone)]
struct Best {
    node: TensorNode,
    /// Class → own cost, for every class this choice needs (itself included).
    needs: Rc<BTreeMap<Id, f64>>,
    total: f64,
}

/// Extracts the cheapest DAG for `roots` with `node_cost` per e-node.
pub fn extract(
    eg: &EG,
    roots: &[Id],
    node_cost: impl Fn(&EG, Id, &TensorNode) -> f64,
) -> Option<Extraction> {
    let mut best: BTreeMap<Id, Best> = BTreeMap::new();
    let classes: Vec<Id> = {
        let mut v: Vec<Id> = eg.classes().map(|c| c.id).collect();
        v.sort();
        v
    };
    for _round in 0..64 {
        let mut changed = false;
        for &c in &classes {
            for n in &eg[c].nodes {
                let kids: BTreeSet<Id> = n.children().iter().map(|&k| eg.find(k)).collect();
                if kids.contains(&c) || !kids.iter().all(|k| best.contains_key(k)) {
                    continue;
                }
                let mut needs: BTreeMap<Id, f64> = BTreeMap::new();
                for k in &kids {
                    for (&cls, &cost) in best[k].needs.iter() {
                        needs.insert(cls, cost);
                    }
                }
                if needs.contains_key(&c) {
                    continue; // a cycle through this class
                }
                needs.insert(c, node_cost(eg, c, n));
                let total: f64 = needs.values().sum();
                let better = best
                    .get(&c)
                    .is_none_or(|b| total < b.total * (1.0 - 1e-12) - 1e-18);
                if better {
                    best.insert(
                        c,
                        Best {
                            node: n.clone(),
                            needs: Rc::new(needs),
                            total,
                        },
                    );
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Follow the final choices from the roots; each class is paid once.
    let mut choice: BTreeMap<Id, TensorNode> = BTreeMap::new();
    let mut cost = 0.0;
    let mut stack: Vec<Id> = roots.iter().map(|r| eg.find(*r)).collect();
    while let Some(c) = stack.pop() {
        if choice.contains_key(&c) {
            continue;
        }
        let b = best.get(&c)?;
        cost += node_cost(eg, c, &b.node);
        stack.extend(b.node.children().iter().map(|&k| eg.find(k)));
        choice.insert(c, b.node.clone());
    }
    Some(Extraction { choice, cost })
}
