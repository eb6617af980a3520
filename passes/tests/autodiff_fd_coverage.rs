//! Every VJP rule is checked against f64 central finite differences, and this file makes
//! that a rule: [`decision`] is an exhaustive `match` over `Op` (and over the unary, binary
//! and reduction kinds, so every activation is decided on its own). A new op does not
//! compile here until someone names the property test that checks its rule, or says why it
//! has no gradient. `every_differentiable_op_names_an_fd_test` then checks that each named
//! test exists and exercises that op (its body spells the op), and the named tests fail if
//! the rule is missing or wrong (`check_gradients` reports an op without a rule as an error).
//!
//! The composite checks below cover what the issue lists beyond single ops: the fused
//! softmax cross-entropy the training losses build, and the attention core.
//! Tolerance: `GradCheck::default()` (f64, h = 1e-5, |Δ| ≤ 1e-8 + 1e-6·|∂|).

use oar_ir::dist::ReduceOp;
use oar_ir::op::{
    all_op_names, op_from_attrs, BinaryOp, CommGroup, ConvAttrs, CoordMode, DropoutMode, GradOp,
    Literal, NmsAttrs, NmsKind, Op, ParamAttrs, PoolAttrs, PoolKind, ResizeAttrs, ResizeMode,
    SliceAttrs, UnaryOp,
};
use oar_ir::{DType, Dim};
use oar_passes::autodiff::check::{check_gradients, uniform, GradCheck};
use oar_runtime::{HostTensor, Weights};
use proptest::prelude::*;

/// How an op's gradient is checked.
#[derive(Debug)]
enum Decision {
    /// Property tests against finite differences: (test file, test function, a string the
    /// function's body must contain to exercise this op or form).
    Fd(&'static [(&'static str, &'static str, &'static str)]),
    /// No gradient, with the reason.
    NoGrad(&'static str),
}

use Decision::{Fd, NoGrad};

const CORE: &str = "autodiff_core.rs";
const CONV: &str = "autodiff_conv.rs";
const THIS: &str = "autodiff_fd_coverage.rs";
const DEFORM: &str = "autodiff_deform.rs";

/// `autodiff_core.rs`'s table of unary cases, which its `unary_ops` proptest runs.
fn unary(u: UnaryOp) -> Decision {
    const T: &str = "UNARY";
    match u {
        UnaryOp::Neg => Fd(&[(CORE, T, "neg(%x)")]),
        UnaryOp::Exp => Fd(&[(CORE, T, "exp(%x)")]),
        UnaryOp::Log => Fd(&[(CORE, T, "log(%x)")]),
        UnaryOp::Sqrt => Fd(&[(CORE, T, "sqrt(%x)")]),
        UnaryOp::Rsqrt => Fd(&[(CORE, T, "rsqrt(%x)")]),
        UnaryOp::Tanh => Fd(&[(CORE, T, "tanh(%x)")]),
        UnaryOp::Erf => Fd(&[(CORE, T, "erf(%x)")]),
        UnaryOp::Abs => Fd(&[(CORE, T, "abs(%x)")]),
        UnaryOp::Relu => Fd(&[
            (CORE, T, "relu(%x)"),
            (CONV, "fused_conv2d_epilogues", "Relu"),
        ]),
        UnaryOp::Relu6 => Fd(&[
            (CORE, T, "relu6(%x)"),
            (CONV, "fused_conv2d_epilogues", "Relu6"),
        ]),
        UnaryOp::LeakyRelu { .. } => Fd(&[(CORE, T, "leaky_relu(%x)")]),
        UnaryOp::Sigmoid => Fd(&[(CORE, T, "sigmoid(%x)")]),
        UnaryOp::HardSigmoid { .. } => Fd(&[(CORE, T, "hardsigmoid(%x)")]),
        UnaryOp::HardSwish => Fd(&[(CORE, T, "hardswish(%x)")]),
        UnaryOp::Gelu { tanh: false } => Fd(&[(CORE, T, "(\"gelu(%x)\"")]),
        UnaryOp::Gelu { tanh: true } => Fd(&[(CORE, T, "gelu(%x) {approximate=tanh}")]),
        UnaryOp::Silu => Fd(&[(CORE, T, "silu(%x)")]),
        UnaryOp::Mish => Fd(&[(CORE, T, "mish(%x)")]),
        UnaryOp::Clip { .. } => Fd(&[(CORE, T, "clip(%x)")]),
    }
}

