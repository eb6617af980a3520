//! Matrix products and convolutions. 1×1 convolutions are GEMMs over the NCHW layout
//! (`Y[n] = W × X[n]`, no data movement); other dense convolutions go through im2col into
//! a buffer and then GEMM; depthwise convolutions get a direct kernel. Bias, residual and
//! the common activations are applied by the GEMM as it stores.

use super::padded::PaddedPlane;
use super::pointwise::{map, unary_expr};
use super::{Arg, Builder};
use crate::kernel::{BiasMode, Body, Cond, Expr, GemmAct, GemmSpec, IExpr, Stmt};
use oar_ir::op::{ConvAttrs, Epilogue, Op, UnaryOp};
use oar_ir::DType;

fn gemm_act(u: Option<UnaryOp>) -> Option<GemmAct> {
    Some(match u {
        None => GemmAct::None,
        Some(UnaryOp::Relu) => GemmAct::Relu,
        Some(UnaryOp::Relu6) => GemmAct::Clip(0.0, 6.0),
        Some(UnaryOp::Clip { min, max }) => GemmAct::Clip(min as f32, max as f32),
        Some(UnaryOp::HardSwish) => GemmAct::HardSwish,
        Some(UnaryOp::HardSigmoid { alpha, beta }) => {
            GemmAct::HardSigmoid(alpha as f32, beta as f32)
        }
        Some(_) => return None,
    })
}

/// Splits an epilogue into what the GEMM applies and what runs after it.
pub(super) struct Tail {
    pub bias: Option<Arg>,
    pub residual: Option<Arg>,
    pub act: GemmAct,
    /// An activation the GEMM cannot apply.
    pub post: Option<UnaryOp>,
}

impl Tail {
    /// The activation part of the epilogue on `v`.
    pub fn activate(&self, v: Expr) -> Expr {
        activation(self.act, self.post, v)
    }

    /// Appends the bias and residual buffers to a kernel's arguments; returns their
    /// parameter indices.
    pub fn push_args(&self, args: &mut Vec<usize>) -> (Option<usize>, Option<usize>) {
        let mut push = |a: &Option<Arg>| {
            a.as_ref().map(|x| {
                args.push(x.buf);
                args.len() - 1
            })
        };
        (push(&self.bias), push(&self.residual))
    }
}

fn activation(act: GemmAct, post: Option<UnaryOp>, v: Expr) -> Expr {
    match post {
        Some(u) => unary_expr(u, v),
        None => act_expr(act, v),
    }
}

fn tail(ep: &Epilogue, extra: &[Arg]) -> Tail {
    let mut rest = extra.iter();
    let bias = if ep.bias { rest.next().cloned() } else { None };
    let residual = if ep.residual {
        rest.next().cloned()
    } else {
        None
    };
    let (act, post) = match gemm_act(ep.activation) {
        Some(a) => (a, None),
        None => (GemmAct::None, ep.activation),
    };
    Tail {
        bias,
        residual,
        act,
        post,
    }
}

