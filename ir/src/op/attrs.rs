//! Ops as (name, attribute list) and back: the one place that knows each op's spelling in
//! the text format. Attributes equal to their default are left out when printing.

use super::*;
use crate::types::TensorType;
use std::fmt;

/// An attribute value as written in the text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Str(String),
    /// A bare word: an enum case, `true`/`false`, or a dimension symbol.
    Word(String),
    /// A module-level name such as a mesh (`@m`).
    Global(String),
    /// A symbolic product such as `2*N`.
    Dim(Dim),
    List(Vec<Attr>),
    /// `normal(0.0, 0.02)`.
    Call(String, Vec<Attr>),
}

/// Why an attribute list does not make an op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct AttrError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, AttrError> {
    Err(AttrError(msg.into()))
}

/// Writes a string literal with the escapes the lexer reads back.
pub(crate) fn write_str_literal(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            // `{:?}` is the shortest text that parses back to the same f64.
            Attr::Float(x) => write!(f, "{x:?}"),
            Attr::Str(s) => write_str_literal(f, s),
            Attr::Word(w) => f.write_str(w),
            Attr::Global(g) => write!(f, "@{g}"),
            Attr::Dim(d) => write!(f, "{d}"),
            Attr::List(items) => {
                f.write_str("[")?;
                for (i, a) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Attr::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

const UNARY_NAMES: [(&str, UnaryOp); 14] = [
    ("neg", UnaryOp::Neg),
    ("exp", UnaryOp::Exp),
    ("log", UnaryOp::Log),
    ("sqrt", UnaryOp::Sqrt),
    ("rsqrt", UnaryOp::Rsqrt),
    ("tanh", UnaryOp::Tanh),
    ("erf", UnaryOp::Erf),
    ("abs", UnaryOp::Abs),
    ("relu", UnaryOp::Relu),
    ("relu6", UnaryOp::Relu6),
    ("sigmoid", UnaryOp::Sigmoid),
    ("hardswish", UnaryOp::HardSwish),
    ("silu", UnaryOp::Silu),
    ("mish", UnaryOp::Mish),
];

const BINARY_NAMES: [(&str, BinaryOp); 10] = [
    ("add", BinaryOp::Add),
    ("sub", BinaryOp::Sub),
    ("mul", BinaryOp::Mul),
    ("div", BinaryOp::Div),
    ("pow", BinaryOp::Pow),
    ("max", BinaryOp::Max),
    ("min", BinaryOp::Min),
    ("equal", BinaryOp::Equal),
    ("less", BinaryOp::Less),
    ("greater", BinaryOp::Greater),
];

const REDUCE_NAMES: [(&str, ReduceOp); 5] = [
    ("reduce_sum", ReduceOp::Sum),
    ("reduce_mean", ReduceOp::Mean),
    ("reduce_max", ReduceOp::Max),
    ("reduce_min", ReduceOp::Min),
    ("reduce_prod", ReduceOp::Prod),
];

const COORD_NAMES: [(&str, CoordMode); 4] = [
    ("half_pixel", CoordMode::HalfPixel),
    ("align_corners", CoordMode::AlignCorners),
    ("asymmetric", CoordMode::Asymmetric),
    ("pytorch_half_pixel", CoordMode::PytorchHalfPixel),
];

/// The text-format name of an op.
pub(super) fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Input => "input",
        Op::FusedConv2d { .. } => "fused_conv2d",
        Op::FusedMatMul { .. } => "fused_matmul",
        Op::Fused { .. } => "fused",
        Op::Param(_) => "param",
        Op::Constant(_) => "constant",
        Op::Unary(u) => match u {
            UnaryOp::LeakyRelu { .. } => "leaky_relu",
            UnaryOp::HardSigmoid { .. } => "hardsigmoid",
            UnaryOp::Gelu { .. } => "gelu",
            UnaryOp::Clip { .. } => "clip",
            _ => UNARY_NAMES
                .iter()
                .find(|(_, x)| x == u)
                .map(|(n, _)| *n)
                .expect("every attribute-free unary op is in UNARY_NAMES"),
        },
        Op::Binary(b) => BINARY_NAMES
            .iter()
            .find(|(_, x)| x == b)
            .map(|(n, _)| *n)
            .expect("every binary op is in BINARY_NAMES"),
        Op::Where => "where",
        Op::Cast { .. } => "cast",
        Op::Dropout { .. } => "dropout",
        Op::MatMul(_) => "matmul",
        Op::Conv2d(_) => "conv2d",
        Op::ConvTranspose2d(_) => "conv_transpose2d",
        Op::BatchNorm { .. } => "batch_norm",
        Op::LayerNorm { .. } => "layer_norm",
        Op::Softmax { .. } => "softmax",
        Op::CausalMask { .. } => "causal_mask",
        Op::LogSoftmax { .. } => "log_softmax",
        Op::Reduce(r) => REDUCE_NAMES
            .iter()
            .find(|(_, x)| *x == r.op)
            .map(|(n, _)| *n)
            .expect("every reduce op is in REDUCE_NAMES"),
        Op::Pool(p) => match p.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        },
        Op::GlobalPool(PoolKind::Max) => "global_max_pool",
        Op::GlobalPool(PoolKind::Avg) => "global_avg_pool",
        Op::Resize(_) => "resize",
        Op::Concat { .. } => "concat",
        Op::Split { .. } => "split",
        Op::Slice(_) => "slice",
        Op::Reshape { .. } => "reshape",
        Op::Transpose { .. } => "transpose",
        Op::Squeeze { .. } => "squeeze",
        Op::Unsqueeze { .. } => "unsqueeze",
        Op::Flatten { .. } => "flatten",
        Op::Gather { .. } => "gather",
        Op::GatherElements { .. } => "gather_elements",
        Op::Embedding => "embedding",
        Op::AllReduce { .. } => "all_reduce",
        Op::AllGather { .. } => "all_gather",
        Op::ReduceScatter { .. } => "reduce_scatter",
        Op::AllToAll { .. } => "all_to_all",
        Op::Broadcast { .. } => "broadcast",
        Op::Send { .. } => "send",
        Op::Recv { .. } => "recv",
    }
}