fn binary(b: BinaryOp) -> Decision {
    const T: &str = "binary_ops_with_broadcasting";
    match b {
        BinaryOp::Add => Fd(&[(CORE, T, "(\"add\"")]),
        BinaryOp::Sub => Fd(&[(CORE, T, "(\"sub\"")]),
        BinaryOp::Mul => Fd(&[(CORE, T, "(\"mul\"")]),
        BinaryOp::Div => Fd(&[(CORE, T, "(\"div\"")]),
        BinaryOp::Pow => Fd(&[(CORE, T, "(\"pow\"")]),
        BinaryOp::Max => Fd(&[(CORE, T, "(\"max\"")]),
        BinaryOp::Min => Fd(&[(CORE, T, "(\"min\"")]),
        BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => {
            NoGrad("comparisons are piecewise constant (bool outputs)")
        }
    }
}

fn reduce(r: ReduceOp) -> Decision {
    const T: &str = "reductions";
    match r {
        ReduceOp::Sum => Fd(&[(CORE, T, "reduce_sum")]),
        ReduceOp::Mean => Fd(&[(CORE, T, "reduce_mean")]),
        ReduceOp::Max => Fd(&[(CORE, T, "reduce_max")]),
        ReduceOp::Min => Fd(&[(CORE, T, "reduce_min")]),
        ReduceOp::Prod => Fd(&[(CORE, T, "reduce_prod")]),
    }
}

