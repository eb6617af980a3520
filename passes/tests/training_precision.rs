//! Mixed precision (`passes/src/training/precision.rs`): the interpreter's bf16/f16 casts
//! against numpy's float16 and an independent bf16 rounding (bit for bit), a bf16 training
//! step against the f32 one (losses within 2% relative over 4 SGD steps: bf16 keeps 8
//! mantissa bits, ~0.4% per rounding; MLP and ERNIE; LCNet's forward only, see its test),
//! bf16 conv/matmul gradients against f32 (3%), and fp16 dynamic loss scaling: skipped steps leave
//! parameters and optimizer state bit-identical and halve the scale, and the scale
//! sequence follows `paddle.amp.GradScaler` (`training_loss_scale.rs`); a skipped step does not
//! advance AdamW's step.

mod training_common;

use oar_ir::op::Op;
use oar_ir::{parse, DType, Graph};
use oar_passes::training::precision::{
    BAD_STEPS_STATE, GOOD_STEPS_STATE, SCALE_STATE, SKIPPED_STATE, UPDATES_STATE,
};
use oar_passes::training::{
    build_train_step, LossKind, LossScaling, Optimizer, Precision, TrainConfig, TrainStep,
};
use oar_runtime::init::init_weights;
use oar_runtime::interp::{run, run_with_options, RunOptions};
use oar_runtime::train::{InterpRunner, StepRunner};
use oar_runtime::{HostTensor, Weights};
use serde_json::json;
use training_common::Rng;

const MLP: &str = r#"
graph @mlp(%x: f32[8,6]) -> (f32[8,4]) {
  %w1 = param "fc1.weight" {init=normal(0.0, 0.5)} : f32[6,16]
  %b1 = param "fc1.bias" {init=normal(0.0, 0.1)} : f32[16]
  %m1 = matmul(%x, %w1) : f32[8,16]
  %h1 = add(%m1, %b1) : f32[8,16]
  %r1 = relu(%h1) : f32[8,16]
  %w2 = param "fc2.weight" {init=normal(0.0, 0.5)} : f32[16,4]
  %m2 = matmul(%r1, %w2) : f32[8,4]
  return %m2
}
"#;

/// Random f32 values over f16's and bf16's ranges: ordinary magnitudes, near-ties, f16
/// subnormals and overflow, and a few specials.
fn probe_values() -> Vec<f32> {
    let mut rng = Rng(7);
    let mut v = Vec::new();
    for exp in -30..20 {
        for _ in 0..20 {
            v.push((rng.next() * 2f64.powi(exp)) as f32);
        }
    }
    // Exact ties for both formats, and the f16 overflow boundary.
    v.extend([
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65504.0,
        65519.0,
        65520.0,
        -70000.0,
        2f32.powi(-25),
        3.0 * 2f32.powi(-26),
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
    ]);
    v
}

/// `x` through `cast(x) {to}` in the interpreter.
fn interp_cast(x: &[f32], to: DType) -> Vec<f32> {
    let n = x.len();
    let g = parse(&format!(
        "graph @c(%x: f32[{n}]) -> ({to}[{n}]) {{\n  %c = cast(%x) {{to={to}}} : {to}[{n}]\n  return %c\n}}\n"
    ))
    .unwrap();
    let out = run(&g, &[HostTensor::f32(vec![n], x.to_vec())], &Weights::new()).unwrap();
    out[0].as_f32().unwrap().to_vec()
}

/// bf16 rounding written differently from the interpreter's bit trick: the two bf16
/// neighbours by truncation, then the nearer one in f64 (ties to the even mantissa).
fn bf16_reference(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let down = f32::from_bits(x.to_bits() & 0xFFFF_0000);
    if down == x {
        return x;
    }
    let up = f32::from_bits((x.to_bits() & 0xFFFF_0000) + 0x1_0000);
    // IEEE rounds as if the exponent were unbounded: past the largest bf16 the upper
    // neighbour is 2^128 (stored as inf).
    let up_value = if up.is_infinite() {
        2f64.powi(128).copysign(f64::from(x))
    } else {
        f64::from(up)
    };
    let (dd, du) = (
        (f64::from(x) - f64::from(down)).abs(),
        (up_value - f64::from(x)).abs(),
    );
    if dd < du || (dd == du && (down.to_bits() >> 16) & 1 == 0) {
        down
    } else {
        up
    }
}

