//! Op → attribute list, for printing.

use super::*;

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

fn pool_attrs(w: &mut AttrWriter, p: &PoolAttrs) {
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

fn grad_attrs(w: &mut AttrWriter, g: &GradOp) {
    match g {
        GradOp::Conv2dWeight { conv, kernel } => {
            conv_attrs(w, conv);
            w.put("kernel", ints(*kernel));
        }
        GradOp::Pool(p) => {
            w.put("kind", word(pool_kind_name(p.kind)));
            pool_attrs(w, p);
        }
        GradOp::ScatterAdd { axis } => {
            w.put("axis", Attr::Int(*axis));
        }
        GradOp::Gather { axis, rows } => {
            w.put("axis", Attr::Int(*axis))
                .put("rows", Attr::Int(*rows as i64));
        }
        GradOp::DeformConv2d(d) => deform_attrs(w, d),
    }
}

fn deform_attrs(w: &mut AttrWriter, d: &DeformConvAttrs) {
    conv_attrs(w, &d.conv);
    w.put_unless(
        "deform_groups",
        d.deform_groups,
        1,
        Attr::Int(d.deform_groups as i64),
    );
}

fn nms_attrs(w: &mut AttrWriter, n: &NmsAttrs) {
    match n.kind {
        NmsKind::Hard { iou_threshold } => {
            w.put("iou_threshold", Attr::Float(iou_threshold));
        }
        NmsKind::Matrix {
            gaussian,
            sigma,
            post_threshold,
        } => {
            w.put("post_threshold", Attr::Float(post_threshold))
                .put_unless("gaussian", gaussian, false, boolean(true))
                .put_unless("sigma", sigma, 2.0, Attr::Float(sigma));
        }
    }
    w.put("score_threshold", Attr::Float(n.score_threshold))
        .put("keep_top_k", Attr::Int(n.keep_top_k as i64));
    let optional = [
        ("nms_top_k", n.nms_top_k),
        ("max_per_class", n.max_per_class),
        ("background", n.background),
    ];
    for (name, v) in optional {
        if let Some(v) = v {
            w.put(name, Attr::Int(v as i64));
        }
    }
    w.put_unless("normalized", n.normalized, true, boolean(false));
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
        UnaryOp::Neg
        | UnaryOp::Exp
        | UnaryOp::Log
        | UnaryOp::Sqrt
        | UnaryOp::Rsqrt
        | UnaryOp::Tanh
        | UnaryOp::Erf
        | UnaryOp::Abs
        | UnaryOp::Relu
        | UnaryOp::Relu6
        | UnaryOp::Sigmoid
        | UnaryOp::HardSwish
        | UnaryOp::Silu
        | UnaryOp::Mish => word(op_name(&Op::Unary(*u))),
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
        Op::Input | Op::Where | Op::Embedding | Op::Shape | Op::GlobalPool(_) | Op::Binary(_) => {}
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
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Tanh
            | UnaryOp::Erf
            | UnaryOp::Abs
            | UnaryOp::Relu
            | UnaryOp::Relu6
            | UnaryOp::Sigmoid
            | UnaryOp::HardSwish
            | UnaryOp::Silu
            | UnaryOp::Mish => {}
        },
        Op::Cast { to } => {
            w.put("to", word(to.name()));
        }
        Op::Dropout { p, mode, mask_of } => {
            w.put("p", Attr::Float(*p)).put_unless(
                "mode",
                *mode,
                DropoutMode::default(),
                word(mode.name()),
            );
            if let Some(m) = mask_of {
                w.put("mask_of", Attr::Str(m.clone()));
            }
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
        Op::BatchNorm { eps, momentum } => {
            w.put_unless("eps", *eps, 1e-5, Attr::Float(*eps));
            if let Some(m) = momentum {
                w.put("momentum", Attr::Float(*m));
            }
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
        Op::Pool(p) => pool_attrs(&mut w, p),
        Op::Nms(n) => nms_attrs(&mut w, n),
        Op::DeformConv2d(d) => deform_attrs(&mut w, d),
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
        Op::BroadcastTo { shape } => {
            w.put("shape", Attr::List(shape.iter().map(dim_attr).collect()));
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
        Op::Grad(g) => grad_attrs(&mut w, g),
    }
    w.0
}
