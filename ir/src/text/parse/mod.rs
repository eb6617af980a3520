//! Text → graph. Each statement is type-checked as it is read, so every error points at
//! the line and column it comes from.

use super::lexer::{tokenize, Tok};
use super::ParseError;

mod dist;
use crate::graph::{types_text, Graph, ValueRef};
use crate::mode::ExecMode;
use crate::op::{op_from_attrs, Attr};
use crate::types::{is_symbol_name, DType, Dim, TensorType};
use std::collections::{BTreeSet, HashMap};

/// Parses a module (meshes, then one graph) from text.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        graph: Graph::default(),
        names: HashMap::new(),
        symbols: BTreeSet::new(),
        node_at: Vec::new(),
    };
    p.module()?;
    // Parsing already type-checked each statement; the verifier adds the graph-wide checks.
    if let Err(errs) = crate::verify::verify(&p.graph) {
        let e = &errs.0[0];
        let at = e
            .node
            .and_then(|n| p.node_at.get(n.index()).copied())
            .unwrap_or(0);
        return Err(ParseError::at(src, at, e.to_string()));
    }
    Ok(p.graph)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    graph: Graph,
    names: HashMap<String, crate::graph::NodeId>,
    /// Symbols introduced by the graph's input types.
    symbols: BTreeSet<String>,
    /// Source offset of each node's definition, for errors found after parsing.
    node_at: Vec<usize>,
}