/// Every op name the text format knows, for error messages.
pub fn all_op_names() -> Vec<&'static str> {
    let mut v = vec![
        "input",
        "param",
        "constant",
        "leaky_relu",
        "hardsigmoid",
        "gelu",
        "clip",
        "where",
        "cast",
        "dropout",
        "matmul",
        "conv2d",
        "conv_transpose2d",
        "batch_norm",
        "layer_norm",
        "softmax",
        "causal_mask",
        "log_softmax",
        "max_pool",
        "avg_pool",
        "global_max_pool",
        "global_avg_pool",
        "resize",
        "concat",
        "split",
        "slice",
        "reshape",
        "transpose",
        "squeeze",
        "unsqueeze",
        "flatten",
        "gather",
        "gather_elements",
        "embedding",
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
        "broadcast",
        "send",
        "recv",
        "fused_conv2d",
        "fused_matmul",
        "fused",
    ];
    v.extend(UNARY_NAMES.iter().map(|(n, _)| *n));
    v.extend(BINARY_NAMES.iter().map(|(n, _)| *n));
    v.extend(REDUCE_NAMES.iter().map(|(n, _)| *n));
    v
}

/// Collects attributes for printing, skipping those equal to their default.
#[derive(Default)]
struct AttrWriter(Vec<(&'static str, Attr)>);

impl AttrWriter {
    fn put(&mut self, name: &'static str, a: Attr) -> &mut Self {
        self.0.push((name, a));
        self
    }
    fn put_unless<T: PartialEq>(
        &mut self,
        name: &'static str,
        v: T,
        default: T,
        a: Attr,
    ) -> &mut Self {
        if v != default {
            self.0.push((name, a));
        }
        self
    }
}

fn ints<I: IntoIterator<Item = T>, T: TryInto<i64>>(v: I) -> Attr {
    Attr::List(
        v.into_iter()
            .map(|x| Attr::Int(x.try_into().unwrap_or(i64::MAX)))
            .collect(),
    )
}

fn word(s: &str) -> Attr {
    Attr::Word(s.to_string())
}

fn boolean(b: bool) -> Attr {
    word(if b { "true" } else { "false" })
}

fn dim_attr(d: &Dim) -> Attr {
    match d {
        Dim::Static(n) => Attr::Int(*n as i64),
        Dim::Sym(_) => Attr::Dim(d.clone()),
    }
}

fn group_attrs(w: &mut AttrWriter, g: &CommGroup) {
    w.put("mesh", Attr::Global(g.mesh.clone()))
        .put("mesh_axis", Attr::Int(g.axis as i64));
}

fn conv_attrs(w: &mut AttrWriter, c: &ConvAttrs) {
    let d = ConvAttrs::default();
    w.put_unless("stride", c.stride, d.stride, ints(c.stride))
        .put_unless("padding", c.padding, d.padding, ints(c.padding))
        .put_unless("dilation", c.dilation, d.dilation, ints(c.dilation))
        .put_unless("groups", c.groups, d.groups, Attr::Int(c.groups as i64));
}

/// An activation as an attribute value: a word, or a call carrying its parameters.
pub fn activation_attr(u: &UnaryOp) -> Attr {
    match *u {
        UnaryOp::LeakyRelu { alpha } => Attr::Call("leaky_relu".into(), vec![Attr::Float(alpha)]),
        UnaryOp::HardSigmoid { alpha, beta } => Attr::Call(
            "hardsigmoid".into(),
            vec![Attr::Float(alpha), Attr::Float(beta)],
        ),
        UnaryOp::Clip { min, max } => {
            Attr::Call("clip".into(), vec![Attr::Float(min), Attr::Float(max)])
        }
        UnaryOp::Gelu { tanh: true } => word("gelu_tanh"),
        UnaryOp::Gelu { tanh: false } => word("gelu"),
        _ => word(op_name(&Op::Unary(*u))),
    }
}

fn epilogue_attrs(w: &mut AttrWriter, e: &Epilogue) {
    w.put_unless("bias", e.bias, false, boolean(true))
        .put_unless("residual", e.residual, false, boolean(true));
    if let Some(a) = &e.activation {
        w.put("act", activation_attr(a));
    }
}

/// The attributes of an op, in printing order, defaults left out.
pub fn op_attrs(op: &Op) -> Vec<(&'static str, Attr)> {
    let mut w = AttrWriter::default();
    match op {
        Op::Input | Op::Where | Op::Embedding | Op::GlobalPool(_) | Op::Binary(_) => {}
        Op::Param(p) => {
            w.put("name", Attr::Str(p.name.clone()));
            if let Some(init) = &p.init {
                let (n, args) = match init {
                    Init::Constant(v) => ("constant", vec![*v]),
                    Init::Normal { mean, std } => ("normal", vec![*mean, *std]),
                    Init::Uniform { low, high } => ("uniform", vec![*low, *high]),
                };
                w.put(
                    "init",
                    Attr::Call(n.into(), args.into_iter().map(Attr::Float).collect()),
                );
            }
        }
        Op::Constant(lit) => {
            let items = match lit {
                Literal::Floats(v) => v.iter().map(|x| Attr::Float(*x)).collect(),
                Literal::Ints(v) => v.iter().map(|x| Attr::Int(*x)).collect(),
            };
            w.put("value", Attr::List(items));
        }
        Op::Unary(u) => match *u {
            UnaryOp::LeakyRelu { alpha } => {
                w.put_unless("alpha", alpha, 0.01, Attr::Float(alpha));
            }
            UnaryOp::HardSigmoid { alpha, beta } => {
                w.put_unless("alpha", alpha, 0.2, Attr::Float(alpha))
                    .put_unless("beta", beta, 0.5, Attr::Float(beta));
            }
            UnaryOp::Gelu { tanh } => {
                w.put_unless("approximate", tanh, false, word("tanh"));
            }
            UnaryOp::Clip { min, max } => {
                w.put_unless("min", min, f64::NEG_INFINITY, Attr::Float(min))
                    .put_unless("max", max, f64::INFINITY, Attr::Float(max));
            }
            _ => {}
        },
        Op::Cast { to } => {
            w.put("to", word(to.name()));
        }
        Op::Dropout { p } => {
            w.put("p", Attr::Float(*p));
        }
        Op::MatMul(m) => {
            w.put_unless("transpose_a", m.transpose_a, false, boolean(true))
                .put_unless("transpose_b", m.transpose_b, false, boolean(true));
        }
        Op::Conv2d(c) => conv_attrs(&mut w, c),
        Op::ConvTranspose2d(c) => {
            conv_attrs(&mut w, &c.conv);
            w.put_unless(
                "output_padding",
                c.output_padding,
                [0, 0],
                ints(c.output_padding),
            );
        }
        Op::BatchNorm { eps } => {
            w.put_unless("eps", *eps, 1e-5, Attr::Float(*eps));
        }
        Op::LayerNorm { axis, eps } => {
            w.put_unless("axis", *axis, -1, Attr::Int(*axis))
                .put_unless("eps", *eps, 1e-5, Attr::Float(*eps));
        }
        Op::CausalMask { fill } => {
            w.put("fill", Attr::Float(*fill));
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            w.put_unless("axis", *axis, -1, Attr::Int(*axis));
        }
        Op::Reduce(r) => {
            w.put("axes", ints(r.axes.iter().copied())).put_unless(
                "keepdims",
                r.keepdims,
                false,
                boolean(true),
            );
        }
        Op::Pool(p) => {
            w.put("kernel", ints(p.kernel))
                .put_unless("stride", p.stride, [1, 1], ints(p.stride))
                .put_unless("padding", p.padding, [0; 4], ints(p.padding))
                .put_unless("ceil_mode", p.ceil_mode, false, boolean(true))
                .put_unless(
                    "count_include_pad",
                    p.count_include_pad,
                    false,
                    boolean(true),
                );
        }
        Op::Resize(r) => {
            let mode = match r.mode {
                ResizeMode::Nearest => "nearest",
                ResizeMode::Bilinear => "bilinear",
            };
            let coord = COORD_NAMES
                .iter()
                .find(|(_, c)| *c == r.coord)
                .map(|(n, _)| *n)
                .unwrap_or("half_pixel");
            w.put("mode", word(mode))
                .put_unless("coord", r.coord, CoordMode::HalfPixel, word(coord))
                .put("size", Attr::List(r.size.iter().map(dim_attr).collect()));
        }
        Op::Concat { axis }
        | Op::Flatten { axis }
        | Op::Gather { axis }
        | Op::GatherElements { axis } => {
            w.put("axis", Attr::Int(*axis));
        }
        Op::Split { axis, sizes } => {
            w.put("axis", Attr::Int(*axis))
                .put("sizes", ints(sizes.iter().copied()));
        }
        Op::Slice(s) => {
            w.put("axes", ints(s.axes.iter().copied()))
                .put("starts", ints(s.starts.iter().copied()))
                .put("ends", ints(s.ends.iter().copied()));
            if s.steps.iter().any(|&x| x != 1) {
                w.put("steps", ints(s.steps.iter().copied()));
            }
        }
        Op::Reshape { shape } => {
            let items = shape
                .iter()
                .map(|d| match d {
                    ReshapeDim::Infer => Attr::Int(-1),
                    ReshapeDim::Dim(d) => dim_attr(d),
                })
                .collect();
            w.put("shape", Attr::List(items));
        }
        Op::Transpose { perm } => {
            w.put("perm", ints(perm.iter().copied()));
        }
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
            w.put("axes", ints(axes.iter().copied()));
        }
        Op::AllReduce { op, group } => {
            w.put("op", word(op.name()));
            group_attrs(&mut w, group);
        }
        Op::AllGather { axis, group } => {
            w.put("axis", Attr::Int(*axis));
            group_attrs(&mut w, group);
        }
        Op::ReduceScatter { op, axis, group } => {
            w.put("op", word(op.name())).put("axis", Attr::Int(*axis));
            group_attrs(&mut w, group);
        }
        Op::AllToAll {
            split_axis,
            concat_axis,
            group,
        } => {
            w.put("split_axis", Attr::Int(*split_axis))
                .put("concat_axis", Attr::Int(*concat_axis));
            group_attrs(&mut w, group);
        }
        Op::Broadcast { root, group } => {
            w.put("root", Attr::Int(*root as i64));
            group_attrs(&mut w, group);
        }
        Op::FusedConv2d { conv, epilogue } => {
            conv_attrs(&mut w, conv);
            epilogue_attrs(&mut w, epilogue);
        }
        Op::FusedMatMul { mm, epilogue } => {
            w.put_unless("transpose_a", mm.transpose_a, false, boolean(true))
                .put_unless("transpose_b", mm.transpose_b, false, boolean(true));
            epilogue_attrs(&mut w, epilogue);
        }
        Op::Fused { func } => {
            w.put("func", Attr::Global(func.clone()));
        }
        Op::Send { peer } | Op::Recv { peer } => {
            w.put("peer", Attr::Int(*peer as i64));
        }
    }
    w.0
}

/// Reads a named attribute list, tracking which were used so leftovers are reported.
struct AttrReader<'a> {
    op: &'a str,
    attrs: Vec<(String, Attr, bool)>,
}