#[test]
fn bf16_cast_rounds_to_nearest_even() {
    let x = probe_values();
    let got = interp_cast(&x, DType::BF16);
    for (a, (g, x)) in got.iter().zip(&x).enumerate() {
        assert_eq!(
            g.to_bits(),
            bf16_reference(*x).to_bits(),
            "#{a}: bf16({x:e})"
        );
    }
}

#[test]
fn f16_cast_matches_numpy() {
    let x = probe_values();
    let got = interp_cast(&x, DType::F16);
    let bits: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
    let script = "import json,sys\ntry:\n    import numpy as np\nexcept ImportError:\n    print('numpy is not installed', file=sys.stderr)\n    sys.exit(3)\nb=np.array(json.load(sys.stdin),dtype=np.uint32)\nr=b.view(np.float32).astype(np.float16).astype(np.float32).view(np.uint32)\nprint(json.dumps([int(v) for v in r]))\n";
    let Some(out) = training_common::python_json(&["-c", script], &json!(bits)) else {
        return;
    };
    let want: Vec<u32> = serde_json::from_value(out).unwrap();
    for (a, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.to_bits(), *w, "#{a}: f16({:e})", x[a]);
    }
}

fn config(precision: Precision) -> TrainConfig {
    let mut tc = TrainConfig::new(Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    });
    tc.precision = precision;
    tc
}

/// A step, weights (model + optimizer state) and one batch for the MLP.
fn setup(tc: &TrainConfig) -> (TrainStep, Weights, Vec<HostTensor>) {
    let model = parse(MLP).unwrap();
    let step = build_train_step(&model, tc).unwrap();
    let mut w = init_weights(&model, 11).unwrap();
    w.extend(step.init_state());
    let x = Rng(3).vec(48, 1.0).into_iter().map(|v| v as f32).collect();
    let labels = (0..8).map(|i| (i * 3 % 4) as i64).collect();
    let inputs = vec![
        HostTensor::f32(vec![8, 6], x),
        HostTensor::i64(vec![8], labels),
        HostTensor::f32(vec![], vec![0.1]),
        HostTensor::f32(vec![], vec![1.0]),
    ];
    (step, w, inputs)
}

fn losses(tc: &TrainConfig, steps: u64) -> Vec<f32> {
    let (step, mut w, mut inputs) = setup(tc);
    let mut out = Vec::new();
    for k in 1..=steps {
        inputs[3] = HostTensor::f32(vec![], vec![k as f32]);
        let r = run_with_options(&step.graph, &inputs, &w, RunOptions::training(1, k)).unwrap();
        out.push(r.outputs[0].as_f32().unwrap()[0]);
        w.extend(r.state);
    }
    out
}

fn low_matmuls(g: &Graph, dt: DType) -> usize {
    g.nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul(_)) && n.outputs[0].dtype == dt)
        .count()
}

#[test]
fn bf16_step_tracks_the_f32_step() {
    let (step, _, _) = setup(&config(Precision::Bf16));
    // Both forward matmuls and their gradient matmuls run in bf16; softmax and the loss
    // stay f32.
    assert!(low_matmuls(&step.graph, DType::BF16) >= 4);
    assert!(step
        .graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::LogSoftmax { .. } | Op::Softmax { .. }))
        .all(|n| n.outputs[0].dtype == DType::F32));
    let f32s = losses(&config(Precision::Fp32), 4);
    let bf16 = losses(&config(Precision::Bf16), 4);
    for (k, (a, b)) in f32s.iter().zip(&bf16).enumerate() {
        let rel = ((a - b) / a).abs();
        assert!(rel < 0.02, "step {}: f32 {a} bf16 {b} ({rel:.2e})", k + 1);
    }
    // The rounding is real: the runs differ.
    assert_ne!(f32s, bf16);
    assert!(f32s[3] < f32s[0] && bf16[3] < bf16[0], "{f32s:?} {bf16:?}");
}

