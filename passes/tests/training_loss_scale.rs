//! fp16 dynamic loss scaling against PaddlePaddle: the loss-scale sequence of
//! `paddle.amp.GradScaler` (`passes/tests/paddle/loss_scale_ref.py`) on a linear model whose
//! batches hold an inf on chosen steps, for two (incr_every, decr_every) settings, equals
//! ours step for step (scale used, skipped or not, scale after). Skips with a message when
//! paddle is missing; the rule itself is also checked against a hand-written sequence.

mod training_common;

use oar_ir::parse;
use oar_passes::training::precision::SCALE_STATE;
use oar_passes::training::{
    build_train_step, LossKind, LossScaling, Optimizer, Precision, TrainConfig,
};
use oar_runtime::init::init_weights;
use oar_runtime::train::{InterpRunner, StepRunner};
use oar_runtime::{HostTensor, Weights};
use serde_json::{json, Value};
use training_common::Rng;

fn config(precision: Precision) -> TrainConfig {
    let mut tc = TrainConfig::new(Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    });
    tc.precision = precision;
    tc
}

fn scalar_state(w: &Weights, name: &str) -> f32 {
    w[name].as_f32().unwrap()[0]
}

/// Our scale before each step and whether it was skipped, for the pattern `bad` (a step
/// is fed an inf input where `bad` says so).
fn our_scales(ls: &LossScaling, bad: &[bool]) -> Vec<(f32, bool, f32)> {
    let mut tc = config(Precision::Fp16);
    tc.loss = LossKind::Mse;
    tc.loss_scaling = ls.clone();
    let model = parse(
        "graph @lin(%x: f32[4,3]) -> (f32[4,2]) {\n  %w = param \"w\" {init=normal(0.0, 0.5)} : f32[3,2]\n  %y = matmul(%x, %w) : f32[4,2]\n  return %y\n}\n",
    )
    .unwrap();
    let step = build_train_step(&model, &tc).unwrap();
    let mut w = init_weights(&model, 5).unwrap();
    w.extend(step.init_state());
    let mut runner = InterpRunner::new(step.graph, 1).unwrap();
    let mut rng = Rng(9);
    let mut out = Vec::new();
    for (k, &b) in (1u64..).zip(bad) {
        let mut x: Vec<f32> = rng.vec(12, 1.0).into_iter().map(|v| v as f32).collect();
        if b {
            x[5] = f32::INFINITY;
        }
        let t = rng.vec(8, 1.0).into_iter().map(|v| v as f32).collect();
        let inputs = vec![
            HostTensor::f32(vec![4, 3], x),
            HostTensor::f32(vec![4, 2], t),
            HostTensor::f32(vec![], vec![0.01]),
            HostTensor::f32(vec![], vec![k as f32]),
        ];
        let used = scalar_state(&w, SCALE_STATE);
        let r = runner.run(&inputs, &mut w, k).unwrap();
        out.push((used, r.skipped, scalar_state(&w, SCALE_STATE)));
    }
    out
}

#[test]
fn loss_scale_sequence_matches_paddle_grad_scaler() {
    let bad = [
        false, false, true, false, true, true, false, false, false, true, true, true, false, false,
        false, false, false,
    ];
    for (incr_every, decr_every) in [(2u32, 1u32), (3, 2)] {
        let ls = LossScaling {
            init: 8.0,
            incr_every,
            decr_every,
            ..LossScaling::default()
        };
        let ours = our_scales(&ls, &bad);
        // The rule itself, spelled out for the first pattern.
        if (incr_every, decr_every) == (2, 1) {
            let used: Vec<f32> = ours.iter().map(|o| o.0).collect();
            assert_eq!(
                used,
                [8., 8., 16., 8., 8., 4., 2., 2., 4., 4., 2., 1., 0.5, 0.5, 1., 1., 2.]
            );
        }
        let spec = json!({"init": ls.init, "incr_every": incr_every, "decr_every": decr_every, "bad": bad});
        let Some(theirs) = paddle(&spec) else {
            return;
        };
        let theirs: Vec<(f32, bool, f32)> = theirs
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["scale"].as_f64().unwrap() as f32,
                    r["skipped"].as_bool().unwrap(),
                    r["after"].as_f64().unwrap() as f32,
                )
            })
            .collect();
        assert_eq!(
            ours, theirs,
            "incr_every {incr_every}, decr_every {decr_every}"
        );
    }
}

/// `passes/tests/paddle/loss_scale_ref.py`'s answer, or `None` when paddle is missing.
fn paddle(spec: &Value) -> Option<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/paddle/loss_scale_ref.py"
    );
    training_common::python_json(&[script], spec)
}