impl<'a> AttrReader<'a> {
    fn new(op: &'a str, attrs: Vec<(String, Attr)>) -> Self {
        AttrReader {
            op,
            attrs: attrs.into_iter().map(|(k, v)| (k, v, false)).collect(),
        }
    }

    fn take(&mut self, name: &str) -> Option<Attr> {
        let slot = self
            .attrs
            .iter_mut()
            .find(|(k, _, used)| k == name && !*used)?;
        slot.2 = true;
        Some(slot.1.clone())
    }

    fn need(&mut self, name: &str) -> Result<Attr, AttrError> {
        let op = self.op;
        self.take(name)
            .ok_or_else(|| AttrError(format!("`{op}` needs attribute `{name}`")))
    }

    fn bad<T>(&self, name: &str, want: &str, got: &Attr) -> Result<T, AttrError> {
        err(format!(
            "`{}` attribute `{name}` must be {want}, found `{got}`",
            self.op
        ))
    }

    fn to_int(&self, name: &str, a: &Attr) -> Result<i64, AttrError> {
        match a {
            Attr::Int(i) => Ok(*i),
            _ => self.bad(name, "an integer", a),
        }
    }

    fn to_uint(&self, name: &str, a: &Attr) -> Result<u64, AttrError> {
        match a {
            Attr::Int(i) if *i >= 0 => Ok(*i as u64),
            _ => self.bad(name, "a non-negative integer", a),
        }
    }