fn scalar_state(w: &Weights, name: &str) -> f32 {
    w[name].as_f32().unwrap()[0]
}

#[test]
fn fp16_overflow_skips_steps_and_halves_the_scale() {
    let mut tc = config(Precision::Fp16);
    // 2^40 times the loss overflows f16 in the first backward matmul; each skip halves it
    // until the gradients fit.
    tc.loss_scaling = LossScaling {
        init: 2f64.powi(40),
        ..LossScaling::default()
    };
    let (step, mut w, inputs) = setup(&tc);
    assert!(low_matmuls(&step.graph, DType::F16) >= 4);
    let mut runner = InterpRunner::new(step.graph.clone(), 1).unwrap();
    let mut scale = 2f32.powi(40);
    let mut skipped = 0;
    for k in 1..=40u64 {
        let before = w.clone();
        let mut x = inputs.clone();
        x[3] = HostTensor::f32(vec![], vec![k as f32]);
        let out = runner.run(&x, &mut w, k).unwrap();
        assert!(out.loss.is_finite());
        assert_eq!(out.skipped, scalar_state(&w, SKIPPED_STATE) == 1.0);
        if out.skipped {
            skipped += 1;
            scale /= 2.0;
            // Parameters and the momentum are bit-identical; only the scaler moved.
            for (name, t) in &before {
                if !name.starts_with(SCALE_STATE) {
                    assert_eq!(&w[name], t, "step {k}: `{name}` changed on a skipped step");
                }
            }
            assert_eq!(scalar_state(&w, BAD_STEPS_STATE), 0.0);
        } else {
            assert!(skipped > 0, "the first step should overflow");
            assert_ne!(w["fc1.weight"], before["fc1.weight"]);
            assert_eq!(scalar_state(&w, GOOD_STEPS_STATE), 1.0);
            assert_eq!(scalar_state(&w, SCALE_STATE), scale);
            break;
        }
        assert_eq!(scalar_state(&w, SCALE_STATE), scale, "step {k}");
    }
    // f16's largest value is 2^16: the scale must have come down to about there.
    assert!((10..=40).contains(&skipped), "{skipped} skipped steps");
}

#[test]
fn fp16_non_finite_forward_is_a_skipped_step_not_an_error() {
    let (step, mut w, mut inputs) = setup(&config(Precision::Fp16));
    let before = w.clone();
    // 1e5 is past f16's range: the cast makes it inf, the loss is not finite.
    let mut x = inputs[0].as_f32().unwrap().to_vec();
    x[0] = 1e5;
    inputs[0] = HostTensor::f32(vec![8, 6], x);
    let mut runner = InterpRunner::new(step.graph.clone(), 1).unwrap();
    let out = runner.run(&inputs, &mut w, 1).unwrap();
    assert!(out.skipped && !out.loss.is_finite(), "{out:?}");
    assert_eq!(w["fc2.weight"], before["fc2.weight"]);
    assert_eq!(scalar_state(&w, SCALE_STATE), 32768.0);
    // In f32 the same input is an ordinary step.
    let (step32, mut w32, _) = setup(&config(Precision::Fp32));
    let mut r32 = InterpRunner::new(step32.graph, 1).unwrap();
    let out = r32.run(&inputs, &mut w32, 1).unwrap();
    assert!(!out.skipped && out.loss.is_finite());
}

#[test]
fn a_skipped_step_does_not_advance_adams_step() {
    let mut tc = TrainConfig::new("adamw".parse::<Optimizer>().unwrap());
    tc.precision = Precision::Fp16;
    let (step, w0, inputs) = setup(&tc);
    let mut runner = InterpRunner::new(step.graph.clone(), 1).unwrap();
    let mut x = inputs[0].as_f32().unwrap().to_vec();
    x[0] = 1e5;
    let mut overflowing = inputs.clone();
    overflowing[0] = HostTensor::f32(vec![8, 6], x);
    // Skipped step 1, then the batch as step 2 ...
    let mut skipped_first = w0.clone();
    assert!(
        runner
            .run(&overflowing, &mut skipped_first, 1)
            .unwrap()
            .skipped
    );
    let mut second = inputs.clone();
    second[3] = HostTensor::f32(vec![], vec![2.0]);
    assert!(!runner.run(&second, &mut skipped_first, 2).unwrap().skipped);
    // ... updates as the batch as step 1 does: the first update's bias correction (Adam's
    // first step moves each weight by about lr·sign(g); a second step's correction would
    // move it by ~25% less). The scales differ by 2, which f16 keeps exact except in
    // subnormals, hence a tolerance rather than bit equality.
    let mut direct = w0.clone();
    assert!(!runner.run(&inputs, &mut direct, 1).unwrap().skipped);
    for name in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.weight.moment1"] {
        let (a, b) = (skipped_first[name].to_f64(), direct[name].to_f64());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5, "{name}: {x} vs {y}");
        }
    }
    assert_eq!(scalar_state(&skipped_first, UPDATES_STATE), 1.0);
}

