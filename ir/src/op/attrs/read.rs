//! Attribute list → op, for parsing: names, types and leftovers checked.

use super::*;
use crate::types::TensorType;

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

    fn pool(&mut self, kind: PoolKind) -> Result<PoolAttrs, AttrError> {
        Ok(PoolAttrs {
            kind,
            kernel: self.fixed("kernel", None)?,
            stride: self.fixed("stride", Some([1, 1]))?,
            padding: self.fixed("padding", Some([0; 4]))?,
            ceil_mode: self.bool_or("ceil_mode", false)?,
            count_include_pad: self.bool_or("count_include_pad", false)?,
        })
    }

    fn conv(&mut self) -> Result<ConvAttrs, AttrError> {
        Ok(ConvAttrs {
            stride: self.fixed("stride", Some([1, 1]))?,
            padding: self.fixed("padding", Some([0; 4]))?,
            dilation: self.fixed("dilation", Some([1, 1]))?,
            groups: self.uint_or("groups", 1)?,
        })
    }

    fn deform(&mut self) -> Result<DeformConvAttrs, AttrError> {
        Ok(DeformConvAttrs {
            conv: self.conv()?,
            deform_groups: self.uint_or("deform_groups", 1)?,
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
        "dropout" => Op::Dropout {
            p: r.float("p")?,
            mode: match r.take("mode") {
                None => DropoutMode::default(),
                Some(a) => {
                    let modes = [DropoutMode::UpscaleInTrain, DropoutMode::DownscaleInInfer];
                    match modes.into_iter().find(|m| a == Attr::Word(m.name().into())) {
                        Some(m) => m,
                        None => r.bad("mode", "`upscale_in_train` or `downscale_in_infer`", &a)?,
                    }
                }
            },
            mask_of: match r.take("mask_of") {
                None => None,
                Some(Attr::Str(s)) => Some(s),
                Some(a) => r.bad("mask_of", "a node name in quotes", &a)?,
            },
        },
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
            momentum: match r.take("momentum") {
                Some(a) => Some(r.float_of("momentum", &a)?),
                None => None,
            },
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
        "max_pool" | "avg_pool" => Op::Pool(r.pool(if name == "max_pool" {
            PoolKind::Max
        } else {
            PoolKind::Avg
        })?),
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
        "nms" | "matrix_nms" => {
            let kind = if name == "nms" {
                NmsKind::Hard {
                    iou_threshold: r.float("iou_threshold")?,
                }
            } else {
                NmsKind::Matrix {
                    post_threshold: r.float("post_threshold")?,
                    gaussian: r.bool_or("gaussian", false)?,
                    sigma: r.float_or("sigma", 2.0)?,
                }
            };
            let mut opt = |k: &str| -> Result<Option<u64>, AttrError> {
                match r.take(k) {
                    Some(a) => r.to_uint(k, &a).map(Some),
                    None => Ok(None),
                }
            };
            let (nms_top_k, max_per_class, background) =
                (opt("nms_top_k")?, opt("max_per_class")?, opt("background")?);
            Op::Nms(NmsAttrs {
                kind,
                score_threshold: r.float("score_threshold")?,
                nms_top_k,
                max_per_class,
                keep_top_k: r.uint("keep_top_k")?,
                background,
                normalized: r.bool_or("normalized", true)?,
            })
        }
        "deform_conv2d" => Op::DeformConv2d(r.deform()?),
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
        "broadcast_to" => {
            let items = r.list("shape")?;
            let shape = items
                .iter()
                .map(|a| r.dim_of("shape", a))
                .collect::<Result<_, _>>()?;
            Op::BroadcastTo { shape }
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
        "shape" => Op::Shape,
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
        "conv2d_grad_weight" => Op::Grad(GradOp::Conv2dWeight {
            conv: r.conv()?,
            kernel: r.fixed("kernel", None)?,
        }),
        "pool_grad" => {
            let kind = match r.word("kind", &["max", "avg"])?.as_str() {
                "max" => PoolKind::Max,
                _ => PoolKind::Avg,
            };
            Op::Grad(GradOp::Pool(r.pool(kind)?))
        }
        "scatter_add" => Op::Grad(GradOp::ScatterAdd {
            axis: r.int_or("axis", 0)?,
        }),
        "deform_conv2d_grad" => Op::Grad(GradOp::DeformConv2d(r.deform()?)),
        "gather_grad" => Op::Grad(GradOp::Gather {
            axis: r.int_or("axis", 0)?,
            rows: r.uint("rows")?,
        }),
        _ => return err(format!("unknown op `{name}`")),
    };
    r.finish(op)
}