/// The gradient decision of every op.
fn decision(op: &Op) -> Decision {
    const SHAPE: &str = "shape_ops";
    const GATHERS: &str = "gathers_accumulate_repeated_indices";
    match op {
        Op::Input | Op::Param(_) | Op::Constant(_) => NoGrad("sources: the walk stops there"),
        Op::Unary(u) => unary(*u),
        Op::Binary(b) => binary(*b),
        Op::Where => Fd(&[(CORE, "where_cast_and_accumulation", "where(")]),
        Op::Cast { .. } => Fd(&[(CORE, "where_cast_and_accumulation", "cast(")]),
        Op::Dropout { .. } => Fd(&[(CORE, "dropout_replays_the_forward_mask", "dropout(")]),
        Op::MatMul(_) => Fd(&[
            (CORE, "matmul_transposes_and_batches", "matmul("),
            (THIS, "attention_core", "matmul("),
        ]),
        Op::Conv2d(_) => Fd(&[(CONV, "conv2d_data_weight_and_bias", "Op::Conv2d")]),
        Op::ConvTranspose2d(_) => Fd(&[(
            CONV,
            "conv_transpose2d_data_weight_and_bias",
            "Op::ConvTranspose2d",
        )]),
        Op::BatchNorm { momentum: None, .. } => {
            Fd(&[(CORE, "batch_norm_both_forms", "batch_norm(")])
        }
        Op::BatchNorm {
            momentum: Some(_), ..
        } => Fd(&[(CORE, "batch_norm_both_forms", "momentum=0.9")]),
        Op::LayerNorm { .. } => Fd(&[(CORE, "layer_norm_softmax_and_mask", "layer_norm(")]),
        Op::CausalMask { .. } => Fd(&[
            (CORE, "layer_norm_softmax_and_mask", "causal_mask("),
            (THIS, "attention_core", "causal_mask("),
        ]),
        Op::Softmax { .. } => Fd(&[
            (CORE, "layer_norm_softmax_and_mask", "softmax("),
            (THIS, "attention_core", "softmax("),
        ]),
        Op::LogSoftmax { .. } => Fd(&[
            (CORE, "layer_norm_softmax_and_mask", "log_softmax("),
            (THIS, "softmax_cross_entropy", "log_softmax("),
        ]),
        Op::Reduce(r) => reduce(r.op),
        Op::Pool(p) => match p.kind {
            PoolKind::Max => Fd(&[(CONV, "pooling", "PoolKind::Max")]),
            PoolKind::Avg => Fd(&[(CONV, "pooling", "PoolKind::Avg")]),
        },
        Op::GlobalPool(_) => Fd(&[(CONV, "global_pooling_nchw_and_rank3", "Op::GlobalPool")]),
        Op::Resize(_) => Fd(&[(CONV, "resize_nearest_and_bilinear", "Op::Resize")]),
        Op::DeformConv2d(_) => Fd(&[(DEFORM, "deform_conv2d_every_operand", "deform_conv2d(")]),
        Op::Nms(_) => NoGrad("selects boxes: a discrete choice carries no gradient"),
        Op::Concat { .. } => Fd(&[(CORE, SHAPE, "concat(")]),
        Op::Split { .. } => Fd(&[(CORE, SHAPE, "split(")]),
        Op::Slice(_) => Fd(&[(CORE, "slices_with_steps", "slice(")]),
        Op::Reshape { .. } => Fd(&[(CORE, SHAPE, "reshape(")]),
        Op::Transpose { .. } => Fd(&[(CORE, SHAPE, "transpose(")]),
        Op::Squeeze { .. } => Fd(&[(CORE, SHAPE, "squeeze(")]),
        Op::Unsqueeze { .. } => Fd(&[(CORE, SHAPE, "unsqueeze(")]),
        Op::Flatten { .. } => Fd(&[(CORE, SHAPE, "flatten(")]),
        Op::BroadcastTo { .. } => Fd(&[(CORE, SHAPE, "broadcast_to(")]),
        Op::Gather { .. } => Fd(&[(CONV, GATHERS, "Op::Gather {")]),
        Op::GatherElements { .. } => Fd(&[
            (CONV, GATHERS, "Op::GatherElements"),
            (THIS, "softmax_cross_entropy", "gather_elements("),
        ]),
        Op::Embedding => Fd(&[(CONV, GATHERS, "Op::Embedding")]),
        Op::Shape => NoGrad("an integer shape carries no gradient"),
        Op::AllReduce { .. }
        | Op::AllGather { .. }
        | Op::ReduceScatter { .. }
        | Op::AllToAll { .. }
        | Op::Broadcast { .. }
        | Op::Send { .. }
        | Op::Recv { .. } => {
            NoGrad("inserted by the partitioner after differentiation (single-device graphs)")
        }
        Op::FusedConv2d { .. } => Fd(&[(CONV, "fused_conv2d_epilogues", "Op::FusedConv2d")]),
        Op::FusedMatMul { .. } => Fd(&[(CORE, "fused_matmul_epilogues", "fused_matmul(")]),
        Op::Fused { .. } => Fd(&[(CORE, "fused_groups_differentiate_their_body", "fused(")]),
        Op::Grad(_) => NoGrad("gradient ops: autodiff is first order"),
    }
}

fn source(file: &str) -> &'static str {
    match file {
        CORE => include_str!("autodiff_core.rs"),
        CONV => include_str!("autodiff_conv.rs"),
        THIS => include_str!("autodiff_fd_coverage.rs"),
        DEFORM => include_str!("autodiff_deform.rs"),
        other => panic!("unknown test file {other}"),
    }
}

