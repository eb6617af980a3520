//! The training loop with the hand-written softmax-regression step: it learns (digits and a
//! synthetic set), evaluation leaves the weights alone, and a NaN loss names step and node.

mod train_util;

use oar_runtime::train::{train, LoopConfig, Schedule, TrainError};
use train_util::*;

fn config(steps: u64, eval_every: Option<u64>) -> LoopConfig {
    LoopConfig {
        steps,
        eval_every,
        save: None,
        seed: 3,
        config: serde_json::json!({}),
        loss_parts: Vec::new(),
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn softmax_regression_learns_the_digits() {
    let Some(dir) = digits_dir() else { return };
    let (tr, val) = split(&dir, 0.2, 11);
    assert_eq!((tr.len(), val.len()), (1438, 359));
    let (mut runner, mut state) = start(softmax_graph(), tr, loader_config(32, 5, 0, false), 1);
    let sched = Schedule::named("cosine", 0.5, 10, 300).unwrap();
    let mut rec = Recorder::default();
    let s = train(
        &mut runner,
        &mut state,
        Some(&val),
        &|k| sched.lr(k),
        &config(300, Some(100)),
        &mut rec,
    )
    .unwrap();
    let losses: Vec<f32> = rec.steps.iter().map(|r| r.loss).collect();
    // Uniform logits give ln 10 ≈ 2.30 at the start.
    assert!(
        (mean(&losses[..5]) - 2.30).abs() < 0.1,
        "first losses {:?}",
        &losses[..5]
    );
    assert!(
        mean(&losses[280..]) < 0.4,
        "last losses {:?}",
        &losses[280..]
    );
    assert_eq!(rec.evals.len(), 3);
    let acc = s.best_eval_accuracy.unwrap();
    eprintln!("digits: validation accuracy {acc:.3} after 300 steps");
    assert!(acc >= 0.9, "validation accuracy {acc}");
    assert_eq!(s.last_eval.as_ref().unwrap().samples, 359);
    assert!(s.last_eval.unwrap().eval_loss < 0.5);
}

#[test]
fn the_loop_learns_a_synthetic_set_and_evaluation_changes_nothing() {
    let dir = scratch("synthetic-learn");
    write_synthetic(&dir, 500, 0.3, 9);
    let (tr, val) = split(&dir, 0.2, 1);
    let (mut runner, mut state) = start(softmax_graph(), tr, loader_config(25, 2, 0, false), 4);
    let mut rec = Recorder::default();
    let s = train(
        &mut runner,
        &mut state,
        Some(&val),
        &|_| 0.5,
        &config(120, Some(40)),
        &mut rec,
    )
    .unwrap();
    assert_eq!((s.steps, s.steps_run), (120, 120));
    assert!(s.best_eval_accuracy.unwrap() >= 0.95, "{s:?}");
    // An evaluation neither moves the weights nor the loader.
    let before = (state.weights.clone(), state.loader.position());
    let again = oar_runtime::train::evaluate(&mut runner, &state, &val, 7).unwrap();
    assert_eq!((state.weights.clone(), state.loader.position()), before);
    assert_eq!(again.samples, val.len());
    assert_eq!(
        again.eval_accuracy,
        s.last_eval.unwrap().eval_accuracy,
        "batching does not change the score"
    );
    // A fresh run with lr = 0 keeps its initial weights and loss level.
    let (tr, _) = split(&dir, 0.2, 1);
    let (mut r0, mut s0) = start(softmax_graph(), tr, loader_config(25, 2, 0, false), 4);
    let w0 = s0.weights.clone();
    train(&mut r0, &mut s0, None, &|_| 0.0, &config(5, None), &mut ()).unwrap();
    assert_eq!(s0.weights, w0);
}

#[test]
fn a_nan_loss_names_the_step_and_the_first_non_finite_node() {
    let dir = scratch("nan");
    write_synthetic(&dir, 64, 0.1, 2);
    let (tr, _) = split(&dir, 0.0, 1);
    // log of the mean log-probability, which is negative: NaN at the loss node.
    let text = SOFTMAX.replace("%loss = neg(%mean)", "%loss = log(%mean)");
    let g = oar_ir::parse(&text).unwrap();
    let (mut runner, mut state) = start(g, tr.clone(), loader_config(16, 1, 0, false), 0);
    let w0 = state.weights.clone();
    let err = train(
        &mut runner,
        &mut state,
        None,
        &|_| 0.1,
        &config(3, None),
        &mut (),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, TrainError::NonFinite { step: 1, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("step 1") && msg.contains("%loss (log) produced NaN"),
        "{msg}"
    );
    assert_eq!(state.weights, w0, "a failed step writes nothing back");
    // A learning rate of 1e38 overflows the weights; a later step's loss is not finite and
    // the first non-finite value is named (a weight or the matmul that reads it).
    let (mut runner, mut state) = start(softmax_graph(), tr, loader_config(16, 1, 0, false), 0);
    let err = train(
        &mut runner,
        &mut state,
        None,
        &|_| 1e38,
        &config(10, None),
        &mut (),
    )
    .unwrap_err();
    let msg = err.to_string();
    let TrainError::NonFinite { step, .. } = err else {
        panic!("{msg}")
    };
    assert!(step >= 2, "{msg}");
    assert!(
        msg.contains(&format!("step {step}")) && msg.contains("the first non-finite value: %"),
        "{msg}"
    );
}

#[test]
fn the_diagnosis_names_a_non_finite_input_or_weight() {
    use oar_runtime::interp::{first_non_finite, RunOptions};
    let g = softmax_graph();
    let mut w = oar_runtime::init::init_weights(&g, 0).unwrap();
    let mut x = vec![0.5f32; 2 * 64];
    let inputs = |x: &[f32]| {
        vec![
            oar_runtime::HostTensor::f32(vec![2, 1, 8, 8], x.to_vec()),
            oar_runtime::HostTensor::i64(vec![2], vec![3, 4]),
            oar_runtime::HostTensor::f32(vec![], vec![0.1]),
            oar_runtime::HostTensor::f32(vec![], vec![1.0]),
        ]
    };
    let opts = RunOptions::training(0, 1);
    assert_eq!(first_non_finite(&g, &inputs(&x), &w, opts).unwrap(), None);
    x[70] = f32::INFINITY;
    let nf = first_non_finite(&g, &inputs(&x), &w, opts)
        .unwrap()
        .unwrap();
    assert_eq!((nf.node.as_str(), nf.index), ("x", 70));
    x[70] = 0.0;
    if let oar_runtime::TensorData::F32(v) = &mut w.get_mut("fc.bias").unwrap().data {
        v[2] = f32::NAN;
    }
    let nf = first_non_finite(&g, &inputs(&x), &w, opts)
        .unwrap()
        .unwrap();
    assert_eq!(nf.to_string(), "%b (param) produced NaN at element 2");
}

#[test]
fn a_graph_off_the_contract_is_refused_by_position() {
    let inference = SOFTMAX.replace(" mode=training", "");
    let inference = inference
        .lines()
        .filter(|l| !l.trim_start().starts_with("update"))
        .collect::<Vec<_>>()
        .join("\n");
    let e =
        oar_runtime::train::StepContract::check(&oar_ir::parse(&inference).unwrap()).unwrap_err();
    assert!(e.to_string().contains("mode=training"), "{e}");
    let f32_labels = SOFTMAX
        .replace("%labels: i64[N]", "%labels: f32[N]")
        .replace("%lab = unsqueeze(%labels) {axes=[1]} : i64[N,1]", "%lab0 = unsqueeze(%labels) {axes=[1]} : f32[N,1]\n  %lab = cast(%lab0) {to=i64} : i64[N,1]");
    let e =
        oar_runtime::train::StepContract::check(&oar_ir::parse(&f32_labels).unwrap()).unwrap_err();
    assert!(
        e.to_string()
            .contains("the labels (`labels`), must be i64[N] (class ids of the logits f32[N,10]) or the logits' own type; found f32[N]"),
        "{e}"
    );
}
