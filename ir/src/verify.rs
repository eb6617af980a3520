//! The verifier: every invariant of a well-formed graph, checked in one place and run
//! between passes in debug and test builds. Errors name the node, its op and the mismatch.

use crate::dist::Placement;
use crate::graph::{types_text, Graph, NodeId};
use crate::mode::ExecMode;
use crate::op::{infer_types, Op};
use crate::types::TensorType;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The node it concerns, if any.
    pub node: Option<NodeId>,
    /// `%name (op)`, or the graph part it concerns.
    pub location: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// All broken invariants of a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct VerifyErrors(pub Vec<VerifyError>);

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph is not well formed ({} errors):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Whether `s` is a valid value name in the text format.
pub fn is_value_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Whether `s` is a valid graph or mesh name (`@name`): as a value name, plus `-`.
pub fn is_global_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

fn symbols_of(t: &TensorType) -> impl Iterator<Item = &str> {
    t.shape.0.iter().flat_map(|d| d.symbols())
}

/// Checks every invariant; returns all violations.
pub fn verify(g: &Graph) -> Result<(), VerifyErrors> {
    let mut errs = Vec::new();
    let mut at = |node: Option<NodeId>, location: String, message: String| {
        errs.push(VerifyError {
            node,
            location,
            message,
        })
    };
    // A graph read from JSON may name node ids it does not have; nothing below can look
    // them up, so they end the check.
    let dangling: Vec<String> = g
        .inputs()
        .iter()
        .copied()
        .chain(g.outputs().iter().map(|v| v.node))
        .filter(|id| id.index() >= g.len())
        .map(|id| id.to_string())
        .collect();
    if !dangling.is_empty() {
        at(
            None,
            "graph".into(),
            format!(
                "inputs or outputs name nodes it does not have: {} (it has {} nodes)",
                dangling.join(", "),
                g.len()
            ),
        );
        return Err(VerifyErrors(errs));
    }
    if !is_global_name(&g.name) {
        at(
            None,
            "graph".into(),
            format!("name `{}` is not a valid name", g.name),
        );
    }
    for (name, m) in &g.meshes {
        if !is_global_name(name) {
            at(None, format!("mesh @{name}"), "not a valid name".into());
        }
        if let Err(e) = m.validate() {
            at(None, format!("mesh @{name}"), e.to_string());
        }
    }
    let symbols: BTreeSet<&str> = g
        .inputs()
        .iter()
        .flat_map(|&i| g.node(i).outputs.iter().flat_map(symbols_of))
        .collect();
    let declared_inputs: HashSet<NodeId> = g.inputs().iter().copied().collect();
    let mut names = HashSet::new();
    let ctx = g.infer_ctx();
    for (id, n) in g.iter() {
        let loc = format!("%{} ({})", n.name, n.op.name());
        if !is_value_name(&n.name) {
            at(
                Some(id),
                loc.clone(),
                format!(
                    "name `{}` has characters other than letters, digits, `_` and `.`",
                    n.name
                ),
            );
        }
        if !names.insert(n.name.as_str()) {
            at(Some(id), loc.clone(), "name is used twice".into());
        }
        if matches!(n.op, Op::Input) != declared_inputs.contains(&id) {
            at(
                Some(id),
                loc.clone(),
                "input nodes and the graph's input list disagree".into(),
            );
        }
        let mut in_types = Vec::new();
        for v in &n.inputs {
            if v.node >= id {
                at(
                    Some(id),
                    loc.clone(),
                    format!("operand {v} is not defined before this node"),
                );
            } else if let Some(t) = g.value_type(*v) {
                in_types.push(t.clone());
            } else {
                at(Some(id), loc.clone(), format!("operand {v} does not exist"));
            }
        }
        if in_types.len() == n.inputs.len() {
            match infer_types(&n.op, &in_types, &n.outputs, &ctx) {
                Ok(t) if t != n.outputs => at(
                    Some(id),
                    loc.clone(),
                    format!(
                        "declared {} but the op produces {}",
                        types_text(&n.outputs),
                        types_text(&t)
                    ),
                ),
                Ok(_) => {}
                Err(e) => at(Some(id), loc.clone(), e.0),
            }
        }
        for t in &n.outputs {
            for s in symbols_of(t) {
                if !symbols.contains(s) {
                    at(Some(id), loc.clone(), format!("unknown symbol `{s}` in {t}: symbols come from the graph's input types"));
                }
            }
        }
        if let Some(d) = &n.dist {
            let mesh = d.mesh.as_ref().map(|m| (m, g.meshes.get(m)));
            match mesh {
                None if !d.outputs.is_empty() || !d.inputs.is_empty() => {
                    at(Some(id), loc.clone(), "placements without a mesh".into())
                }
                Some((m, None)) => at(Some(id), loc.clone(), format!("unknown mesh @{m}")),
                Some((m, Some(mesh))) => {
                    let check =
                        |ps: &[Placement], t: Option<&TensorType>, what: &str| -> Option<String> {
                            if ps.len() != mesh.shape.len() {
                                return Some(format!(
                                    "{what}: mesh @{m} has {} axes but {} placements",
                                    mesh.shape.len(),
                                    ps.len()
                                ));
                            }
                            let rank = t.map(|t| t.rank())?;
                            ps.iter().find_map(|p| match p {
                                Placement::Shard(dim) if *dim >= rank => Some(format!(
                                    "{what}: S({dim}) shards a dim the rank-{rank} tensor lacks"
                                )),
                                _ => None,
                            })
                        };
                    if !d.outputs.is_empty() && d.outputs.len() != n.outputs.len() {
                        at(
                            Some(id),
                            loc.clone(),
                            format!(
                                "{} placement lists for {} outputs",
                                d.outputs.len(),
                                n.outputs.len()
                            ),
                        );
                    }
                    if !d.inputs.is_empty() && d.inputs.len() != n.inputs.len() {
                        at(
                            Some(id),
                            loc.clone(),
                            format!(
                                "{} input placement lists for {} inputs",
                                d.inputs.len(),
                                n.inputs.len()
                            ),
                        );
                    }
                    for (i, ps) in d.outputs.iter().enumerate() {
                        if let Some(msg) = check(ps, n.outputs.get(i), &format!("output {i}")) {
                            at(Some(id), loc.clone(), msg);
                        }
                    }
                    for (i, ps) in d.inputs.iter().enumerate() {
                        let t = n.inputs.get(i).and_then(|v| g.value_type(*v));
                        if let Some(msg) = check(ps, t, &format!("input {i}")) {
                            at(Some(id), loc.clone(), msg);
                        }
                    }
                }
                None => {}
            }
        }
    }
    for (name, f) in &g.functions {
        if f.name != *name {
            at(
                None,
                format!("function @{name}"),
                format!("is named @{} inside", f.name),
            );
        }
        if !f.meshes.is_empty() || !f.functions.is_empty() {
            at(
                None,
                format!("function @{name}"),
                "functions may not declare meshes or functions".into(),
            );
        }
        if let Err(inner) = verify(f) {
            for e in inner.0 {
                at(None, format!("function @{name}: {}", e.location), e.message);
            }
        }
    }
    for v in g.outputs() {
        if g.value_type(*v).is_none() {
            at(None, "return".into(), format!("output {v} does not exist"));
        }
    }
    for (node, location, message) in mode_errors(g) {
        at(node, location, message);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors(errs))
    }
}

