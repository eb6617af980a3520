//! Module-level mesh declarations and the `#dist<…>` / `#device<…>` annotations.

use super::{Parser, R};
use crate::dist::{DeviceKind, DeviceRef, OpDist, Placement, ProcessMesh, ReduceOp};
use crate::op::Attr;
use crate::text::lexer::Tok;

impl Parser<'_> {
    pub(super) fn mesh_decl(&mut self) -> R<()> {
        let at = self.offset();
        let name = self.global("a mesh name such as `@m`")?;
        self.expect("=")?;
        let attrs = self.attr_dict()?;
        let bad = |p: &Self, m: &str| p.err_at(at, format!("mesh @{name}: {m}"));
        let mut shape = None;
        let mut axes = None;
        let mut devices = None;
        for (k, v) in attrs {
            match (k.as_str(), v) {
                ("shape", Attr::List(l)) => {
                    shape = l
                        .iter()
                        .map(|a| match a {
                            Attr::Int(i) if *i > 0 => Some(*i as u64),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    if shape.is_none() {
                        return bad(self, "`shape` must be a list of positive integers");
                    }
                }
                ("axes", Attr::List(l)) => {
                    axes = l
                        .iter()
                        .map(|a| match a {
                            Attr::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    if axes.is_none() {
                        return bad(self, "`axes` must be a list of strings");
                    }
                }
                ("devices", Attr::List(l)) => {
                    devices = l
                        .iter()
                        .map(|a| match a {
                            Attr::Int(i) if *i >= 0 => Some(*i as u64),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>();
                    if devices.is_none() {
                        return bad(self, "`devices` must be a list of device ids");
                    }
                }
                (k, _) => {
                    return bad(
                        self,
                        &format!(
                            "unknown or ill-typed field `{k}` (expected shape, axes, devices)"
                        ),
                    )
                }
            }
        }
        let (Some(shape), Some(axes)) = (shape, axes) else {
            return bad(self, "needs `shape` and `axes`");
        };
        let mut mesh = ProcessMesh::new(shape, axes);
        if let Some(d) = devices {
            mesh.device_ids = d;
        }
        if let Err(e) = mesh.validate() {
            return bad(self, &e.to_string());
        }
        if self.graph.meshes.insert(name.clone(), mesh).is_some() {
            return self.err_at(at, format!("mesh @{name} is declared twice"));
        }
        Ok(())
    }

    fn placement(&mut self) -> R<Placement> {
        let at = self.offset();
        let w = self.ident("a placement (R, S(dim) or P(op))")?;
        match w.as_str() {
            "R" => Ok(Placement::Replicate),
            "S" => {
                self.expect("(")?;
                let d = match self.bump() {
                    Tok::Int(d) if d >= 0 => d as usize,
                    _ => return self.err_at(at, "expected a tensor dim in `S(dim)`"),
                };
                self.expect(")")?;
                Ok(Placement::Shard(d))
            }
            "P" => {
                self.expect("(")?;
                let op_at = self.offset();
                let op = self.ident("a reduce op")?;
                let Some(r) = ReduceOp::from_name(&op) else {
                    return self.err_at(
                        op_at,
                        format!("unknown reduce op `{op}` (expected sum, mean, max, min, prod)"),
                    );
                };
                self.expect(")")?;
                Ok(Placement::Partial(r))
            }
            _ => self.err_at(
                at,
                format!("unknown placement `{w}` (expected R, S(dim) or P(op))"),
            ),
        }
    }

    fn placements(&mut self) -> R<Vec<Placement>> {
        self.expect("[")?;
        self.list("]", |p| p.placement())
    }

    /// `#dist<...>` and `#device<...>` after a node with `n_out` outputs.
    pub(super) fn annotations(&mut self, n_out: usize) -> R<(Option<OpDist>, Option<DeviceRef>)> {
        let mut dist = None;
        let mut device = None;
        while let Tok::Hash(h) = self.peek().clone() {
            let at = self.offset();
            self.bump();
            self.expect("<")?;
            match h.as_str() {
                "dist" => dist = Some(self.dist_body(at, n_out)?),
                "device" => {
                    let k_at = self.offset();
                    let k = self.ident("a device kind (cpu or gpu)")?;
                    let Some(kind) = DeviceKind::from_name(&k) else {
                        return self.err_at(
                            k_at,
                            format!("unknown device kind `{k}` (expected cpu or gpu)"),
                        );
                    };
                    let mut index = None;
                    if self.eat(":") {
                        match self.bump() {
                            Tok::Int(i) if i >= 0 && i <= u32::MAX as i64 => index = Some(i as u32),
                            _ => return self.err_at(k_at, "expected a device index after `:`"),
                        }
                    }
                    self.expect(">")?;
                    device = Some(DeviceRef { kind, index });
                }
                _ => {
                    return self.err_at(
                        at,
                        format!("unknown annotation `#{h}` (expected #dist or #device)"),
                    )
                }
            }
        }
        Ok((dist, device))
    }

    fn dist_body(&mut self, at: usize, n_out: usize) -> R<OpDist> {
        let mut d = OpDist::default();
        let mut mesh_at = at;
        let items_done = |p: &mut Self| -> R<bool> {
            if p.eat(">") {
                return Ok(true);
            }
            if !p.eat(",") {
                return p.expected("`,` or `>`");
            }
            Ok(false)
        };
        if !self.eat(">") {
            loop {
                match self.peek().clone() {
                    Tok::Ident(k) if k == "mesh" => {
                        self.bump();
                        self.expect("=")?;
                        mesh_at = self.offset();
                        d.mesh = Some(self.global("a mesh name such as `@m`")?);
                    }
                    Tok::Ident(k) if k == "in" => {
                        self.bump();
                        self.expect("=")?;
                        self.expect("[")?;
                        d.inputs = self.list("]", |p| p.placements())?;
                    }
                    Tok::Ident(k) if k == "stage" => {
                        self.bump();
                        self.expect("=")?;
                        match self.bump() {
                            Tok::Int(s) if s >= 0 && s <= u32::MAX as i64 => {
                                d.stage = Some(s as u32)
                            }
                            _ => return self.err_at(at, "expected a stage number after `stage=`"),
                        }
                    }
                    Tok::Punct("[") => d.outputs.push(self.placements()?),
                    _ => return self.expected("`mesh=`, `in=`, `stage=` or placements `[...]`"),
                }
                if items_done(self)? {
                    break;
                }
            }
        }
        self.check_dist(&d, at, mesh_at, n_out)?;
        Ok(d)
    }

    fn check_dist(&self, d: &OpDist, at: usize, mesh_at: usize, n_out: usize) -> R<()> {
        let Some(mesh_name) = &d.mesh else {
            if d.outputs.is_empty() && d.inputs.is_empty() {
                return Ok(());
            }
            return self.err_at(at, "placements need a mesh (`mesh=@m`)");
        };
        let Some(mesh) = self.graph.meshes.get(mesh_name) else {
            let known: Vec<String> = self.graph.meshes.keys().map(|k| format!("@{k}")).collect();
            return self.err_at(
                mesh_at,
                format!(
                    "unknown mesh @{mesh_name} (declared: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        };
        if !d.outputs.is_empty() && d.outputs.len() != n_out {
            return self.err_at(
                at,
                format!("{} placement lists for {n_out} outputs", d.outputs.len()),
            );
        }
        for ps in d.outputs.iter().chain(&d.inputs) {
            if ps.len() != mesh.shape.len() {
                return self.err_at(
                    at,
                    format!(
                        "mesh @{mesh_name} has {} axes but {} placements are given",
                        mesh.shape.len(),
                        ps.len()
                    ),
                );
            }
        }
        Ok(())
    }
}