type R<T> = Result<T, ParseError>;

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn offset(&self) -> usize {
        self.toks[self.pos].1
    }

    fn bump(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn err_at<T>(&self, offset: usize, msg: impl Into<String>) -> R<T> {
        Err(ParseError::at(self.src, offset, msg))
    }

    fn expected<T>(&self, what: &str) -> R<T> {
        self.err_at(
            self.offset(),
            format!("expected {what}, found {}", self.peek().describe()),
        )
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Tok::Punct(q) if *q == p) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> R<()> {
        if self.eat(p) {
            Ok(())
        } else {
            self.expected(&format!("`{p}`"))
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Tok::Ident(w) if w == kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn ident(&mut self, what: &str) -> R<String> {
        match self.peek().clone() {
            Tok::Ident(w) => {
                self.bump();
                Ok(w)
            }
            _ => self.expected(what),
        }
    }

    fn global(&mut self, what: &str) -> R<String> {
        match self.peek().clone() {
            Tok::Global(g) => {
                self.bump();
                Ok(g)
            }
            _ => self.expected(what),
        }
    }

    /// `item (, item)*` up to `close`, which is consumed.
    fn list<T>(&mut self, close: &str, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let mut v = Vec::new();
        if self.eat(close) {
            return Ok(v);
        }
        loop {
            v.push(item(self)?);
            if self.eat(close) {
                return Ok(v);
            }
            if !self.eat(",") {
                return self.expected(&format!("`,` or `{close}`"));
            }
        }
    }

    fn module(&mut self) -> R<()> {
        while self.keyword("mesh") {
            self.mesh_decl()?;
        }
        if !self.keyword("graph") {
            return self.expected("`mesh` or `graph`");
        }
        loop {
            self.graph_body()?;
            if matches!(self.peek(), Tok::Eof) {
                return Ok(());
            }
            if !self.keyword("graph") {
                return self.expected("end of file or another `graph`");
            }
            // The graph just read is a function (a fusion body) of the graphs that follow.
            let meshes = self.graph.meshes.clone();
            let mut functions = std::mem::take(&mut self.graph.functions);
            let f = std::mem::take(&mut self.graph);
            let fname = f.name.clone();
            if functions.insert(fname.clone(), f).is_some() {
                return self.err_at(self.offset(), format!("function @{fname} is defined twice"));
            }
            self.graph.meshes = meshes;
            self.graph.functions = functions;
            self.names.clear();
            self.symbols.clear();
            self.node_at.clear();
        }
    }

    /// `@name(inputs) -> (types) { statements return values }`, after the `graph` keyword.
    fn graph_body(&mut self) -> R<()> {
        self.graph.name = self.global("a graph name such as `@model`")?;
        self.expect("(")?;
        self.list(")", |p| p.graph_input())?;
        self.expect("->")?;
        let sig = self.types()?;
        if self.keyword("mode") {
            self.expect("=")?;
            let at = self.offset();
            self.graph.mode = match self.ident("`inference` or `training`")?.as_str() {
                "inference" => ExecMode::Inference,
                "training" => ExecMode::Training,
                other => {
                    return self.err_at(
                        at,
                        format!("unknown mode `{other}`: expected `inference` or `training`"),
                    )
                }
            };
        }
        self.expect("{")?;
        loop {
            if self.keyword("return") {
                break;
            }
            if matches!(self.peek(), Tok::Eof | Tok::Punct("}")) {
                return self.expected("a statement or `return`");
            }
            self.statement()?;
        }
        let ret_at = self.offset();
        let mut outs = Vec::new();
        if matches!(self.peek(), Tok::Value(_)) {
            outs.push(self.value()?);
            while self.eat(",") {
                outs.push(self.value()?);
            }
        }
        let mut updates = Vec::new();
        while self.keyword("update") {
            let Tok::Str(param) = self.peek().clone() else {
                return self.expected("a parameter name such as `\"bn.mean\"` after `update`");
            };
            self.bump();
            self.expect("=")?;
            updates.push((param, self.value()?));
        }
        self.expect("}")?;
        let got: Vec<TensorType> = outs
            .iter()
            .filter_map(|v| self.graph.value_type(*v).cloned())
            .collect();
        if got != sig {
            return self.err_at(
                ret_at,
                format!(
                    "returned values have types {} but the signature says {}",
                    types_text(&got),
                    types_text(&sig)
                ),
            );
        }
        self.graph.set_outputs(outs);
        for (param, v) in updates {
            self.graph.add_state_update(param, v);
        }
        Ok(())
    }

    fn define(&mut self, at: usize, name: &str, id: crate::graph::NodeId) -> R<()> {
        if self.names.insert(name.to_string(), id).is_some() {
            return self.err_at(at, format!("value %{name} is defined twice"));
        }
        Ok(())
    }

    fn graph_input(&mut self) -> R<()> {
        let at = self.offset();
        let Tok::Value(name) = self.peek().clone() else {
            return self.expected("an input such as `%x: f32[N,3]`");
        };
        self.bump();
        self.expect(":")?;
        let ty = self.tensor_type(true)?;
        let v = self.graph.add_input(name.clone(), ty);
        self.node_at.push(at);
        self.define(at, &name, v.node)?;
        let (dist, device) = self.annotations(1)?;
        let node = self.graph.node_mut(v.node);
        node.dist = dist;
        node.device = device;
        Ok(())
    }

    fn statement(&mut self) -> R<()> {
        let at = self.offset();
        let Tok::Value(name) = self.peek().clone() else {
            return self.expected("a statement such as `%y = relu(%x) : f32[4]`");
        };
        self.bump();
        self.expect("=")?;
        let op_at = self.offset();
        let op_name = self.ident("an op name")?;
        let mut attrs = Vec::new();
        if let Tok::Str(s) = self.peek().clone() {
            self.bump();
            attrs.push(("name".to_string(), Attr::Str(s)));
        }
        let mut inputs = Vec::new();
        if self.eat("(") {
            inputs = self.list(")", |p| p.value())?;
        }
        if matches!(self.peek(), Tok::Punct("{")) {
            attrs.extend(self.attr_dict()?);
        }
        self.expect(":")?;
        let declared = self.types()?;
        let op = op_from_attrs(&op_name, attrs, &declared).map_err(|e| {
            let msg = if e.0.starts_with("unknown op") {
                match closest_op(&op_name) {
                    Some(near) => format!(
                        "{} (did you mean `{near}`? the op list is in ir/README.md)",
                        e.0
                    ),
                    None => format!("{} (the op list is in ir/README.md)", e.0),
                }
            } else {
                e.0
            };
            ParseError::at(self.src, op_at, msg)
        })?;
        let id = self
            .graph
            .add_node_typed(op, inputs, declared.clone(), Some(name.clone()))
            .map_err(|e| {
                ParseError::at(
                    self.src,
                    op_at,
                    format!("%{name} = {}: {}", e.op, e.detail()),
                )
            })?;
        self.node_at.push(at);
        self.define(at, &name, id)?;
        let (dist, device) = self.annotations(declared.len())?;
        let node = self.graph.node_mut(id);
        node.dist = dist;
        node.device = device;
        Ok(())
    }

    fn value(&mut self) -> R<ValueRef> {
        let at = self.offset();
        let Tok::Value(name) = self.peek().clone() else {
            return self.expected("a value such as `%x`");
        };
        self.bump();
        let Some(&node) = self.names.get(&name) else {
            return self.err_at(
                at,
                format!("unknown value %{name} (values must be defined before use)"),
            );
        };
        let mut port = 0;
        if self.eat("#") {
            match self.bump() {
                Tok::Int(p) if p >= 0 => port = p as u32,
                _ => return self.err_at(at, "expected an output index after `#`"),
            }
        }
        let n_out = self.graph.node(node).outputs.len();
        if port as usize >= n_out {
            return self.err_at(
                at,
                format!("%{name} has {n_out} outputs, no output #{port}"),
            );
        }
        Ok(ValueRef::new(node, port))
    }

    /// `f32[..]`, `(f32[..], ...)` or `()`.
    fn types(&mut self) -> R<Vec<TensorType>> {
        if self.eat("(") {
            self.list(")", |p| p.tensor_type(false))
        } else {
            Ok(vec![self.tensor_type(false)?])
        }
    }

    fn tensor_type(&mut self, introduces_symbols: bool) -> R<TensorType> {
        let at = self.offset();
        let dt = self.ident("a type such as `f32[N,3]`")?;
        let Some(dtype) = DType::from_name(&dt) else {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            return self.err_at(
                at,
                format!(
                    "unknown dtype `{dt}` (expected one of {})",
                    names.join(", ")
                ),
            );
        };
        self.expect("[")?;
        let dims = self.list("]", |p| p.dim(introduces_symbols))?;
        Ok(TensorType::new(dtype, dims))
    }

    fn dim_atom(&mut self, introduces: bool) -> R<Dim> {
        let at = self.offset();
        match self.bump() {
            Tok::Int(n) if n >= 0 => Ok(Dim::Static(n as u64)),
            Tok::Ident(s) if is_symbol_name(&s) => {
                if introduces {
                    self.symbols.insert(s.clone());
                } else if !self.symbols.contains(&s) {
                    let known: Vec<&str> = self.symbols.iter().map(String::as_str).collect();
                    return self.err_at(
                        at,
                        format!(
                            "unknown symbol `{s}`: symbols come from the graph's input types (known: {})",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    );
                }
                Ok(Dim::sym(&s))
            }
            t => self.err_at(
                at,
                format!(
                    "expected a dimension (a size or a symbol), found {}",
                    t.describe()
                ),
            ),
        }
    }

    fn dim(&mut self, introduces: bool) -> R<Dim> {
        let mut d = self.dim_atom(introduces)?;
        while self.eat("*") {
            d = d.mul(&self.dim_atom(introduces)?);
        }
        Ok(d)
    }

    fn attr_dict(&mut self) -> R<Vec<(String, Attr)>> {
        self.expect("{")?;
        self.list("}", |p| {
            let k = p.ident("an attribute name")?;
            p.expect("=")?;
            Ok((k, p.attr()?))
        })
    }

    fn attr(&mut self) -> R<Attr> {
        let at = self.offset();
        let first = match self.bump() {
            Tok::Int(i) => Attr::Int(i),
            Tok::Float(x) => Attr::Float(x),
            Tok::Str(s) => Attr::Str(s),
            Tok::Global(g) => Attr::Global(g),
            Tok::Punct("[") => return Ok(Attr::List(self.list("]", |p| p.attr())?)),
            Tok::Ident(w) => {
                if self.eat("(") {
                    return Ok(Attr::Call(w, self.list(")", |p| p.attr())?));
                }
                Attr::Word(w)
            }
            t => {
                return self.err_at(
                    at,
                    format!("expected an attribute value, found {}", t.describe()),
                )
            }
        };
        if !matches!(self.peek(), Tok::Punct("*")) {
            return Ok(first);
        }
        // A symbolic size such as `2*N` in a reshape or resize target.
        let mut d = self.attr_dim(at, &first)?;
        while self.eat("*") {
            let at = self.offset();
            let next = match self.bump() {
                Tok::Int(i) => Attr::Int(i),
                Tok::Ident(w) => Attr::Word(w),
                t => {
                    return self.err_at(
                        at,
                        format!(
                            "expected a size or symbol after `*`, found {}",
                            t.describe()
                        ),
                    )
                }
            };
            d = d.mul(&self.attr_dim(at, &next)?);
        }
        Ok(Attr::Dim(d))
    }

    fn attr_dim(&self, at: usize, a: &Attr) -> R<Dim> {
        match a {
            Attr::Int(i) if *i >= 0 => Ok(Dim::Static(*i as u64)),
            Attr::Word(w) if self.symbols.contains(w) => Ok(Dim::sym(w)),
            Attr::Word(w) => self.err_at(
                at,
                format!("unknown symbol `{w}`: symbols come from the graph's input types"),
            ),
            _ => self.err_at(at, format!("`{a}` cannot be part of a size")),
        }
    }
}

/// The known op name nearest to a misspelt one (edit distance ≤ 2).
fn closest_op(name: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != b[j]))
                    .min(row[j] + 1)
                    .min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    crate::op::all_op_names()
        .into_iter()
        .map(|n| (distance(name, n), n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}
