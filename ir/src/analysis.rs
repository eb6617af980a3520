//! Whole-graph facts built from the per-op facts on `Op`, so that every crate decides them
//! by one rule.

use crate::graph::Graph;

/// Per node (indexed by `NodeId::index`): whether it is computed from weights only, i.e.
/// known once parameters and constants are loaded and computable once at load time. Follows
/// `graph.mode`: in training parameters change every step, so nothing computed from them is
/// weight-only. The per-op rule is `Op::load_time`.
pub fn weight_only(g: &Graph) -> Vec<bool> {
    let mut known = vec![false; g.len()];
    for (id, n) in g.iter() {
        let ins: Vec<bool> = n.inputs.iter().map(|v| known[v.node.index()]).collect();
        let first_static = n
            .inputs
            .first()
            .and_then(|v| g.value_type(*v))
            .is_some_and(|t| t.shape.as_static().is_some());
        known[id.index()] = n.op.load_time(g.mode).decide(&ins, first_static);
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, ExecMode};

    const G: &str = r#"
graph @g(%x: f32[N,4]) -> (f32[N,4]) {
  %w = param "w" : f32[4,4]
  %s = param "s" : f32[4]
  %c = constant {value=[2.0, 2.0, 2.0, 2.0]} : f32[4]
  %ws = mul(%s, %c) : f32[4]
  %wt = transpose(%w) {perm=[1, 0]} : f32[4,4]
  %y = matmul(%x, %wt) : f32[N,4]
  %z = add(%y, %ws) : f32[N,4]
  return %z
}
"#;

    fn by_name(g: &Graph, known: &[bool]) -> Vec<(String, bool)> {
        g.iter()
            .map(|(id, n)| (n.name.clone(), known[id.index()]))
            .collect()
    }

    #[test]
    fn inference_folds_weight_only_subgraphs() {
        let g = parse(G).expect("parses");
        assert_eq!(g.mode, ExecMode::Inference);
        let k = by_name(&g, &weight_only(&g));
        let want = [
            ("x", false),
            ("w", true),
            ("s", true),
            ("c", true),
            ("ws", true),
            ("wt", true),
            ("y", false),
            ("z", false),
        ];
        for (name, known) in want {
            assert!(
                k.contains(&(name.to_string(), known)),
                "{name}: want {known}, got {k:?}"
            );
        }
    }

    #[test]
    fn training_parameters_are_not_load_time_constants() {
        let mut g = parse(G).expect("parses");
        g.mode = ExecMode::Training;
        let k = by_name(&g, &weight_only(&g));
        let want = [
            ("w", false),
            ("s", false),
            // Constants stay constant in training; a mix with a parameter does not.
            ("c", true),
            ("ws", false),
            ("wt", false),
            ("y", false),
        ];
        for (name, known) in want {
            assert!(
                k.contains(&(name.to_string(), known)),
                "{name}: want {known}, got {k:?}"
            );
        }
    }
}