    fn int(&mut self, name: &str) -> Result<i64, AttrError> {
        let a = self.need(name)?;
        self.to_int(name, &a)
    }

    fn int_or(&mut self, name: &str, d: i64) -> Result<i64, AttrError> {
        match self.take(name) {
            Some(a) => self.to_int(name, &a),
            None => Ok(d),
        }
    }

    fn uint(&mut self, name: &str) -> Result<u64, AttrError> {
        let a = self.need(name)?;
        self.to_uint(name, &a)
    }

    fn uint_or(&mut self, name: &str, d: u64) -> Result<u64, AttrError> {
        match self.take(name) {
            Some(a) => self.to_uint(name, &a),
            None => Ok(d),
        }
    }

    fn float_of(&self, name: &str, a: &Attr) -> Result<f64, AttrError> {
        match a {
            Attr::Float(x) => Ok(*x),
            Attr::Int(i) => Ok(*i as f64),
            _ => self.bad(name, "a number", a),
        }
    }

    fn float_or(&mut self, name: &str, d: f64) -> Result<f64, AttrError> {
        match self.take(name) {
            Some(a) => self.float_of(name, &a),
            None => Ok(d),
        }
    }

    fn float(&mut self, name: &str) -> Result<f64, AttrError> {
        let a = self.need(name)?;
        self.float_of(name, &a)
    }