#[test]
fn bf16_ernie_step_tracks_the_f32_step() {
    let cfg = oar_models::ErnieConfig {
        vocab: 50,
        max_positions: 16,
        dropout: 0.0,
        universal: oar_models::ernie::StackConfig::new(2, 32, 2, 64),
        ..oar_models::ErnieConfig::nano()
    };
    let model = cfg.build_masked_lm("mlm").unwrap();
    let (n, s) = (2usize, 8usize);
    let bindings = [("N".to_string(), n as u64), ("seq".to_string(), s as u64)].into();
    let model = oar_passes::parallel::specialize(&model, &bindings).unwrap();
    let w0 = init_weights(&model, 3).unwrap();
    let t = |v: Vec<i64>| HostTensor::i64(vec![n, s], v);
    let mut labels = vec![-100i64; n * s];
    for k in (1..n * s).step_by(3) {
        labels[k] = (k * 7 % 50) as i64;
    }
    let inputs = vec![
        t((0..n * s).map(|i| (i * 7 % 50) as i64).collect()),
        t(vec![0; n * s]),
        t((0..n * s).map(|i| (i % s) as i64).collect()),
        t(vec![0; n * s]),
        t(labels),
        HostTensor::f32(vec![], vec![1e-2]),
        HostTensor::f32(vec![], vec![1.0]),
    ];
    let mut losses = Vec::new();
    for p in [Precision::Fp32, Precision::Bf16] {
        let mut tc = TrainConfig::new("adamw".parse::<Optimizer>().unwrap());
        tc.loss = LossKind::MaskedLm;
        tc.precision = p;
        let step = build_train_step(&model, &tc).unwrap();
        let mut w = w0.clone();
        w.extend(step.init_state());
        let mut l = Vec::new();
        for k in 1..=3u64 {
            let mut x = inputs.clone();
            x[6] = HostTensor::f32(vec![], vec![k as f32]);
            let r = run_with_options(&step.graph, &x, &w, RunOptions::training(1, k)).unwrap();
            l.push(r.outputs[0].as_f32().unwrap()[0]);
            w.extend(r.state);
        }
        losses.push(l);
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!(((a - b) / a).abs() < 0.02, "f32 {a} bf16 {b}");
    }
    assert_ne!(losses[0], losses[1]);
}