/// The text of test function `name` in `src`, from `fn name(` to the next item; or of
/// the case table `const name:` up to its closing `];`.
fn body<'a>(src: &'a str, name: &str) -> Option<&'a str> {
    if let Some(at) = src.find(&format!("const {name}:")) {
        let rest = &src[at..];
        return Some(&rest[..rest.find("\n];").unwrap_or(rest.len())]);
    }
    let start = src.find(&format!("fn {name}("))?;
    let rest = &src[start + 3..];
    let end = rest
        .find("\n    fn ")
        .into_iter()
        .chain(rest.find("\nfn "))
        .chain(rest.find("\n    #[test]"))
        .chain(rest.find("\n#[test]"))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// One op per text name, plus every form the decision distinguishes.
fn sample_ops() -> Vec<Op> {
    let mut ops: Vec<Op> = all_op_names()
        .into_iter()
        .filter_map(|n| op_from_attrs(n, vec![], &[]).ok())
        .collect();
    ops.extend([
        Op::Unary(UnaryOp::Gelu { tanh: true }),
        Op::Unary(UnaryOp::Gelu { tanh: false }),
        Op::BatchNorm {
            eps: 1e-5,
            momentum: Some(0.9),
        },
        Op::BatchNorm {
            eps: 1e-5,
            momentum: None,
        },
        Op::Reshape { shape: vec![] },
        Op::Squeeze { axes: vec![0] },
        Op::Unsqueeze { axes: vec![0] },
        Op::Fused { func: "f".into() },
    ]);
    let pool = |kind| PoolAttrs {
        kind,
        kernel: [2, 2],
        stride: [1, 1],
        padding: [0; 4],
        ceil_mode: false,
        count_include_pad: false,
    };
    let group = CommGroup {
        mesh: "m".into(),
        axis: 0,
    };
    for kind in [PoolKind::Max, PoolKind::Avg] {
        ops.push(Op::GlobalPool(kind));
        ops.push(Op::Pool(pool(kind)));
    }
    ops.extend([
        Op::Param(ParamAttrs {
            name: "w".into(),
            init: None,
        }),
        Op::Constant(Literal::Floats(vec![1.0])),
        Op::Cast { to: DType::F32 },
        Op::Dropout {
            p: 0.5,
            mode: DropoutMode::UpscaleInTrain,
            mask_of: None,
        },
        Op::CausalMask { fill: -1e9 },
        Op::Nms(NmsAttrs {
            kind: NmsKind::Hard { iou_threshold: 0.5 },
            score_threshold: 0.1,
            nms_top_k: None,
            max_per_class: None,
            keep_top_k: 4,
            background: None,
            normalized: true,
        }),
        Op::Nms(NmsAttrs {
            kind: NmsKind::Matrix {
                gaussian: false,
                sigma: 2.0,
                post_threshold: 0.1,
            },
            score_threshold: 0.1,
            nms_top_k: None,
            max_per_class: None,
            keep_top_k: 4,
            background: None,
            normalized: true,
        }),
        Op::Resize(ResizeAttrs {
            mode: ResizeMode::Bilinear,
            coord: CoordMode::HalfPixel,
            size: [Dim::Static(2), Dim::Static(2)],
        }),
        Op::Concat { axis: 0 },
        Op::Split {
            axis: 0,
            sizes: vec![1, 1],
        },
        Op::Slice(SliceAttrs {
            axes: vec![0],
            starts: vec![0],
            ends: vec![1],
            steps: vec![1],
        }),
        Op::Transpose { perm: vec![1, 0] },
        Op::BroadcastTo {
            shape: vec![Dim::Static(2)],
        },
        Op::AllReduce {
            op: ReduceOp::Sum,
            group: group.clone(),
        },
        Op::AllGather {
            axis: 0,
            group: group.clone(),
        },
        Op::ReduceScatter {
            op: ReduceOp::Sum,
            axis: 0,
            group: group.clone(),
        },
        Op::AllToAll {
            split_axis: 0,
            concat_axis: 1,
            group: group.clone(),
        },
        Op::Broadcast { root: 0, group },
        Op::Send { peer: 1 },
        Op::Recv { peer: 0 },
        Op::Grad(GradOp::Conv2dWeight {
            conv: ConvAttrs {
                stride: [1, 1],
                padding: [0; 4],
                dilation: [1, 1],
                groups: 1,
            },
            kernel: [3, 3],
        }),
        Op::Grad(GradOp::Pool(pool(PoolKind::Max))),
        Op::Grad(GradOp::Gather { axis: 0, rows: 2 }),
        Op::Grad(GradOp::ScatterAdd { axis: 0 }),
    ]);
    for op in [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
    ] {
        ops.push(Op::Reduce(oar_ir::op::ReduceOverAxes {
            op,
            axes: vec![],
            keepdims: false,
        }));
    }
    ops
}