    fn bool_or(&mut self, name: &str, d: bool) -> Result<bool, AttrError> {
        match self.take(name) {
            Some(Attr::Word(w)) if w == "true" => Ok(true),
            Some(Attr::Word(w)) if w == "false" => Ok(false),
            Some(a) => self.bad(name, "`true` or `false`", &a),
            None => Ok(d),
        }
    }

    fn word(&mut self, name: &str, choices: &[&str]) -> Result<String, AttrError> {
        match self.need(name)? {
            Attr::Word(w) if choices.contains(&w.as_str()) => Ok(w),
            a => self.bad(name, &format!("one of {}", choices.join(", ")), &a),
        }
    }

    fn list(&mut self, name: &str) -> Result<Vec<Attr>, AttrError> {
        match self.need(name)? {
            Attr::List(v) => Ok(v),
            a => self.bad(name, "a list", &a),
        }
    }

    fn ints(&mut self, name: &str) -> Result<Vec<i64>, AttrError> {
        let l = self.list(name)?;
        l.iter().map(|a| self.to_int(name, a)).collect()
    }

    fn ints_or(&mut self, name: &str, d: Vec<i64>) -> Result<Vec<i64>, AttrError> {
        if self.attrs.iter().any(|(k, _, u)| k == name && !u) {
            self.ints(name)
        } else {
            Ok(d)
        }
    }

    fn uints(&mut self, name: &str) -> Result<Vec<u64>, AttrError> {
        let l = self.list(name)?;
        l.iter().map(|a| self.to_uint(name, a)).collect()
    }

    fn fixed<const K: usize>(
        &mut self,
        name: &str,
        d: Option<[u64; K]>,
    ) -> Result<[u64; K], AttrError> {
        let present = self.attrs.iter().any(|(k, _, u)| k == name && !u);
        let v = match (present, d) {
            (false, Some(d)) => return Ok(d),
            _ => self.uints(name)?,
        };
        v.clone().try_into().or_else(|_| {
            err(format!(
                "`{}` attribute `{name}` must have {K} entries, found {}",
                self.op,
                v.len()
            ))
        })
    }

