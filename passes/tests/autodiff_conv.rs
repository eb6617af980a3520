//! Gradient rules of convolutions, pooling and gathers against central finite differences.
//!
//! Each case builds a one-op graph, drives that op's rule directly (`rules::vjp` with a
//! random output cotangent `u`), runs the emitted backward in the reference interpreter and
//! compares `<dL/dx, v>` for a random direction `v` with
//! `(L(x + h·v) − L(x − h·v)) / 2h`, `L = Σ u ⊙ y`, for every float operand. Driving one
//! rule keeps these tests independent of the elementwise and reduction rules
//! (`check_gradients` builds its loss from those; the end-to-end test at the bottom uses it).
//!
//! Everything runs in f64 (operands are f64 tensors, so the one-op graphs and their
//! backward are typed f64). Tolerance: |analytic − numeric| ≤ 1e-8 + 1e-6·max(|analytic|,
//! |numeric|) with h = 1e-5, as `GradCheck::default()` (see `autodiff/check.rs` for the
//! error budget): truncation ≈ 1e-10 relative, rounding ε_f64·|L|/h ≈ 2e-10 (|L| ≈ 10),
//! while a wrong rule (a missing term, a wrong transpose, one border cell of padding, a
//! tap rounded to f32) is off by more than 1e-6. Max pooling
//! takes inputs with distinct values 0.05 apart so no window's arg-max changes within ±h.

use oar_ir::op::{
    ConvAttrs, ConvTransposeAttrs, Epilogue, GradOp, Op, PoolAttrs, PoolKind, UnaryOp,
};
use oar_ir::{DType, Graph, TensorType, ValueRef};
use oar_passes::autodiff::check::{check_gradients, uniform, GradCheck};
use oar_passes::autodiff::rules::vjp;
use oar_passes::autodiff::GradCx;
use oar_runtime::interp::run;
use oar_runtime::{HostTensor, Weights};
use proptest::prelude::*;

const H: f64 = 1e-5;
const ATOL: f64 = 1e-8;
const RTOL: f64 = 1e-6;

/// A float operand (f64) with random non-zero entries in ±[0.1, 1].
fn rand_f64(shape: &[usize], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product();
    let v = uniform(n, seed)
        .into_iter()
        .map(|x| f64::from(x.signum() * (0.1 + 0.9 * x.abs())))
        .collect();
    HostTensor::f64(shape.to_vec(), v)
}

