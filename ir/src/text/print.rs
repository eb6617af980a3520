//! Graph → text.

use crate::dist::{DeviceRef, OpDist, Placement};
use crate::graph::{types_text, Graph, Node, ValueRef};
use crate::mode::ExecMode;
use crate::op::{op_attrs, Attr, Op};
use std::fmt::Write;

fn value_name(g: &Graph, v: ValueRef) -> String {
    let name = &g.node(v.node).name;
    if v.port == 0 {
        format!("%{name}")
    } else {
        format!("%{name}#{}", v.port)
    }
}

fn placements(ps: &[Placement]) -> String {
    let parts: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn annotations(out: &mut String, dist: &Option<OpDist>, device: &Option<DeviceRef>) {
    if let Some(d) = dist {
        let mut items = Vec::new();
        if let Some(m) = &d.mesh {
            items.push(format!("mesh=@{m}"));
        }
        items.extend(d.outputs.iter().map(|p| placements(p)));
        if !d.inputs.is_empty() {
            let ins: Vec<String> = d.inputs.iter().map(|p| placements(p)).collect();
            items.push(format!("in=[{}]", ins.join(", ")));
        }
        if let Some(s) = d.stage {
            items.push(format!("stage={s}"));
        }
        let _ = write!(out, " #dist<{}>", items.join(", "));
    }
    if let Some(d) = device {
        let _ = write!(out, " #device<{d}>");
    }
}

fn attr_dict(attrs: &[(&str, Attr)]) -> String {
    let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn statement(g: &Graph, node: &Node) -> String {
    let mut s = format!("%{} = {}", node.name, node.op.name());
    let mut attrs = op_attrs(&node.op);
    if let (Op::Param(_), Some(("name", Attr::Str(_)))) = (&node.op, attrs.first()) {
        let (_, name) = attrs.remove(0);
        let _ = write!(s, " {name}");
    }
    if !node.inputs.is_empty() {
        let args: Vec<String> = node.inputs.iter().map(|v| value_name(g, *v)).collect();
        let _ = write!(s, "({})", args.join(", "));
    }
    if !attrs.is_empty() {
        let _ = write!(s, " {}", attr_dict(&attrs));
    }
    let types = types_text(&node.outputs);
    let _ = write!(s, " : {types}");
    annotations(&mut s, &node.dist, &node.device);
    s
}

/// Prints a graph in the text format: meshes, then functions (fusion bodies), then the graph. Input nodes appear in the signature; the graph is
/// expected in canonical order (inputs first) for an exact round trip.
pub fn print(g: &Graph) -> String {
    let mut out = String::new();
    for (name, m) in &g.meshes {
        let mut attrs = vec![
            (
                "shape",
                Attr::List(m.shape.iter().map(|&d| Attr::Int(d as i64)).collect()),
            ),
            (
                "axes",
                Attr::List(m.axis_names.iter().map(|a| Attr::Str(a.clone())).collect()),
            ),
        ];
        if m.device_ids != (0..m.size()).collect::<Vec<_>>() {
            attrs.push((
                "devices",
                Attr::List(m.device_ids.iter().map(|&d| Attr::Int(d as i64)).collect()),
            ));
        }
        let _ = writeln!(out, "mesh @{name} = {}", attr_dict(&attrs));
    }
    if !g.meshes.is_empty() {
        out.push('\n');
    }
    for f in g.functions.values() {
        print_graph(&mut out, f);
        out.push('\n');
    }
    print_graph(&mut out, g);
    out
}

fn print_graph(out: &mut String, g: &Graph) {
    let params: Vec<String> = g
        .inputs()
        .iter()
        .map(|&id| {
            let n = g.node(id);
            let mut p = format!("%{}: {}", n.name, n.outputs[0]);
            annotations(&mut p, &n.dist, &n.device);
            p
        })
        .collect();
    let out_types: Vec<_> = g
        .model_outputs()
        .iter()
        .filter_map(|v| g.value_type(*v).cloned())
        .collect();
    let ret = if out_types.len() == 1 {
        format!("({})", types_text(&out_types))
    } else {
        types_text(&out_types)
    };
    // Inference is the default and is not written, so inference graphs print as before.
    let mode = match g.mode {
        ExecMode::Inference => String::new(),
        m => format!(" mode={}", m.name()),
    };
    let _ = writeln!(
        out,
        "graph @{}({}) -> {ret}{mode} {{",
        g.name,
        params.join(", ")
    );
    for node in g.nodes() {
        if matches!(node.op, Op::Input) {
            continue;
        }
        let _ = writeln!(out, "  {}", statement(g, node));
    }
    let rets: Vec<String> = g
        .model_outputs()
        .iter()
        .map(|v| value_name(g, *v))
        .collect();
    if rets.is_empty() {
        out.push_str("  return\n");
    } else {
        let _ = writeln!(out, "  return {}", rets.join(", "));
    }
    for (param, v) in g.state_updates() {
        let p = Attr::Str(param.to_string());
        let _ = writeln!(out, "  update {p} = {}", value_name(g, v));
    }
    out.push_str("}\n");
}