    fn dim_of(&self, name: &str, a: &Attr) -> Result<Dim, AttrError> {
        match a {
            Attr::Int(i) if *i >= 0 => Ok(Dim::Static(*i as u64)),
            Attr::Word(w) if crate::types::is_symbol_name(w) => Ok(Dim::sym(w)),
            Attr::Dim(d) => Ok(d.clone()),
            _ => self.bad(name, "a size or a symbol", a),
        }
    }

    fn group(&mut self) -> Result<CommGroup, AttrError> {
        let mesh = match self.need("mesh")? {
            Attr::Global(g) => g,
            a => return self.bad("mesh", "a mesh name such as `@m`", &a),
        };
        let axis = self.uint("mesh_axis")? as usize;
        Ok(CommGroup { mesh, axis })
    }

    fn reduce_op(&mut self) -> Result<ReduceOp, AttrError> {
        let names: Vec<&str> = ReduceOp::ALL.iter().map(|r| r.name()).collect();
        let w = self.word("op", &names)?;
        Ok(ReduceOp::from_name(&w).unwrap_or(ReduceOp::Sum))
    }

    fn activation(&mut self) -> Result<Option<UnaryOp>, AttrError> {
        let op = self.op;
        let bad = |a: &Attr| {
            AttrError(format!("`{op}` attribute `act` must be an activation such as relu or hardsigmoid(0.2, 0.5), found `{a}`"))
        };
        let Some(a) = self.take("act") else {
            return Ok(None);
        };
        let nums = |args: &[Attr]| -> Option<Vec<f64>> {
            args.iter()
                .map(|x| match x {
                    Attr::Float(f) => Some(*f),
                    Attr::Int(i) => Some(*i as f64),
                    _ => None,
                })
                .collect()
        };
        let u = match &a {
            Attr::Word(w) if w == "gelu" => UnaryOp::Gelu { tanh: false },
            Attr::Word(w) if w == "gelu_tanh" => UnaryOp::Gelu { tanh: true },
            Attr::Word(w) => UNARY_NAMES
                .iter()
                .find(|(n, _)| n == w)
                .map(|(_, u)| *u)
                .ok_or_else(|| bad(&a))?,
            Attr::Call(f, args) => match (f.as_str(), nums(args).as_deref()) {
                ("leaky_relu", Some([alpha])) => UnaryOp::LeakyRelu { alpha: *alpha },
                ("hardsigmoid", Some([alpha, beta])) => UnaryOp::HardSigmoid {
                    alpha: *alpha,
                    beta: *beta,
                },
                ("clip", Some([min, max])) => UnaryOp::Clip {
                    min: *min,
                    max: *max,
                },
                _ => return Err(bad(&a)),
            },
            _ => return Err(bad(&a)),
        };
        Ok(Some(u))
    }

    fn epilogue(&mut self) -> Result<Epilogue, AttrError> {
        Ok(Epilogue {
            bias: self.bool_or("bias", false)?,
            residual: self.bool_or("residual", false)?,
            activation: self.activation()?,
        })
    }