#[test]
fn bf16_lcnet_forward_tracks_f32_and_trains() {
    let model = oar_models::LcNetConfig {
        image_size: 32,
        class_num: 10,
        dropout: 0.0,
        ..oar_models::LcNetConfig::new(0.25)
    }
    .build("lcnet")
    .unwrap();
    let bindings = [("N".to_string(), 2u64)].into();
    let model = oar_passes::parallel::specialize(&model, &bindings).unwrap();
    let w0 = init_weights(&model, 5).unwrap();
    let x: Vec<f32> = Rng(4)
        .vec(2 * 3 * 32 * 32, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let inputs = vec![
        HostTensor::f32(vec![2, 3, 32, 32], x),
        HostTensor::i64(vec![2], vec![3, 7]),
        HostTensor::f32(vec![], vec![0.05]),
        HostTensor::f32(vec![], vec![1.0]),
    ];
    let mut losses = Vec::new();
    for p in [Precision::Fp32, Precision::Bf16] {
        let step = build_train_step(&model, &config(p)).unwrap();
        if p == Precision::Bf16 {
            let convs = step
                .graph
                .nodes()
                .iter()
                .filter(|n| matches!(n.op, Op::Conv2d(_)) && n.outputs[0].dtype == DType::BF16);
            assert!(convs.count() >= 10);
        }
        let mut w = w0.clone();
        w.extend(step.init_state());
        let mut l = Vec::new();
        for k in 1..=2u64 {
            let mut x = inputs.clone();
            x[3] = HostTensor::f32(vec![], vec![k as f32]);
            let r = run_with_options(&step.graph, &x, &w, RunOptions::training(1, k)).unwrap();
            l.push(r.outputs[0].as_f32().unwrap()[0]);
            w.extend(r.state);
        }
        losses.push(l);
    }
    // The first loss is the forward alone: within bf16's precision of f32's. The update
    // differs more: with batch statistics, batch_norm divides bf16-rounded conv outputs by
    // their spread, which amplifies the rounding: LCNet's bf16 gradients were 13-50% off
    // f32's at batch 8, 64×64, and about 100% at this batch of 2 (the conv and matmul
    // rules themselves agree to 2%: `bf16_conv_gradients_agree_...`). The step must still
    // train.
    let (a, b) = (losses[0][0], losses[1][0]);
    assert!(((a - b) / a).abs() < 0.02, "f32 {a} bf16 {b}");
    assert!(
        losses[1][1].is_finite() && losses[1][1] < losses[1][0],
        "{losses:?}"
    );
}

#[test]
fn bf16_conv_gradients_agree_with_f32_to_bf16_precision() {
    use oar_passes::autodiff::append_backward;
    use oar_passes::training::{append_loss, precision::cast_compute};
    let model = parse(
        r#"
graph @c(%x: f32[4,3,8,8]) -> (f32[4,5]) {
  %w = param "conv.weight" {init=normal(0.0, 0.3)} : f32[6,3,3,3]
  %c = conv2d(%x, %w) {padding=[1, 1, 1, 1]} : f32[4,6,8,8]
  %r = relu(%c) : f32[4,6,8,8]
  %dw = param "dw.weight" {init=normal(0.0, 0.3)} : f32[6,1,3,3]
  %d = conv2d(%r, %dw) {padding=[1, 1, 1, 1], groups=6} : f32[4,6,8,8]
  %p = global_avg_pool(%d) : f32[4,6,1,1]
  %f = flatten(%p) : f32[4,6]
  %w2 = param "fc.weight" {init=normal(0.0, 0.3)} : f32[6,5]
  %y = matmul(%f, %w2) : f32[4,5]
  return %y
}
"#,
    )
    .unwrap();
    let w0 = init_weights(&model, 5).unwrap();
    let x: Vec<f32> = Rng(4)
        .vec(4 * 3 * 64, 1.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let inputs = vec![
        HostTensor::f32(vec![4, 3, 8, 8], x),
        HostTensor::i64(vec![4], vec![3, 1, 0, 4]),
    ];
    let mut res = Vec::new();
    for dt in [DType::F32, DType::BF16] {
        let lg = append_loss(&model, &config(Precision::Fp32)).unwrap();
        let (g, m) = cast_compute(&lg.graph, dt, &[lg.loss]).unwrap();
        let b = append_backward(&g, m[0], false).unwrap();
        let mut gg = b.graph;
        gg.state.clear();
        gg.set_outputs(b.param_grads.iter().map(|(_, v)| *v).collect());
        let r = run_with_options(&gg, &inputs, &w0, RunOptions::training(1, 1)).unwrap();
        res.push(
            b.param_grads
                .iter()
                .map(|(n, _)| n.clone())
                .zip(r.outputs)
                .collect::<Vec<_>>(),
        );
    }
    for ((n, a), (_, b)) in res[0].iter().zip(&res[1]) {
        let (a, b) = (a.to_f64(), b.to_f64());
        let num: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        let den: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        // Measured: 1.6e-2, 4.7e-3, 5.8e-3 (bf16 keeps 8 bits: 3.9e-3 per rounding).
        assert!(num / den < 3e-2, "{n}: relative error {:.3e}", num / den);
    }
}