/// Distinct values 0.05 apart in a random order (for max pooling).
fn distinct_f64(shape: &[usize], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product();
    let keys = uniform(n, seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut v = vec![0f64; n];
    for (rank, &i) in order.iter().enumerate() {
        v[i] = (rank as f64 - n as f64 / 2.0) * 0.05;
    }
    HostTensor::f64(shape.to_vec(), v)
}

fn dims(t: &HostTensor) -> Vec<oar_ir::Dim> {
    t.shape
        .iter()
        .map(|&d| oar_ir::Dim::Static(d as u64))
        .collect()
}

/// A graph computing `op` on inputs of the given tensors' types.
fn one_op(op: Op, ins: &[&HostTensor]) -> (Graph, ValueRef) {
    let mut g = Graph::new("g");
    let vals: Vec<ValueRef> = ins
        .iter()
        .enumerate()
        .map(|(k, t)| g.add_input(format!("in{k}"), TensorType::new(t.dtype(), dims(t))))
        .collect();
    let y: ValueRef = g
        .add_node(op, vals, Some("y".into()))
        .expect("valid op")
        .into();
    g.set_outputs(vec![y]);
    (g, y)
}

fn loss(g: &Graph, ins: &[HostTensor], u: &[f32]) -> f64 {
    let y = run(g, ins, &Weights::new()).expect("forward runs");
    y[0].to_f64()
        .iter()
        .zip(u)
        .map(|(a, b)| a * *b as f64)
        .sum()
}

/// Checks the rule of `op` for every float operand; returns the compared pairs.
fn check_op(op: Op, ins: Vec<HostTensor>, seed: u64) -> Result<Vec<(f64, f64)>, String> {
    let refs: Vec<&HostTensor> = ins.iter().collect();
    let (g, y) = one_op(op, &refs);
    let yt = g.value_type(y).cloned().ok_or("no output type")?;
    let n = yt.shape.numel().as_static().ok_or("symbolic")? as usize;
    let u = uniform(n, seed ^ 0xABCD);
    let want: Vec<bool> = ins.iter().map(|t| t.dtype() == DType::F64).collect();
    let mut cx = GradCx::for_graph(g.clone());
    let uv = cx
        .constant(u.iter().map(|&x| x as f64).collect(), yt, y.node)
        .map_err(|e| e.to_string())?;
    let grads = vjp(&mut cx, y.node, &[Some(uv)], &want).map_err(|e| e.to_string())?;
    let mut bg = cx.finish();
    let outs: Vec<ValueRef> = grads.iter().flatten().copied().collect();
    if outs.len() != want.iter().filter(|&&w| w).count() {
        return Err(format!(
            "expected a gradient per float operand, got {grads:?}"
        ));
    }
    bg.set_outputs(outs);
    let got = run(&bg, &ins, &Weights::new()).map_err(|e| e.to_string())?;
    let mut compared = Vec::new();
    let mut k = 0;
    for (i, w) in want.iter().enumerate() {
        if !w {
            continue;
        }
        let dir = uniform(ins[i].numel(), seed + 31 * i as u64 + 1);
        let analytic: f64 = got[k]
            .to_f64()
            .iter()
            .zip(&dir)
            .map(|(a, v)| a * *v as f64)
            .sum();
        k += 1;
        let shifted = |s: f64| {
            let mut x = ins.clone();
            let d = ins[i].as_f64().expect("f64 operand");
            x[i] = HostTensor::f64(
                ins[i].shape.clone(),
                d.iter().zip(&dir).map(|(a, v)| a + s * *v as f64).collect(),
            );
            x
        };
        let numeric = (loss(&g, &shifted(H), &u) - loss(&g, &shifted(-H), &u)) / (2.0 * H);
        let tol = ATOL + RTOL * analytic.abs().max(numeric.abs());
        if (analytic - numeric).abs() > tol || !analytic.is_finite() {
            return Err(format!(
                "operand {i} of {}: analytic {analytic} vs finite difference {numeric} (tolerance {tol:.2e})",
                g.node(y.node).op.name()
            ));
        }
        compared.push((analytic, numeric));
    }
    Ok(compared)
}

fn conv_attrs(stride: u64, pad: u64, dil: u64, groups: u64) -> ConvAttrs {
    ConvAttrs {
        stride: [stride, stride],
        padding: [pad, pad, pad + (stride > 1) as u64, pad],
        dilation: [dil, dil],
        groups,
    }
}

/// (stride, padding, dilation, groups-kind): groups-kind 0 = 1, 1 = 2, 2 = depthwise.
fn conv_case() -> impl Strategy<Value = (u64, u64, u64, u8, u64, u64)> {
    (1u64..=2, 0u64..=1, 1u64..=2, 0u8..=2, 5u64..=7, 0u64..1000)
}

fn groups_for(kind: u8, c: u64) -> u64 {
    match kind {
        0 => 1,
        1 => 2,
        _ => c,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_data_weight_and_bias((s, p, d, gk, hw, seed) in conv_case()) {
        let c = 4;
        let g = groups_for(gk, c);
        let o = if gk == 2 { c } else { 6 };
        let x = rand_f64(&[2, c as usize, hw as usize, hw as usize + 1], seed);
        let w = rand_f64(&[o as usize, (c / g) as usize, 3, 2], seed + 1);
        let b = rand_f64(&[o as usize], seed + 2);
        let r = check_op(Op::Conv2d(conv_attrs(s, p, d, g)), vec![x, w, b], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    #[test]
    fn conv_transpose2d_data_weight_and_bias((s, p, d, gk, hw, seed) in conv_case()) {
        let c = 4;
        let g = groups_for(gk, c);
        let og = if gk == 2 { 1 } else { 3 };
        let x = rand_f64(&[2, c as usize, hw as usize - 2, hw as usize - 1], seed);
        let w = rand_f64(&[c as usize, og, 3, 3], seed + 1);
        let b = rand_f64(&[og * g as usize], seed + 2);
        let t = ConvTransposeAttrs { conv: conv_attrs(s, p, d, g), output_padding: [s - 1, 0] };
        let r = check_op(Op::ConvTranspose2d(t), vec![x, w, b], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    #[test]
    fn pooling(k in 2u64..=3, s in 1u64..=2, p in 0u64..=1, ceil: bool, incl: bool, max: bool,
               hw in 5usize..=7, seed in 0u64..1000) {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        let attrs = PoolAttrs {
            kind,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p, p, 0],
            ceil_mode: ceil,
            count_include_pad: incl,
        };
        let shape = [2, 3, hw, hw + 1];
        let x = if max { distinct_f64(&shape, seed) } else { rand_f64(&shape, seed) };
        let r = check_op(Op::Pool(attrs), vec![x], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

/// Every activation the zoo fuses (and mish), with bias and residual: the epilogue uses the
/// elementwise rules' derivatives.
#[test]
fn fused_conv2d_epilogues() {
    let acts = [
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::HardSwish,
        UnaryOp::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
        UnaryOp::Sigmoid,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Silu,
        UnaryOp::Gelu { tanh: false },
        UnaryOp::Gelu { tanh: true },
        UnaryOp::Mish,
    ];
    for (i, act) in acts.into_iter().enumerate() {
        let seed = 100 + i as u64;
        // Scaled up so relu6, hardswish and hardsigmoid see both saturated and linear parts.
        let x = rand_f64(&[1, 4, 6, 6], seed);
        let x = HostTensor::f64(
            x.shape.clone(),
            x.as_f64().unwrap().iter().map(|v| v * 3.0).collect(),
        );
        let w = rand_f64(&[4, 2, 3, 3], seed + 1);
        let b = rand_f64(&[4], seed + 2);
        let r = rand_f64(&[1, 4, 4, 3], seed + 3);
        let op = Op::FusedConv2d {
            conv: conv_attrs(2, 1, 1, 2),
            epilogue: Epilogue {
                bias: true,
                residual: true,
                activation: Some(act),
            },
        };
        if let Err(e) = check_op(op, vec![x, w, b, r], seed) {
            panic!("{act:?}: {e}");
        }
    }
}

/// `n` random indices in `[-len, len)` (negative ones count from the end), with repeats
/// once `n` exceeds `len`.
fn rand_ids(n: usize, len: usize, seed: u64) -> Vec<i64> {
    uniform(n, seed)
        .iter()
        .map(|u| {
            ((((u + 1.0) / 2.0) * 2.0 * len as f32) as i64).min(2 * len as i64 - 1) - len as i64
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn global_pooling_nchw_and_rank3(n in 1usize..3, c in 1usize..4, h in 1usize..5, w in 1usize..5, rank3: bool, max: bool, seed in 0u64..1000) {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        let shape = if rank3 { vec![n, c, h * w] } else { vec![n, c, h, w] };
        let x = distinct_f64(&shape, seed);
        let r = check_op(Op::GlobalPool(kind), vec![x], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    #[test]
    fn gathers_accumulate_repeated_indices(rows in 1usize..5, d in 1usize..4, k in 1usize..7, axis in -3i64..3, seed in 0u64..1000) {
        // Embedding: ids get no gradient, the table's rows accumulate repeats.
        let table = rand_f64(&[rows, d], seed);
        let ids = HostTensor::i64(vec![k], rand_ids(k, rows, seed + 1));
        let c = check_op(Op::Embedding, vec![table, ids.clone()], seed);
        prop_assert!(c.as_ref().is_ok_and(|c| c.len() == 1), "{:?}", c);
        let data = rand_f64(&[rows, d + 1, 3], seed + 2);
        let len = data.shape[oar_ir::op::norm_axis(axis, 3).expect("axis in range")];
        let idx = HostTensor::i64(vec![2, k], rand_ids(2 * k, len, seed + 3));
        let r = check_op(Op::Gather { axis }, vec![data.clone(), idx], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
        // gather_elements: an index tensor no larger than data off the axis.
        let a = oar_ir::op::norm_axis(axis, 3).expect("axis in range");
        let mut ishape = data.shape.clone();
        ishape[a] = k;
        let n: usize = ishape.iter().product();
        let idx = HostTensor::i64(ishape, rand_ids(n, len, seed + 4));
        let r = check_op(Op::GatherElements { axis }, vec![data, idx], seed);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Nearest and bilinear, up- and down-sampling, every coordinate mode, on random sizes.
    /// Resize is linear in its input, so no sample can sit on a kink.
    #[test]
    fn resize_nearest_and_bilinear(h in 1usize..6, w in 1usize..6, ho in 1u64..10, wo in 1u64..10, seed in 0u64..1000) {
        use oar_ir::op::{CoordMode, ResizeAttrs, ResizeMode};
        let coords = [
            CoordMode::HalfPixel,
            CoordMode::AlignCorners,
            CoordMode::Asymmetric,
            CoordMode::PytorchHalfPixel,
        ];
        for (k, coord) in coords.into_iter().enumerate() {
            for mode in [ResizeMode::Nearest, ResizeMode::Bilinear] {
                let x = rand_f64(&[2, 2, h, w], seed + k as u64);
                let op = Op::Resize(ResizeAttrs {
                    mode,
                    coord,
                    size: [ho, wo].map(oar_ir::Dim::Static),
                });
                let r = check_op(op, vec![x], seed + 3 + k as u64);
                prop_assert!(r.is_ok(), "{mode:?} {coord:?} {h}x{w} -> {ho}x{wo}: {:?}", r);
            }
        }
    }
}

/// The gradient ops print and parse back, and reject a cotangent of the wrong shape.
#[test]
fn grad_ops_round_trip_and_check_shapes() {
    let x = rand_f64(&[1, 2, 5, 5], 1);
    let dy = rand_f64(&[1, 4, 3, 3], 2);
    let op = Op::Grad(GradOp::Conv2dWeight {
        conv: conv_attrs(2, 1, 1, 2),
        kernel: [3, 3],
    });
    let (g, _) = one_op(op.clone(), &[&x, &dy]);
    let text = oar_ir::print(&g);
    assert!(text.contains("conv2d_grad_weight"), "{text}");
    assert_eq!(oar_ir::parse(&text).unwrap(), g);
    let bad = rand_f64(&[1, 4, 2, 3], 2);
    let mut g2 = Graph::new("g");
    let a = g2.add_input("x", TensorType::new(DType::F64, dims(&x)));
    let b = g2.add_input("dy", TensorType::new(DType::F64, dims(&bad)));
    let e = g2.add_node(op, vec![a, b], None).unwrap_err().to_string();
    assert!(e.contains("not the type of conv2d's output"), "{e}");
}

/// End to end through `append_backward` and `check_gradients` (a small CNN ending in
/// global pooling).
#[test]
fn small_cnn_through_check_gradients() {
    let g = oar_ir::parse(
        "graph @g(%x: f32[2,3,8,8]) -> (f32[2,4,1,1]) {\n  %w = param \"w\" : f32[4,3,3,3]\n  %b = param \"b\" : f32[4]\n  %c = fused_conv2d(%x, %w, %b) {stride=[2, 2], padding=[1, 1, 1, 1], bias=true, act=relu} : f32[2,4,4,4]\n  %p = max_pool(%c) {kernel=[2, 2], stride=[2, 2]} : f32[2,4,2,2]\n  %y = global_avg_pool(%p) : f32[2,4,1,1]\n  return %y\n}\n",
    )
    .unwrap();
    let mut w = Weights::new();
    w.insert("w".into(), rand_f64(&[4, 3, 3, 3], 1));
    w.insert("b".into(), rand_f64(&[4], 2));
    let x = distinct_f64(&[2, 3, 8, 8], 3);
    check_gradients(&g, &[x], &w, &GradCheck::default()).unwrap();
}
