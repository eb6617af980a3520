//! Graphviz DOT output (`oar inspect --format dot`): one box per node with its op and
//! output types, parameters and constants shaded, edges labelled with the value's type,
//! pipeline stages and device kinds shown when annotated.

use crate::graph::{types_text, Graph};
use crate::op::Op;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The graph as a DOT digraph.
pub fn to_dot(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{}\" {{", escape(&g.name));
    let _ = writeln!(s, "  rankdir=TB;");
    let _ = writeln!(s, "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"monospace\", fontsize=10];");
    let _ = writeln!(s, "  edge [fontname=\"monospace\", fontsize=8];");
    for (id, n) in g.iter() {
        let mut label = format!("%{}\\n{}", escape(&n.name), n.op.name());
        if let Op::Param(p) = &n.op {
            let _ = write!(label, " \\\"{}\\\"", escape(&p.name));
        }
        let _ = write!(label, "\\n{}", escape(&types_text(&n.outputs)));
        if let Some(st) = n.dist.as_ref().and_then(|d| d.stage) {
            let _ = write!(label, "\\nstage {st}");
        }
        if let Some(d) = &n.device {
            let _ = write!(label, "\\n@{d}");
        }
        let fill = if matches!(n.op, Op::Input) {
            "lightblue"
        } else if n.op.is_weight() {
            "lightgrey"
        } else if n.op.is_collective() {
            "khaki"
        } else {
            "white"
        };
        let _ = writeln!(s, "  n{} [label=\"{label}\", fillcolor={fill}];", id.0);
    }
    for (id, n) in g.iter() {
        for v in &n.inputs {
            let t = g.value_type(*v).map(|t| t.to_string()).unwrap_or_default();
            let _ = writeln!(
                s,
                "  n{} -> n{} [label=\"{}\"];",
                v.node.0,
                id.0,
                escape(&t)
            );
        }
    }
    for (i, v) in g.outputs().iter().enumerate() {
        let _ = writeln!(
            s,
            "  out{i} [label=\"return #{i}\", shape=oval, fillcolor=lightblue];"
        );
        let _ = writeln!(s, "  n{} -> out{i};", v.node.0);
    }
    s.push_str("}\n");
    s
}