/// Training-only constructs: the training form of batch_norm and state updates, which must
/// name distinct parameters of the value's type.
fn mode_errors(g: &Graph) -> Vec<(Option<NodeId>, String, String)> {
    let mut errs = Vec::new();
    let training = g.mode == ExecMode::Training;
    for (id, n) in g.iter() {
        if !training
            && matches!(
                n.op,
                Op::BatchNorm {
                    momentum: Some(_),
                    ..
                }
            )
        {
            errs.push((
                Some(id),
                format!("%{} ({})", n.name, n.op.name()),
                "the training form (`momentum`) needs a training graph (`mode=training`)".into(),
            ));
        }
    }
    if g.state.is_empty() {
        return errs;
    }
    let loc = |p: &str| format!("update \"{p}\"");
    if !training {
        errs.push((
            None,
            "update".into(),
            "state updates need a training graph".into(),
        ));
    }
    if g.state.len() > g.outputs().len() {
        errs.push((
            None,
            "update".into(),
            format!(
                "{} state updates but only {} outputs",
                g.state.len(),
                g.outputs().len()
            ),
        ));
        return errs;
    }
    let mut seen = HashSet::new();
    for (param, v) in g.state_updates() {
        if !seen.insert(param) {
            errs.push((None, loc(param), "parameter is updated twice".into()));
        }
        let declared = g.nodes().iter().find_map(|n| {
            let Op::Param(p) = &n.op else { return None };
            (p.name == param).then(|| &n.outputs[0])
        });
        match (declared, g.value_type(v)) {
            (None, _) => errs.push((None, loc(param), "no parameter has this name".into())),
            (Some(t), Some(vt)) if t != vt => errs.push((
                None,
                loc(param),
                format!("the parameter is {t} but the new value {v} is {vt}"),
            )),
            _ => {}
        }
    }
    errs
}
