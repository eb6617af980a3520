//! Property tests: random small graphs give the same outputs through the LLVM path and the
//! interpreter (max |a − b| / max |b| ≤ 1e-4).

mod common;

use common::random_graph::{build, param, Step};
use common::{inference, max_diff};
use oar_codegen::jit::JitModel;
use oar_codegen::kernel::{CpuModel, Tiling};
use oar_ir::op::{BinaryOp, ConvAttrs, MatMulAttrs, UnaryOp};
use oar_ir::{Graph, Op, TensorType, ValueRef};
use oar_runtime::{init::init_weights, run, HostTensor, Weights};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn compare(g: &Graph) -> Result<(), TestCaseError> {
    compare_blocked_for(g, &oar_codegen::cpu::host_cpu().unwrap())
}

/// As [`compare`], with the GEMM blocking `cpu` would get.
fn compare_blocked_for(g: &Graph, cpu: &CpuModel) -> Result<(), TestCaseError> {
    let w = init_weights(g, 1).unwrap();
    let inputs: Vec<HostTensor> = g
        .inputs()
        .iter()
        .map(|&i| {
            let dims: Vec<usize> = g.node(i).outputs[0]
                .shape
                .as_static()
                .unwrap()
                .iter()
                .map(|&d| d as usize)
                .collect();
            let n: usize = dims.iter().product();
            HostTensor::f32(
                dims,
                (0..n)
                    .map(|k| ((k * 7919 % 200) as f32 / 100.0) - 1.0)
                    .collect(),
            )
        })
        .collect();
    let want = run(g, &inputs, &w).unwrap();
    let mut m = JitModel::with_blocking_of(g, &BTreeMap::new(), &w, 2, cpu)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = m.run(&inputs).unwrap();
    for (a, b) in got.iter().zip(&want) {
        let (x, y) = (a.to_f64(), b.to_f64());
        // Relative to the largest output, but never below 0.01: operands are O(1), so when a
        // relu leaves only outputs near zero (1e-5 in a recorded case) f32 summation order
        // alone moves them by ~1e-8, which is no kernel error; a wrong kernel is off by O(1).
        let scale = y.iter().fold(1e-2f64, |m, v| m.max(v.abs()));
        let err = x.iter().zip(&y).fold(0f64, |m, (p, q)| max_diff(m, *p, *q)) / scale;
        let tiling = Tiling::for_cpu(cpu);
        prop_assert!(
            err <= 1e-4,
            "rel err {err:.2e} ({tiling})\n{}",
            oar_ir::print(g)
        );
    }
    Ok(())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..10).prop_map(Step::Unary),
        (0u8..5, 0u8..3).prop_map(|(a, b)| Step::Binary(a, b)),
        (0u8..3).prop_map(Step::Softmax),
        (0u8..4, 0u8..3, any::<bool>()).prop_map(|(a, b, c)| Step::Reduce(a, b, c)),
        (0u8..6).prop_map(Step::Transpose),
        (1u8..7).prop_map(Step::MatMul),
        Just(Step::LayerNorm),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_match(d0 in 1u64..4, d1 in 1u64..6, d2 in 1u64..20, steps in prop::collection::vec(step(), 1..6)) {
        compare(&build([d0, d1, d2], &steps))?;
    }

    #[test]
    fn random_convolutions_match(
        n in 1u64..3, c in 1u64..6, h in 1u64..12, w in 1u64..12, k in 1u64..4,
        stride in 1u64..3, pad in 0u64..3, depthwise in any::<bool>(), mult in 1u64..3, co in 1u64..20,
    ) {
        let (groups, co) = if depthwise { (c, c * mult) } else { (1, co) };
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::f32(&[n, c, h, w]));
        let wt = param(&mut g, "w", &[co, c / groups, k, k]);
        let b = param(&mut g, "b", &[co]);
        let attrs = ConvAttrs { stride: [stride, stride], padding: [pad, pad, pad, pad], dilation: [1, 1], groups };
        let y = g.add_node(Op::Conv2d(attrs), vec![x, wt, b], None).unwrap();
        g.set_outputs(vec![y.into()]);
        compare(&g)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Dense convolutions with a small window sum over rows ≥ 16 wide (a stem: direct over
    /// a padded, phase-split copy at stride 2), with the fused bias and activation.
    #[test]
    fn small_window_convolutions_match(
        n in 1u64..3, c in 1u64..4, h in 1u64..20, w in 16u64..40, k in 1u64..4,
        stride in 1u64..3, dil in 1u64..3, pad in 0u64..3, co in 1u64..12, act in 0u8..3,
    ) {
        let dil = if stride == 1 { dil } else { 1 };
        let span = (k - 1) * dil + 1;
        prop_assume!(h + 2 * pad >= span && w + 2 * pad >= span);
        let mut g = Graph::new("stem");
        let x = g.add_input("x", TensorType::f32(&[n, c, h, w]));
        let wt = param(&mut g, "w", &[co, c, k, k]);
        let b = param(&mut g, "b", &[co]);
        let attrs = ConvAttrs { stride: [stride, stride], padding: [pad, pad, pad, pad], dilation: [dil, dil], groups: 1 };
        let mut y: ValueRef = g.add_node(Op::Conv2d(attrs), vec![x, wt, b], None).unwrap().into();
        if act > 0 {
            let u = [UnaryOp::HardSwish, UnaryOp::Relu][(act - 1) as usize];
            y = g.add_node(Op::Unary(u), vec![y], None).unwrap().into();
        }
        g.set_outputs(vec![y]);
        compare(&inference(g))?;
    }

    #[test]
    fn random_pools_match(
        c in 1u64..4, h in 2u64..10, w in 2u64..10, k in 1u64..4, stride in 1u64..3,
        pad in 0u64..2, ceil in any::<bool>(), include in any::<bool>(), max in any::<bool>(),
    ) {
        use oar_ir::op::{PoolAttrs, PoolKind};
        prop_assume!(pad < k && h + 2 * pad >= k && w + 2 * pad >= k);
        let mut g = Graph::new("pool");
        let x = g.add_input("x", TensorType::f32(&[1, c, h, w]));
        let attrs = PoolAttrs {
            kind: if max { PoolKind::Max } else { PoolKind::Avg },
            kernel: [k, k],
            stride: [stride, stride],
            padding: [pad; 4],
            ceil_mode: ceil,
            count_include_pad: include,
        };
        let y = g.add_node(Op::Pool(attrs), vec![x], None).unwrap();
        g.set_outputs(vec![y.into()]);
        compare(&g)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn broadcast_to_matches(a in 1u64..4, b in 1u64..5, c in 1u64..4) {
        // A new leading dim, a repeated middle dim and a kept one.
        let text = format!(
            "graph @b(%x: f32[{a},1,{c}]) -> (f32[2,{a},{b},{c}]) {{\n  %y = broadcast_to(%x) {{shape=[2, {a}, {b}, {c}]}} : f32[2,{a},{b},{c}]\n  %z = tanh(%y) : f32[2,{a},{b},{c}]\n  return %z\n}}\n"
        );
        compare(&oar_ir::parse(&text).unwrap())?;
    }
}

/// `act(x·(w·s) + b)` after the inference pipeline (bias and activation fused into the
/// product); `w·s` reads only weights, so it runs once in the program's prologue.
fn linear_layer(m: u64, k: u64, n: u64, x_is_matrix: bool, act: u8) -> Graph {
    let mut g = Graph::new("linear");
    // x_is_matrix: C = W·x with x a column (one row or column either way).
    let (xs, ws) = if x_is_matrix {
        (vec![k, n], vec![m, k])
    } else {
        (vec![m, k], vec![k, n])
    };
    let x = g.add_input("x", TensorType::f32(&xs));
    let w = param(&mut g, "w", &ws);
    let s = param(&mut g, "s", &[ws[1]]);
    let ws = g
        .add_node(Op::Binary(BinaryOp::Mul), vec![w, s], None)
        .unwrap();
    let (l, r) = if x_is_matrix {
        (ws.into(), x)
    } else {
        (x, ws.into())
    };
    let y = g
        .add_node(Op::MatMul(MatMulAttrs::default()), vec![l, r], None)
        .unwrap();
    let b = param(&mut g, "b", &[n]);
    let mut y: ValueRef = g
        .add_node(Op::Binary(BinaryOp::Add), vec![y.into(), b], None)
        .unwrap()
        .into();
    if act > 0 {
        let u = [UnaryOp::Relu, UnaryOp::HardSwish][(act - 1) as usize];
        y = g.add_node(Op::Unary(u), vec![y], None).unwrap().into();
    }
    g.set_outputs(vec![y]);
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// One row times a matrix (column blocks of 32 with 8-wide and single-column tails) and
    /// a matrix times one column (blocks of 8 rows, k in vectors of 8 plus a tail).
    #[test]
    fn matrix_vector_products_match(
        m in 1u64..5, k in 1u64..40, n in prop::sample::select(vec![1u64, 7, 8, 9, 31, 32, 33, 70]),
        by_rows in any::<bool>(), rows in 6u64..30, act in 0u8..3,
    ) {
        let g = if by_rows {
            linear_layer(rows, k, 1, true, act)
        } else {
            linear_layer(m, k, n, false, act)
        };
        compare(&inference(g))?;
    }
}

/// Other CPUs' blockings, run on this CPU: SSE (6 × 8 tiles of 4 lanes), AVX-512 (14 × 32
/// of 16 lanes, split into this CPU's vectors by LLVM) and AVX2 with tiny caches (KC 64,
/// MC 12, NC 128: many depth, row and column blocks on small products).
fn blocking_cpus() -> [CpuModel; 3] {
    let tiny_caches = CpuModel {
        l1d_bytes: 4 << 10,
        l2_bytes: 16 << 10,
        l3_bytes_per_core: 64 << 10,
        ..CpuModel::named("haswell", "")
    };
    [
        CpuModel::named("x86-64", ""),
        CpuModel::named("skylake-avx512", ""),
        tiny_caches,
    ]
}

#[test]
fn blocking_cpus_cover_several_blocks() {
    let [sse, avx512, tiny] = blocking_cpus().map(|c| Tiling::for_cpu(&c));
    assert_eq!((sse.lanes, sse.mr, sse.nr), (4, 6, 8));
    assert_eq!((avx512.lanes, avx512.mr, avx512.nr), (16, 14, 32));
    assert_eq!((tiny.kc, tiny.mc, tiny.nc), (64, 12, 128));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Products through every path (GEMM with A packed at load or per call, GEMV by column
    /// blocks or rows, few columns) under the blockings of other CPUs.
    #[test]
    fn other_cpus_blockings_match(
        cpu in 0usize..3,
        m in prop_oneof![1u64..6, 6u64..40],
        k in 1u64..150,
        n in prop_oneof![Just(1u64), 2u64..16, 16u64..300],
        weight_first in any::<bool>(), act in 0u8..3,
    ) {
        let cpu = &blocking_cpus()[cpu];
        compare_blocked_for(&inference(linear_layer(m, k, n, weight_first, act)), cpu)?;
    }
}

#[test]
fn weight_only_nodes_run_once_in_the_prologue() {
    let g = inference(linear_layer(3, 20, 33, false, 1));
    let cpu = oar_codegen::cpu::host_cpu().unwrap();
    let compiled = oar_codegen::kernel::build_kernels(&g, &BTreeMap::new(), &cpu).unwrap();
    assert_eq!(
        compiled.program.prologue, 2,
        "w·s, then packing it for the product, are the fixed steps"
    );
    // Twice in a row: the second run must not depend on anything the first one rewrote.
    compare(&g).unwrap();
    let w = init_weights(&g, 1).unwrap();
    let mut m = JitModel::new(&g, &BTreeMap::new(), &w, 2).unwrap();
    let x = HostTensor::f32(
        vec![3, 20],
        (0..60).map(|i| i as f32 * 0.01 - 0.3).collect(),
    );
    let first = m.run(std::slice::from_ref(&x)).unwrap();
    let second = m.run(std::slice::from_ref(&x)).unwrap();
    assert_eq!(first[0].to_f64(), second[0].to_f64());
}

#[test]
fn training_graphs_recompute_parameter_products_every_run() {
    // In training parameters change every step: nothing computed from them is fixed.
    let mut g = inference(linear_layer(3, 20, 33, false, 1));
    g.mode = oar_ir::ExecMode::Training;
    let cpu = oar_codegen::cpu::host_cpu().unwrap();
    let compiled = oar_codegen::kernel::build_kernels(&g, &BTreeMap::new(), &cpu).unwrap();
    assert_eq!(compiled.program.prologue, 0);
    compare(&g).unwrap();
}

/// The inline exp (cpu/math.rs) against f64 exp over f32's whole range: relative error
/// ≤ 4 ulp (5e-7) where the result is a normal f32, 0 below the underflow point, ∞ above
/// the overflow point, NaN for NaN.
#[test]
fn inline_exp_matches_f64_exp() {
    let xs: Vec<f32> = (0..20001)
        .map(|i| -100.0 + i as f32 * 0.01)
        .chain([
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            88.72,
            -87.33,
            0.0,
            -0.0,
        ])
        .collect();
    let mut g = Graph::new("exp");
    let x = g.add_input("x", TensorType::f32(&[xs.len() as u64]));
    let y = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], None).unwrap();
    g.set_outputs(vec![y.into()]);
    let mut m = JitModel::new(&g, &BTreeMap::new(), &Default::default(), 1).unwrap();
    let got = m
        .run(&[HostTensor::f32(vec![xs.len()], xs.clone())])
        .unwrap()
        .remove(0)
        .to_f64();
    for (x, y) in xs.iter().zip(&got) {
        let want = (*x as f64).exp();
        if x.is_nan() {
            assert!(y.is_nan(), "exp(NaN) = {y}");
        } else if want < f32::MIN_POSITIVE as f64 {
            assert!(*y < 1.2e-38, "exp({x}) = {y}, want {want}");
        } else if want > f32::MAX as f64 {
            assert!(y.is_infinite(), "exp({x}) = {y}, want ∞");
        } else {
            assert!(
                ((y - want) / want).abs() <= 5e-7,
                "exp({x}) = {y}, want {want}"
            );
        }
    }
}