pub(crate) fn lower(
    b: &mut Builder,
    name: &str,
    op: &Op,
    ins: &[Arg],
    out: &Arg,
) -> Result<(), String> {
    if out.dtype != DType::F32 {
        return Err("only f32 contractions are compiled".into());
    }
    match op {
        Op::MatMul(mm) => matmul(
            b,
            name,
            ins,
            out,
            mm.transpose_a,
            mm.transpose_b,
            tail(&Epilogue::default(), &[]),
        ),
        Op::FusedMatMul { mm, epilogue } => matmul(
            b,
            name,
            ins,
            out,
            mm.transpose_a,
            mm.transpose_b,
            tail(epilogue, &ins[2..]),
        ),
        Op::Conv2d(c) => {
            let ep = Epilogue {
                bias: ins.len() > 2,
                ..Default::default()
            };
            conv(b, name, c, ins, out, tail(&ep, &ins[2..]))
        }
        Op::FusedConv2d { conv: c, epilogue } => {
            conv(b, name, c, ins, out, tail(epilogue, &ins[2..]))
        }
        Op::Input
        | Op::Param(_)
        | Op::Constant(_)
        | Op::Recv { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Dropout { .. }
        | Op::ConvTranspose2d(_)
        | Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::CausalMask { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Reduce(_)
        | Op::Pool(_)
        | Op::GlobalPool(_)
        | Op::Resize(_)
        | Op::Nms(_)
        | Op::DeformConv2d(_)
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice(_)
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::BroadcastTo { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::Embedding
        | Op::Shape
        | Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::Fused { .. }
        | Op::Grad(_)
        | Op::Send { .. } => Err(format!("internal: {} routed to contraction", op.name())),
    }
}

/// Emits the GEMM (with what it can apply of `t`) writing `out`, then the rest.
#[allow(clippy::too_many_arguments)]
fn gemm(
    b: &mut Builder,
    name: &str,
    a: usize,
    bm: usize,
    out: &Arg,
    mut spec: GemmSpec,
    t: Tail,
    bias_mode: BiasMode,
) -> Result<(), String> {
    let n = spec.n;
    let out_n: i64 = out.shape.iter().product();
    // The GEMM can add a bias of the expected length and a residual of the output's size.
    let bias_len = match bias_mode {
        BiasMode::PerRow => spec.m,
        _ => n,
    };
    let gemm_bias = t
        .bias
        .clone()
        .filter(|x| x.shape.iter().product::<i64>() == bias_len);
    let gemm_res = t
        .residual
        .clone()
        .filter(|x| x.shape.iter().product::<i64>() == out_n);
    let leftover_bias = t.bias.is_some() && gemm_bias.is_none();
    let leftover_res = t.residual.is_some() && gemm_res.is_none();
    let needs_post = leftover_bias || leftover_res || t.post.is_some();
    spec.bias = if gemm_bias.is_some() {
        bias_mode
    } else {
        BiasMode::None
    };
    spec.residual = gemm_res.is_some();
    spec.act = if needs_post { GemmAct::None } else { t.act };
    let target = if needs_post {
        b.temp(&format!("{name}.acc"), &out.shape, DType::F32)
    } else {
        out.buf
    };
    let (mr, nr) = (spec.tile.mr, spec.tile.nr);
    let gemv = spec.m < mr || (spec.n == 1 && spec.ldb == 1);
    if gemv || spec.n < nr {
        let mut args = vec![a, bm, target];
        args.extend(gemm_bias.iter().map(|x| x.buf));
        args.extend(gemm_res.iter().map(|x| x.buf));
        if gemv {
            if !spec.gemv_by_rows() && b.fixed_bufs.contains(&bm) && spec.stride_b == 0 {
                spec.b_packed = true;
                args[1] = pack_b_blocks(b, name, bm, &spec)?;
            }
            // A weight matrix times a vector streams the weight once per run, often from
            // memory: packed so each row block is one contiguous stream.
            if spec.gemv_by_rows() && b.fixed_bufs.contains(&a) && spec.stride_a == 0 {
                spec.a_packed = true;
                args[0] = pack_a_panels(b, name, a, &spec, spec.tile.gemv_rows())?;
            }
            b.kernel(name, &args, Body::Gemv(spec.clone()), spec.gemv_units(), 2)?;
        } else {
            super::gemv::small_n(b, name, &args, &spec)?;
        }
    } else {
        // A weight operand is packed once, in the prologue, instead of on every call.
        let a = if b.fixed_bufs.contains(&a) && spec.stride_a == 0 {
            spec.a_packed = true;
            pack_a_panels(b, name, a, &spec, spec.tile.mr)?
        } else {
            a
        };
        let mut args = vec![a, bm, target];
        args.extend(gemm_bias.iter().map(|x| x.buf));
        args.extend(gemm_res.iter().map(|x| x.buf));
        // Few column panels (a 14×14 or 7×7 map): split rows too (chunks of at least 48),
        // into an even number of units so that two threads get equal shares.
        let ncb = (n + nr - 1) / nr;
        spec.row_chunks = if ncb >= 24 {
            1
        } else {
            let mut rc = (8 + ncb - 1) / ncb;
            if rc * ncb % 2 == 1 {
                rc += 1;
            }
            rc = rc.min((spec.m + 47) / 48).max(1);
            // Tall products (a vocabulary-sized weight gradient, [40000, 128]): split rows
            // so that each thread packs only its rows of A, once, for all columns.
            if spec.m >= 8 * n {
                rc = rc.max(2);
            }
            rc
        };
        let units = spec.batch * spec.row_chunks * ncb;
        let grain = (units / 8).clamp(1, 4);
        b.kernel(name, &args, Body::Gemm(spec.clone()), units, grain)?;
    }
    if needs_post {
        let acc = Arg {
            buf: target,
            shape: out.shape.clone(),
            dtype: DType::F32,
        };
        let mut ins = vec![acc];
        let bias_arg = if leftover_bias { t.bias.clone() } else { None };
        let res_arg = if leftover_res {
            t.residual.clone()
        } else {
            None
        };
        // A conv bias that was not fused is per channel: [C] as [C, 1, 1].
        let bias_arg = bias_arg.map(|x| match bias_mode {
            BiasMode::PerRow => Arg {
                shape: vec![x.shape.iter().product(), 1, 1],
                ..x
            },
            _ => x,
        });
        ins.extend(bias_arg.clone());
        ins.extend(res_arg.clone());
        let act = t.act;
        let post = t.post;
        let has_bias = bias_arg.is_some();
        let has_res = res_arg.is_some();
        map(b, &format!("{name}.epilogue"), &ins, out, move |x, _| {
            let mut v = x[0].clone();
            let mut k = 1;
            if has_bias {
                v = v.add(x[k].clone());
                k += 1;
            }
            if has_res {
                v = v.add(x[k].clone());
            }
            activation(act, post, v)
        })?;
    }
    Ok(())
}

/// B (k × n, row stride ldb) copied into the GEMV's column-block layout (see
/// [`GemmSpec::b_packed`]) by a prologue step; returns the packed buffer.
fn pack_b_blocks(b: &mut Builder, name: &str, bm: usize, s: &GemmSpec) -> Result<usize, String> {
    let name = format!("{name}.bpack");
    pack_panels(b, &name, bm, [s.n, s.tile.gemv_cols(), s.k], [1, s.ldb])
}

/// A (m × k, row stride lda) copied into `width`-row panels (see [`GemmSpec::a_packed`]:
/// MR for the GEMM's micro-kernel, one vector for a GEMV by rows) by a prologue step;
/// returns the packed buffer.
fn pack_a_panels(
    b: &mut Builder,
    name: &str,
    a: usize,
    s: &GemmSpec,
    width: i64,
) -> Result<usize, String> {
    let name = format!("{name}.apack");
    let strides = if s.trans_a { [1, s.lda] } else { [s.lda, 1] };
    pack_panels(b, &name, a, [s.m, width, s.k], strides)
}

/// A prologue step copying a matrix into panels: `[len, width, depth]` cuts the axis of
/// length `len` into ⌈len / width⌉ panels, each `depth` deep and `width` wide,
/// `P[(p·depth + d)·width + w]` = `src[(p·width + w)·strides[0] + d·strides[1]]`, zero past
/// `len`. Returns the packed buffer, fixed like its source.
fn pack_panels(
    b: &mut Builder,
    name: &str,
    src: usize,
    [len, width, depth]: [i64; 3],
    strides: [i64; 2],
) -> Result<usize, String> {
    let panels = (len + width - 1) / width;
    let packed = b.temp(name, &[panels * width * depth], DType::F32);
    let (p, d, w) = (IExpr::v(0), IExpr::v(1), IExpr::v(2));
    let at = p.clone().mul(width).add(w.clone());
    let body = vec![Stmt::par(
        panels,
        vec![Stmt::seq(
            1,
            depth,
            vec![Stmt::seq(
                2,
                width,
                vec![Stmt::Store {
                    buf: 0,
                    idx: p.mul(depth).add(d.clone()).mul(width).add(w),
                    val: Expr::LoadIf(
                        1,
                        at.clone().mul(strides[0]).add(d.mul(strides[1])),
                        Cond::InRange(at, len),
                    ),
                }],
            )],
        )],
    )];
    b.fixed_kernel(name, &[packed, src], Body::Loops(body), panels, packed)?;
    Ok(packed)
}

pub(super) fn act_expr(a: GemmAct, v: Expr) -> Expr {
    match a {
        GemmAct::None => v,
        GemmAct::Relu => unary_expr(UnaryOp::Relu, v),
        GemmAct::Clip(lo, hi) => unary_expr(
            UnaryOp::Clip {
                min: lo as f64,
                max: hi as f64,
            },
            v,
        ),
        GemmAct::HardSwish => unary_expr(UnaryOp::HardSwish, v),
        GemmAct::HardSigmoid(al, be) => unary_expr(
            UnaryOp::HardSigmoid {
                alpha: al as f64,
                beta: be as f64,
            },
            v,
        ),
    }
}

/// A copy of `x` with its last two dims swapped.
fn transposed(b: &mut Builder, name: &str, x: &Arg) -> Result<Arg, String> {
    let r = x.shape.len();
    let mut shape = x.shape.clone();
    shape.swap(r - 2, r - 1);
    let buf = b.temp(&format!("{name}.T"), &shape, x.dtype);
    let out = Arg {
        buf,
        shape: shape.clone(),
        dtype: x.dtype,
    };
    let (rows, cols) = (x.shape[r - 2], x.shape[r - 1]);
    let n: i64 = shape.iter().product();
    let i = IExpr::v(0);
    // out[.., c, r] = x[.., r, c]
    let batch = i.clone().div(rows * cols);
    let c = i.clone().div(rows).rem(cols);
    let rr = i.clone().rem(rows);
    let src = batch.mul(rows * cols).add(rr.mul(cols)).add(c);
    let body = vec![Stmt::par(
        n,
        vec![Stmt::Store {
            buf: 0,
            idx: i,
            val: Expr::Load(1, src),
        }],
    )];
    b.kernel(
        &format!("{name}.T"),
        &[buf, x.buf],
        Body::Loops(body),
        n,
        super::pointwise::GRAIN,
    )?;
    Ok(out)
}

fn matmul(
    b: &mut Builder,
    name: &str,
    ins: &[Arg],
    out: &Arg,
    ta: bool,
    tb: bool,
    t: Tail,
) -> Result<(), String> {
    let (a, w) = (&ins[0], &ins[1]);
    let (ra, rb) = (a.shape.len(), w.shape.len());
    let (m, k) = if ta {
        (a.shape[ra - 1], a.shape[ra - 2])
    } else {
        (a.shape[ra - 2], a.shape[ra - 1])
    };
    let n = if tb { w.shape[rb - 2] } else { w.shape[rb - 1] };
    let batch_a: i64 = a.shape[..ra - 2].iter().product();
    let batch_b: i64 = w.shape[..rb - 2].iter().product();
    // Transposed operands are read in place by the blocked GEMM's packing; the GEMV and
    // narrow-product kernels read row-major operands only, so there they are copied.
    let rows = if batch_b == 1 && !ta { batch_a * m } else { m };
    let tile = b.tiling;
    if (ta || tb) && (rows < tile.mr || n < tile.nr) {
        let a = if ta {
            transposed(b, name, a)?
        } else {
            a.clone()
        };
        let w = if tb {
            transposed(b, name, w)?
        } else {
            w.clone()
        };
        return matmul(b, name, &[a, w], out, false, false, t);
    }
    let spec = |m: i64, batch: i64, sa: i64, sb: i64| GemmSpec {
        m,
        n,
        k,
        lda: if ta { m } else { k },
        ldb: if tb { k } else { n },
        ldc: n,
        batch,
        stride_a: sa,
        stride_b: sb,
        stride_c: m * n,
        row_chunks: 1,
        a_packed: false,
        b_packed: false,
        trans_a: ta,
        trans_b: tb,
        bias: BiasMode::None,
        residual: false,
        act: GemmAct::None,
        tile,
    };
    let s = if batch_b == 1 && !ta {
        // Row-major A: the batches are more rows of one product.
        spec(batch_a * m, 1, 0, 0)
    } else if batch_b == 1 {
        spec(m, batch_a, m * k, 0)
    } else if batch_a == batch_b {
        spec(m, batch_a, m * k, k * n)
    } else if batch_a == 1 {
        spec(m, batch_b, 0, k * n)
    } else {
        return Err(format!(
            "matmul batch broadcast {:?} × {:?} is not compiled",
            a.shape, w.shape
        ));
    };
    gemm(b, name, a.buf, w.buf, out, s, t, BiasMode::PerCol)
}

fn conv(
    b: &mut Builder,
    name: &str,
    c: &ConvAttrs,
    ins: &[Arg],
    out: &Arg,
    t: Tail,
) -> Result<(), String> {
    let (x, w) = (&ins[0], &ins[1]);
    let [n, ci, h, wd] = x.shape[..] else {
        return Err("conv input must be NCHW".into());
    };
    let [co, cig, kh, kw] = w.shape[..] else {
        return Err("conv weight must be OIHW".into());
    };
    let (oh, ow) = (out.shape[2], out.shape[3]);
    let g = c.groups as i64;
    if g == 1 && kh == 1 && kw == 1 && c.stride == [1, 1] && c.padding == [0; 4] {
        let s = GemmSpec {
            m: co,
            n: h * wd,
            k: ci,
            lda: ci,
            ldb: h * wd,
            ldc: h * wd,
            batch: n,
            stride_a: 0,
            stride_b: ci * h * wd,
            stride_c: co * h * wd,
            row_chunks: 1,
            a_packed: false,
            b_packed: false,
            trans_a: false,
            trans_b: false,
            bias: BiasMode::None,
            residual: false,
            act: GemmAct::None,
            tile: b.tiling,
        };
        return gemm(b, name, w.buf, x.buf, out, s, t, BiasMode::PerRow);
    }
    let d = [n, ci, h, wd, co, kh, kw, oh, ow];
    if super::padded::small_window_conv(b, name, c, x, w, out, &d, &t)? {
        return Ok(());
    }
    if g == 1 {
        // im2col: col[n][(c·kh + i)·kw + j][p] = x[n, c, oy·s − pad + i·d, ox·s − pad + j·d].
        let kk = ci * kh * kw;
        let col = b.temp(&format!("{name}.im2col"), &[n, kk, oh * ow], DType::F32);
        let r = IExpr::v(0);
        let (oy, ox) = (IExpr::v(1), IExpr::v(2));
        let nn = r.clone().div(kk);
        let rc = r.clone().rem(kk);
        let cc = rc.clone().div(kh * kw);
        let ki = rc.clone().div(kw).rem(kh);
        let kj = rc.rem(kw);
        // Read from a zero-padded copy of the input: no bounds checks in the gather.
        let (src_buf, plane_len, wp) = if c.padding.iter().any(|&p| p > 0) {
            let pp = PaddedPlane::unphased(c, h, wd, kw);
            (pp.copy_planes(b, name, x.buf, n * ci)?, pp.size(), pp.wq)
        } else {
            (x.buf, h * wd, wd)
        };
        let iy = oy
            .clone()
            .mul(c.stride[0] as i64)
            .add(ki.mul(c.dilation[0] as i64));
        let ix = ox
            .clone()
            .mul(c.stride[1] as i64)
            .add(kj.mul(c.dilation[1] as i64));
        let src = nn.mul(ci).add(cc).mul(plane_len).add(iy.mul(wp)).add(ix);
        let dst = r.clone().mul(oh * ow).add(oy.mul(ow)).add(ox);
        let body = vec![Stmt::par(
            n * kk,
            vec![Stmt::seq(
                1,
                oh,
                vec![Stmt::seq(
                    2,
                    ow,
                    vec![Stmt::Store {
                        buf: 0,
                        idx: dst,
                        val: Expr::Load(1, src),
                    }],
                )],
            )],
        )];
        b.kernel(
            &format!("{name}.im2col"),
            &[col, src_buf],
            Body::Loops(body),
            n * kk,
            8,
        )?;
        let s = GemmSpec {
            m: co,
            n: oh * ow,
            k: kk,
            lda: kk,
            ldb: oh * ow,
            ldc: oh * ow,
            batch: n,
            stride_a: 0,
            stride_b: kk * oh * ow,
            stride_c: co * oh * ow,
            row_chunks: 1,
            a_packed: false,
            b_packed: false,
            trans_a: false,
            trans_b: false,
            bias: BiasMode::None,
            residual: false,
            act: GemmAct::None,
            tile: b.tiling,
        };
        return gemm(b, name, w.buf, col, out, s, t, BiasMode::PerRow);
    }
    if cig == 1 && g == ci {
        return super::depthwise::depthwise(b, name, c, x, w, out, &d, &t);
    }
    super::depthwise::direct_conv(
        b,
        name,
        c,
        x,
        w,
        out,
        &[n, ci, h, wd, co, cig, kh, kw, oh, ow],
        t,
    )
}