    fn finish(self, op: Op) -> Result<Op, AttrError> {
        let unused: Vec<&str> = self
            .attrs
            .iter()
            .filter(|(_, _, used)| !used)
            .map(|(k, _, _)| k.as_str())
            .collect();
        if unused.is_empty() {
            Ok(op)
        } else {
            err(format!(
                "`{}` has no attribute {}",
                self.op,
                unused
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    fn conv(&mut self) -> Result<ConvAttrs, AttrError> {
        Ok(ConvAttrs {
            stride: self.fixed("stride", Some([1, 1]))?,
            padding: self.fixed("padding", Some([0; 4]))?,
            dilation: self.fixed("dilation", Some([1, 1]))?,
            groups: self.uint_or("groups", 1)?,
        })
    }
}

fn literal(r: &AttrReader, items: &[Attr], declared: &[TensorType]) -> Result<Literal, AttrError> {
    let float = declared.first().is_none_or(|t| t.dtype.is_float());
    if float {
        items
            .iter()
            .map(|a| r.float_of("value", a))
            .collect::<Result<_, _>>()
            .map(Literal::Floats)
    } else {
        items
            .iter()
            .map(|a| r.to_int("value", a))
            .collect::<Result<_, _>>()
            .map(Literal::Ints)
    }
}

/// Builds an op from its name and attributes. `declared` (the node's written output types)
/// decides how constant literals are stored.
pub fn op_from_attrs(
    name: &str,
    attrs: Vec<(String, Attr)>,
    declared: &[TensorType],
) -> Result<Op, AttrError> {
    let mut r = AttrReader::new(name, attrs);
    if let Some((_, u)) = UNARY_NAMES.iter().find(|(n, _)| *n == name) {
        return r.finish(Op::Unary(*u));
    }
    if let Some((_, b)) = BINARY_NAMES.iter().find(|(n, _)| *n == name) {
        return r.finish(Op::Binary(*b));
    }
    if let Some((_, op)) = REDUCE_NAMES.iter().find(|(n, _)| *n == name) {
        let axes = r.ints_or("axes", vec![])?;
        let keepdims = r.bool_or("keepdims", false)?;
        return r.finish(Op::Reduce(ReduceOverAxes {
            op: *op,
            axes,
            keepdims,
        }));
    }
    let op = match name {
        "input" => Op::Input,
        "param" => {
            let pname = match r.need("name")? {
                Attr::Str(s) => s,
                a => return r.bad("name", "a string", &a),
            };
            let init = match r.take("init") {
                None => None,
                Some(Attr::Call(f, args)) => {
                    let vals: Vec<f64> = args
                        .iter()
                        .map(|a| r.float_of("init", a))
                        .collect::<Result<_, _>>()?;
                    Some(match (f.as_str(), vals.as_slice()) {
                        ("constant", [v]) => Init::Constant(*v),
                        ("normal", [mean, std]) => Init::Normal { mean: *mean, std: *std },
                        ("uniform", [low, high]) => Init::Uniform { low: *low, high: *high },
                        _ => {
                            return err(format!(
                                "`param` init must be constant(v), normal(mean, std) or uniform(low, high), found `{f}` with {} arguments",
                                vals.len()
                            ))
                        }
                    })
                }
                Some(a) => return r.bad("init", "an initializer such as normal(0.0, 0.02)", &a),
            };
            Op::Param(ParamAttrs { name: pname, init })
        }
        "constant" => {
            let items = r.list("value")?;
            Op::Constant(literal(&r, &items, declared)?)
        }
        "leaky_relu" => Op::Unary(UnaryOp::LeakyRelu {
            alpha: r.float_or("alpha", 0.01)?,
        }),
        "hardsigmoid" => Op::Unary(UnaryOp::HardSigmoid {
            alpha: r.float_or("alpha", 0.2)?,
            beta: r.float_or("beta", 0.5)?,
        }),
        "gelu" => Op::Unary(UnaryOp::Gelu {
            tanh: match r.take("approximate") {
                None => false,
                Some(Attr::Word(w)) if w == "tanh" => true,
                Some(Attr::Word(w)) if w == "none" => false,
                Some(a) => return r.bad("approximate", "`tanh` or `none`", &a),
            },
        }),
        "clip" => Op::Unary(UnaryOp::Clip {
            min: r.float_or("min", f64::NEG_INFINITY)?,
            max: r.float_or("max", f64::INFINITY)?,
        }),
        "where" => Op::Where,
        "cast" => {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            let w = r.word("to", &names)?;
            Op::Cast {
                to: DType::from_name(&w).unwrap_or(DType::F32),
            }
        }
        "dropout" => Op::Dropout { p: r.float("p")? },
        "matmul" => Op::MatMul(MatMulAttrs {
            transpose_a: r.bool_or("transpose_a", false)?,
            transpose_b: r.bool_or("transpose_b", false)?,
        }),
        "conv2d" => Op::Conv2d(r.conv()?),
        "conv_transpose2d" => Op::ConvTranspose2d(ConvTransposeAttrs {
            conv: r.conv()?,
            output_padding: r.fixed("output_padding", Some([0, 0]))?,
        }),
        "batch_norm" => Op::BatchNorm {
            eps: r.float_or("eps", 1e-5)?,
        },
        "layer_norm" => Op::LayerNorm {
            axis: r.int_or("axis", -1)?,
            eps: r.float_or("eps", 1e-5)?,
        },
        "causal_mask" => Op::CausalMask {
            fill: r.float("fill")?,
        },
        "softmax" => Op::Softmax {
            axis: r.int_or("axis", -1)?,
        },
        "log_softmax" => Op::LogSoftmax {
            axis: r.int_or("axis", -1)?,
        },
        "max_pool" | "avg_pool" => Op::Pool(PoolAttrs {
            kind: if name == "max_pool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            },
            kernel: r.fixed("kernel", None)?,
            stride: r.fixed("stride", Some([1, 1]))?,
            padding: r.fixed("padding", Some([0; 4]))?,
            ceil_mode: r.bool_or("ceil_mode", false)?,
            count_include_pad: r.bool_or("count_include_pad", false)?,
        }),
        "global_max_pool" => Op::GlobalPool(PoolKind::Max),
        "global_avg_pool" => Op::GlobalPool(PoolKind::Avg),
        "resize" => {
            let mode = match r.word("mode", &["nearest", "bilinear"])?.as_str() {
                "nearest" => ResizeMode::Nearest,
                _ => ResizeMode::Bilinear,
            };
            let coord = match r.take("coord") {
                None => CoordMode::HalfPixel,
                Some(Attr::Word(w)) if COORD_NAMES.iter().any(|(n, _)| *n == w) => COORD_NAMES
                    .iter()
                    .find(|(n, _)| *n == w)
                    .map(|(_, c)| *c)
                    .unwrap_or(CoordMode::HalfPixel),
                Some(a) => {
                    let names: Vec<&str> = COORD_NAMES.iter().map(|(n, _)| *n).collect();
                    return r.bad("coord", &format!("one of {}", names.join(", ")), &a);
                }
            };
            let size = r.list("size")?;
            let dims: Vec<Dim> = size
                .iter()
                .map(|a| r.dim_of("size", a))
                .collect::<Result<_, _>>()?;
            let size: [Dim; 2] = dims.try_into().or_else(|_| {
                err("`resize` attribute `size` must have 2 entries (height, width)")
            })?;
            Op::Resize(ResizeAttrs { mode, coord, size })
        }
        "concat" => Op::Concat {
            axis: r.int("axis")?,
        },
        "flatten" => Op::Flatten {
            axis: r.int_or("axis", 1)?,
        },
        "gather" => Op::Gather {
            axis: r.int_or("axis", 0)?,
        },
        "split" => Op::Split {
            axis: r.int("axis")?,
            sizes: r.uints("sizes")?,
        },
        "slice" => {
            let axes = r.ints("axes")?;
            let starts = r.ints("starts")?;
            let ends = r.ints("ends")?;
            let steps = r.ints_or("steps", vec![1; axes.len()])?;
            Op::Slice(SliceAttrs {
                axes,
                starts,
                ends,
                steps,
            })
        }
        "reshape" => {
            let items = r.list("shape")?;
            let shape = items
                .iter()
                .map(|a| match a {
                    Attr::Int(-1) => Ok(ReshapeDim::Infer),
                    _ => r.dim_of("shape", a).map(ReshapeDim::Dim),
                })
                .collect::<Result<_, _>>()?;
            Op::Reshape { shape }
        }
        "transpose" => Op::Transpose {
            perm: r.uints("perm")?.into_iter().map(|p| p as usize).collect(),
        },
        "squeeze" => Op::Squeeze {
            axes: r.ints("axes")?,
        },
        "unsqueeze" => Op::Unsqueeze {
            axes: r.ints("axes")?,
        },
        "gather_elements" => Op::GatherElements {
            axis: r.int_or("axis", 0)?,
        },
        "embedding" => Op::Embedding,
        "all_reduce" => Op::AllReduce {
            op: r.reduce_op()?,
            group: r.group()?,
        },
        "all_gather" => Op::AllGather {
            axis: r.int("axis")?,
            group: r.group()?,
        },
        "reduce_scatter" => Op::ReduceScatter {
            op: r.reduce_op()?,
            axis: r.int("axis")?,
            group: r.group()?,
        },
        "all_to_all" => Op::AllToAll {
            split_axis: r.int("split_axis")?,
            concat_axis: r.int("concat_axis")?,
            group: r.group()?,
        },
        "broadcast" => Op::Broadcast {
            root: r.uint("root")?,
            group: r.group()?,
        },
        "fused_conv2d" => Op::FusedConv2d {
            conv: r.conv()?,
            epilogue: r.epilogue()?,
        },
        "fused_matmul" => Op::FusedMatMul {
            mm: MatMulAttrs {
                transpose_a: r.bool_or("transpose_a", false)?,
                transpose_b: r.bool_or("transpose_b", false)?,
            },
            epilogue: r.epilogue()?,
        },
        "fused" => match r.need("func")? {
            Attr::Global(func) => Op::Fused { func },
            a => return r.bad("func", "a function name such as `@fused0`", &a),
        },
        "send" => Op::Send {
            peer: r.uint("peer")?,
        },
        "recv" => Op::Recv {
            peer: r.uint("peer")?,
        },
        _ => return err(format!("unknown op `{name}`")),
    };
    r.finish(op)
}