#[test]
fn training_dropout_draws_the_interpreters_mask() {
    // The executor draws the mask on the host per (seed, step); it must equal the
    // interpreter's bit for bit, and a backward dropout replaying the node shares it.
    let g = oar_ir::parse(
        "graph @g(%x: f32[64,33]) -> (f32[64,33], f32[64,33]) mode=training {\n  %drop = dropout(%x) {p=0.3} : f32[64,33]\n  %again = dropout(%x) {p=0.3, mask_of=\"drop\"} : f32[64,33]\n  return %drop, %again\n}\n",
    )
    .unwrap();
    let xs: Vec<f32> = (0..64 * 33).map(|i| 1.0 + (i % 17) as f32).collect();
    let x = HostTensor::f32(vec![64, 33], xs);
    let mut m = oar_codegen::jit::JitModel::new(&g, &BTreeMap::new(), &Weights::new(), 1)
        .expect("training dropout compiles");
    for (seed, step) in [(0u64, 1u64), (5, 2), (5, 3)] {
        let want = oar_runtime::interp::run_with_options(
            &g,
            std::slice::from_ref(&x),
            &Weights::new(),
            oar_runtime::interp::RunOptions::training(seed, step),
        )
        .unwrap()
        .outputs;
        m.executor().set_dropout(Some((seed, step)));
        let got = m.run(std::slice::from_ref(&x)).unwrap();
        assert_eq!(got[0], want[0], "seed {seed} step {step}");
        assert_eq!(got[1], want[0], "the replay shares the mask");
    }
    // Without a step: inference semantics (upscale_in_train is the identity).
    m.executor().set_dropout(None);
    assert_eq!(m.run(std::slice::from_ref(&x)).unwrap()[0], x);
}