#[test]
fn every_differentiable_op_names_an_fd_test() {
    let ops = sample_ops();
    let mut names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
    names.sort();
    names.dedup();
    // Every text name has a sample, so every op reaches `decision`.
    let missing: Vec<&str> = all_op_names()
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    assert!(missing.is_empty(), "no sample op for {missing:?}");
    // The unary table is run by `unary_ops`.
    let runs_table = body(source(CORE), "unary_ops").is_some_and(|b| b.contains("in UNARY"));
    assert!(
        runs_table,
        "autodiff_core.rs's unary_ops no longer runs UNARY"
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for op in &ops {
        match decision(op) {
            Fd(tests) => {
                for (file, test, needle) in tests {
                    match body(source(file), test) {
                        Some(b) if b.contains(needle) => checked += 1,
                        Some(_) => problems.push(format!(
                            "{} ({op:?}): `{test}` in {file} does not contain `{needle}`",
                            op.name()
                        )),
                        None => problems.push(format!(
                            "{} ({op:?}): no test `{test}` in {file}",
                            op.name()
                        )),
                    }
                }
            }
            NoGrad(why) => assert!(!why.is_empty()),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 50, "only {checked} op/test pairs checked");
}

/// The checker of this file's composites: inputs by name, f32 data (converted to f64 by
/// the check), labels as i64.
fn check(text: &str, ints: &[(&str, Vec<i64>)], seed: u64) -> Result<usize, String> {
    let g = oar_ir::parse(text).map_err(|e| format!("{e}\n{text}"))?;
    let dims = |t: &oar_ir::TensorType| -> Vec<usize> {
        t.shape
            .as_static()
            .unwrap_or_default()
            .iter()
            .map(|&d| d as usize)
            .collect()
    };
    let mut inputs = Vec::new();
    for (k, &id) in g.inputs().iter().enumerate() {
        let n = g.node(id);
        let shape = dims(&n.outputs[0]);
        let numel = shape.iter().product();
        inputs.push(match ints.iter().find(|(name, _)| *name == n.name) {
            Some((_, v)) => HostTensor::i64(shape, v.clone()),
            None => HostTensor::f32(shape, uniform(numel, seed * 31 + k as u64)),
        });
    }
    let mut weights = Weights::new();
    for (id, n) in g.iter() {
        if let Op::Param(p) = &n.op {
            let shape = dims(&n.outputs[0]);
            let numel = shape.iter().product();
            let v = uniform(numel, seed * 31 + 100 + id.index() as u64);
            weights.insert(p.name.clone(), HostTensor::f32(shape, v));
        }
    }
    let c = check_gradients(&g, &inputs, &weights, &GradCheck::default())
        .map_err(|e| format!("{e}\n{text}"))?;
    Ok(c.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// The loss `training::loss::softmax_cross_entropy` builds (log_softmax, gather of the
    /// label's entry, mean, negation), with label smoothing's second term.
    #[test]
    fn softmax_cross_entropy(seed in 0u64..10_000, b in 1u64..4, c in 2u64..6, smooth in any::<bool>()) {
        let labels: Vec<i64> = uniform(b as usize, seed ^ 0x55)
            .iter()
            .map(|u| (((u + 1.0) / 2.0 * c as f32) as i64).min(c as i64 - 1))
            .collect();
        let tail = if smooth {
            "  %all = reduce_mean(%lp) : f32[]\n  %sm = neg(%all) : f32[]\n  %k = constant {value=[0.1]} : f32[]\n  %a = mul(%sm, %k) : f32[]\n  %y = add(%nll, %a) : f32[]\n  return %y\n"
        } else {
            "  return %nll\n"
        };
        let text = format!(
            "graph @g(%x: f32[{b},{c}], %t: i64[{b}]) -> (f32[]) {{
  %w = param \"w\" : f32[{c},{c}]
  %z = matmul(%x, %w) : f32[{b},{c}]
  %lp = log_softmax(%z) {{axis=-1}} : f32[{b},{c}]
  %i = unsqueeze(%t) {{axes=[1]}} : i64[{b},1]
  %p = gather_elements(%lp, %i) {{axis=-1}} : f32[{b},1]
  %m = reduce_mean(%p) : f32[]
  %nll = neg(%m) : f32[]
{tail}}}
"
        );
        let r = check(&text, &[("t", labels)], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    /// Scaled dot-product attention with a causal mask: `softmax(mask(q·kᵀ·s))·v`, with
    /// the projections as parameters, over [batch, seq, d].
    #[test]
    fn attention_core(seed in 0u64..10_000, b in 1u64..3, s in 2u64..5, d in 2u64..5) {
        let text = format!(
            "graph @g(%x: f32[{b},{s},{d}]) -> (f32[{b},{s},{d}]) {{
  %wq = param \"wq\" : f32[{d},{d}]
  %wk = param \"wk\" : f32[{d},{d}]
  %wv = param \"wv\" : f32[{d},{d}]
  %q = matmul(%x, %wq) : f32[{b},{s},{d}]
  %k = matmul(%x, %wk) : f32[{b},{s},{d}]
  %v = matmul(%x, %wv) : f32[{b},{s},{d}]
  %sc = matmul(%q, %k) {{transpose_b=true}} : f32[{b},{s},{s}]
  %r = constant {{value=[0.5]}} : f32[]
  %ss = mul(%sc, %r) : f32[{b},{s},{s}]
  %mk = causal_mask(%ss) {{fill=-1e9}} : f32[{b},{s},{s}]
  %a = softmax(%mk) {{axis=-1}} : f32[{b},{s},{s}]
  %y = matmul(%a, %v) : f32[{b},{s},{d}]
  return %y
}}
"
        );
        let r = check(&text, &[], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

/// The f64 tolerance separates a rule-sized mistake from a right gradient where the f32
/// one cannot: on a real check (gelu, tanh form), an analytic side off by 1e-4 relative
/// (e.g. gelu's 0.044715 written 0.04472 costs ~3e-6, a wrong form ~1e-3) is rejected at
/// f64 and accepted at f32's tolerance.
#[test]
fn the_f64_check_rejects_a_small_error_the_f32_check_accepts() {
    let g = oar_ir::parse(
        "graph @g(%x: f32[8]) -> (f32[8]) {\n  %y = gelu(%x) {approximate=tanh} : f32[8]\n  return %y\n}\n",
    )
    .unwrap();
    let x = HostTensor::f32(vec![8], uniform(8, 3).iter().map(|v| v * 2.0).collect());
    let ok = check_gradients(&g, &[x], &Weights::new(), &GradCheck::default()).unwrap();
    // The analytic side of the f64 check is right to ~1e-9; shift it by 1e-4 relative.
    for c in &ok {
        let wrong = c.analytic * (1.0 + 1e-4);
        let cfg = GradCheck::default();
        let tol = cfg.atol + cfg.rtol * wrong.abs().max(c.numeric.abs());
        assert!(
            (wrong - c.numeric).abs() > tol,
            "f64 tolerance {tol} too loose"
        );
        let f = GradCheck::f32();
        let tol32 = f.atol + f.rtol * wrong.abs().max(c.numeric.abs());
        assert!((wrong - c.numeric).abs() < tol32);
    }
}
