//! Online distillation (`build_online_distill_step`): the joint step's gradients against the
//! two single-model steps it combines, training progress, the hidden-state term against
//! finite differences, the frozen-teacher mode, and the errors.
//!
//! Tolerances: gradients of the joint graph and of the single-model graphs are the same
//! arithmetic in another node order, so they agree to 1e-5 (absolute, plus 1e-5 relative).
//! Finite differences run in f32 with step 1e-2: 1e-2 relative, 1e-3 absolute (see
//! `autodiff::check`).

use oar_ir::op::Op;
use oar_ir::{parse, Graph, ValueRef};
use oar_passes::autodiff::append_backward_with;
use oar_passes::autodiff::check::uniform;
use oar_passes::parallel::specialize;
use oar_passes::training::online::{append_online_loss, prefixed, STUDENT_PREFIX, TEACHER_PREFIX};
use oar_passes::training::{
    append_loss, build_online_distill_step, build_train_step, loss, split_weights, Emit,
    FeatureMatch, LossKind, OnlineDistill, Optimizer, SoftLoss, TeacherMode, TrainConfig,
    LABELS_INPUT, TEACHER_INPUT,
};
use oar_runtime::init::init_weights;
use oar_runtime::interp::{run_with_options, RunOptions};
use oar_runtime::{HostTensor, TensorData, Weights};
use std::collections::{BTreeMap, BTreeSet};

const TEACHER: &str = r#"
graph @teacher(%x: f32[6,5]) -> (f32[6,4]) {
  %w1 = param "fc1.weight" {init=normal(0.0, 0.6)} : f32[5,8]
  %b1 = param "fc1.bias" {init=normal(0.0, 0.3)} : f32[8]
  %m1 = matmul(%x, %w1) : f32[6,8]
  %a1 = add(%m1, %b1) : f32[6,8]
  %h = tanh(%a1) : f32[6,8]
  %w2 = param "fc2.weight" {init=normal(0.0, 0.6)} : f32[8,4]
  %m2 = matmul(%h, %w2) : f32[6,4]
  return %m2
}
"#;

const STUDENT: &str = r#"
graph @student(%x: f32[6,5]) -> (f32[6,4]) {
  %w1 = param "fc1.weight" {init=normal(0.0, 0.6)} : f32[5,3]
  %m1 = matmul(%x, %w1) : f32[6,3]
  %h = tanh(%m1) : f32[6,3]
  %w2 = param "fc2.weight" {init=normal(0.0, 0.6)} : f32[3,4]
  %b2 = param "fc2.bias" {init=normal(0.0, 0.3)} : f32[4]
  %m2 = matmul(%h, %w2) : f32[6,4]
  %y = add(%m2, %b2) : f32[6,4]
  return %y
}
"#;

fn adamw() -> Optimizer {
    "adamw".parse().unwrap()
}

fn mlp() -> (Graph, Graph) {
    (parse(TEACHER).unwrap(), parse(STUDENT).unwrap())
}

fn mlp_batch() -> Vec<HostTensor> {
    vec![
        HostTensor::f32(vec![6, 5], uniform(30, 11)),
        HostTensor::i64(vec![6], vec![0, 3, 1, 2, 3, 0]),
    ]
}

/// Both models' initial weights (different seeds), and the joint (prefixed) weights.
fn weights(teacher: &Graph, student: &Graph) -> (Weights, Weights, Weights) {
    let t = init_weights(teacher, 1).unwrap();
    let s = init_weights(student, 2).unwrap();
    let mut joint = Weights::new();
    for (k, v) in &t {
        joint.insert(format!("{TEACHER_PREFIX}{k}"), v.clone());
    }
    for (k, v) in &s {
        joint.insert(format!("{STUDENT_PREFIX}{k}"), v.clone());
    }
    (t, s, joint)
}

/// The gradient of every parameter of `g`'s `loss`, by name, with `stop` cut.
fn grads(
    g: &Graph,
    loss: ValueRef,
    stop: &BTreeSet<ValueRef>,
    inputs: &[HostTensor],
    w: &Weights,
) -> BTreeMap<String, Vec<f64>> {
    let b = append_backward_with(g, loss, false, stop).unwrap();
    let mut bg = b.graph.clone();
    bg.state.clear();
    bg.set_outputs(b.param_grads.iter().map(|(_, v)| *v).collect());
    let out = run_with_options(&bg, inputs, w, RunOptions::training(0, 1)).unwrap();
    b.param_grads
        .iter()
        .zip(out.outputs)
        .map(|((n, _), t)| (n.clone(), t.to_f64()))
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn distill_cfg(hard: LossKind) -> OnlineDistill {
    OnlineDistill {
        hard,
        temperature: 2.5,
        alpha: 0.4,
        soft: SoftLoss::Kl,
        ..OnlineDistill::new(adamw())
    }
}

/// (a) and (b): in the joint step the student's gradients are those of the frozen-teacher
/// `LossKind::Distill` step fed the teacher's logits, and the teacher's are those of its own
/// plain cross-entropy step: the soft term does not reach the teacher.
fn gradients_split_as_the_single_model_steps(
    teacher: &Graph,
    student: &Graph,
    cfg: &OnlineDistill,
    batch: &[HostTensor],
) {
    let (tw, sw, joint) = weights(teacher, student);
    let lg = append_online_loss(teacher, student, cfg).unwrap();
    assert_eq!(lg.stop.len(), 1, "one stop-gradient: the soft target");
    let got = grads(&lg.graph, lg.loss, &lg.stop, batch, &joint);

    let (temperature, alpha, soft) = (cfg.temperature, cfg.alpha, cfg.soft);
    let plain = TrainConfig {
        loss: cfg.hard.clone(),
        ..TrainConfig::new(adamw())
    };
    // The teacher alone, with its hard loss.
    let tl = append_loss(teacher, &plain).unwrap();
    let want_t = grads(&tl.graph, tl.loss, &BTreeSet::new(), batch, &tw);
    // The teacher's logits, fed to the frozen-teacher distillation step of the student.
    let mut tg = tl.graph.clone();
    tg.state.clear();
    tg.set_outputs(vec![tl.logits]);
    let logits = run_with_options(&tg, batch, &tw, RunOptions::training(0, 1))
        .unwrap()
        .outputs
        .remove(0);
    let frozen = TrainConfig {
        loss: LossKind::Distill {
            temperature,
            alpha,
            soft,
        },
        ..TrainConfig::new(adamw())
    };
    // `LossKind::Distill` is cross-entropy based; for the masked-LM loss the same frozen
    // step is written out: `alpha·T²·soft + (1−alpha)·hard`, the soft term averaged over the
    // scored (masked) positions as the hard loss is.
    let (sg, sloss) = match cfg.hard {
        LossKind::CrossEntropy { .. } => {
            let sl = append_loss(student, &frozen).unwrap();
            (sl.graph, sl.loss)
        }
        _ => {
            let sl = append_loss(student, &plain).unwrap();
            let mut g = sl.graph;
            let labels = ValueRef::new(g.find(LABELS_INPUT).expect("the labels input"), 0);
            let mut e = Emit::new(&mut g, "kd");
            let ty = e.ty(sl.logits).unwrap();
            let t = e.input(TEACHER_INPUT, ty).unwrap();
            let rows = loss::distillation_rows(&mut e, sl.logits, t, temperature, soft).unwrap();
            let mean = loss::masked_mean(&mut e, rows, labels).unwrap();
            let soft = e.scale(mean, temperature * temperature).unwrap();
            let a = e.scale(soft, alpha).unwrap();
            let b = e.scale(sl.loss, 1.0 - alpha).unwrap();
            let l = e.add(a, b).unwrap();
            (g, l)
        }
    };
    let mut inputs = batch.to_vec();
    inputs.push(logits);
    let want_s = grads(&sg, sloss, &BTreeSet::new(), &inputs, &sw);
    // ERNIE's pooler is declared (PaddleNLP's checkpoints carry it) but the masked-LM model
    // does not use it, so it has no gradient in either step.
    let trained = |w: &Weights| w.keys().filter(|k| !k.contains(".pooler.")).count();
    assert_eq!(want_s.len(), trained(&sw));
    for (name, want) in &want_s {
        assert_close(name, &got[&format!("{STUDENT_PREFIX}{name}")], want);
    }
    assert_eq!(want_t.len(), trained(&tw));
    for (name, want) in &want_t {
        assert_close(name, &got[&format!("{TEACHER_PREFIX}{name}")], want);
    }
    assert_eq!(got.len(), trained(&tw) + trained(&sw), "{:?}", got.keys());
}

#[test]
fn mlp_joint_gradients_are_the_frozen_distill_and_plain_gradients() {
    let (t, s) = mlp();
    let hard = LossKind::CrossEntropy {
        label_smoothing: 0.0,
    };
    for soft in [SoftLoss::Kl, SoftLoss::SoftCrossEntropy, SoftLoss::Js] {
        let cfg = OnlineDistill {
            soft,
            ..distill_cfg(hard.clone())
        };
        gradients_split_as_the_single_model_steps(&t, &s, &cfg, &mlp_batch());
    }
}

/// Small ERNIE masked-LM models: a 2-layer "mini"-like teacher (hidden 24) and a 1-layer
/// "tiny"-like student (hidden 16), one vocabulary, static `N = 2`, `seq = 6`.
fn ernie_pair() -> (Graph, Graph) {
    use oar_models::ernie::StackConfig;
    use oar_models::ErnieConfig;
    let build = |stack: StackConfig, name: &str| {
        let cfg = ErnieConfig {
            vocab: 40,
            max_positions: 16,
            dropout: 0.0,
            universal: stack,
            ..ErnieConfig::nano()
        };
        let g = cfg.build_masked_lm(name).unwrap();
        let bind = [("N".to_string(), 2u64), ("seq".to_string(), 6u64)].into();
        specialize(&g, &bind).unwrap()
    };
    (
        build(StackConfig::new(2, 24, 2, 48), "teacher"),
        build(StackConfig::new(1, 16, 2, 32), "student"),
    )
}

fn ernie_batch() -> Vec<HostTensor> {
    let (n, s) = (2, 6);
    let t = |v: Vec<i64>| HostTensor::i64(vec![n, s], v);
    let mut labels = vec![-100i64; n * s];
    for (i, id) in [(1, 7), (4, 30), (8, 2), (10, 19)] {
        labels[i] = id;
    }
    vec![
        t((0..n * s).map(|i| (i * 13 % 40) as i64).collect()),
        t(vec![0; n * s]),
        t((0..n * s).map(|i| (i % s) as i64).collect()),
        t(vec![0; n * s]),
        t(labels),
    ]
}

#[test]
fn ernie_joint_gradients_are_the_frozen_distill_and_plain_gradients() {
    let (t, s) = ernie_pair();
    let cfg = distill_cfg(LossKind::MaskedLm);
    gradients_split_as_the_single_model_steps(&t, &s, &cfg, &ernie_batch());
}

/// The first attention softmax of `g`, and the last layer_norm of its encoder: the
/// second-to-last layer_norm, the last being the MLM head's (the DSL numbers its nodes).
fn ernie_taps(g: &Graph) -> (String, String) {
    let attn = g
        .nodes()
        .iter()
        .find(|n| matches!(n.op, Op::Softmax { .. }))
        .map(|n| n.name.clone())
        .expect("an attention softmax");
    let norms: Vec<&str> = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::LayerNorm { .. }))
        .map(|n| n.name.as_str())
        .collect();
    let hidden = norms[norms.len() - 2].to_string();
    (attn, hidden)
}

/// Runs `steps` steps on one batch; returns (teacher hard, student hard) per step.
fn train(
    step: &oar_passes::training::TrainStep,
    batch: &[HostTensor],
    w: &mut Weights,
    lr: f32,
    steps: u64,
) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for k in 1..=steps {
        let mut x = batch.to_vec();
        x.push(HostTensor::f32(vec![], vec![lr]));
        x.push(HostTensor::f32(vec![], vec![k as f32]));
        let r = run_with_options(&step.graph, &x, w, RunOptions::training(0, k)).unwrap();
        let f = |i: usize| r.outputs[i].as_f32().unwrap()[0];
        out.push((f(2), f(3)));
        for (name, v) in r.state {
            w.insert(name, v);
        }
    }
    out
}

/// (c) Several steps lower both hard losses, for the MLP pair and for ERNIE with the
/// hidden-state (projected, 16 → 24) and attention-map terms.
#[test]
fn online_steps_lower_both_hard_losses() {
    let (t, s) = mlp();
    let cfg = OnlineDistill {
        hidden: vec![FeatureMatch {
            student: "h".into(),
            teacher: "h".into(),
            weight: 0.5,
        }],
        ..distill_cfg(LossKind::CrossEntropy {
            label_smoothing: 0.0,
        })
    };
    let step = build_online_distill_step(&t, &s, &cfg).unwrap();
    oar_runtime::train::StepContract::check(&step.graph).unwrap();
    assert_eq!(step.inputs, ["x", "labels", "lr", "step"]);
    assert!(step.unused_params.is_empty(), "{:?}", step.unused_params);
    let (_, _, mut w) = weights(&t, &s);
    w.extend(
        init_weights(&step.graph, 3)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with("distill.")),
    );
    w.extend(step.init_state());
    let h = train(&step, &mlp_batch(), &mut w, 5e-2, 12);
    let (first, last) = (h[0], h[h.len() - 1]);
    assert!(last.0 < 0.8 * first.0 && last.1 < 0.8 * first.1, "{h:?}");

    let (t, s) = ernie_pair();
    let ((ta, th), (sa, sh)) = (ernie_taps(&t), ernie_taps(&s));
    let cfg = OnlineDistill {
        hidden: vec![FeatureMatch {
            student: sh,
            teacher: th,
            weight: 1.0,
        }],
        attention: vec![FeatureMatch {
            student: sa,
            teacher: ta,
            weight: 1.0,
        }],
        ..distill_cfg(LossKind::MaskedLm)
    };
    let step = build_online_distill_step(&t, &s, &cfg).unwrap();
    oar_runtime::train::StepContract::check(&step.graph).unwrap();
    let mut w = init_weights(&step.graph, 4).unwrap();
    w.extend(step.init_state());
    let h = train(&step, &ernie_batch(), &mut w, 1e-2, 4);
    let (first, last) = (h[0], h[h.len() - 1]);
    assert!(first.0 > 3.0 && first.1 > 3.0, "{h:?} (ln 40 = 3.7)");
    assert!(last.0 < first.0 && last.1 < first.1, "{h:?}");
    // Each model's weights come back out under their own names.
    let (tw, sw) = split_weights(&w, &t, &s).unwrap();
    assert_eq!(tw.len(), init_weights(&t, 0).unwrap().len());
    assert_eq!(sw.len(), init_weights(&s, 0).unwrap().len());
    let mut inputs = ernie_batch();
    inputs.pop();
    let alone = oar_runtime::run(&s, &inputs, &sw).unwrap();
    let eval = prefixed(&s, STUDENT_PREFIX).unwrap();
    let joint = oar_runtime::run(&eval, &inputs, &w).unwrap();
    assert_eq!(alone[0], joint[0]);
}

fn axpy(t: &HostTensor, dir: &[f32], h: f64) -> HostTensor {
    let TensorData::F32(d) = &t.data else {
        panic!("f32 weights")
    };
    let v = d
        .iter()
        .zip(dir)
        .map(|(x, v)| (*x as f64 + h * *v as f64) as f32)
        .collect();
    HostTensor::f32(t.shape.clone(), v)
}

/// (d) The hidden-state term (with its projection, 3 → 8) against central finite
/// differences of the loss, for the student's parameters and the projection. With
/// `alpha = 0` and the hidden weight 5 the term dominates the student's gradient. The
/// teacher's parameters are not checked: the stop-gradient makes its analytic gradient
/// differ from the finite difference on purpose.
#[test]
fn hidden_state_term_matches_finite_differences() {
    let (t, s) = mlp();
    let cfg = OnlineDistill {
        alpha: 0.0,
        hidden: vec![FeatureMatch {
            student: "h".into(),
            teacher: "h".into(),
            weight: 5.0,
        }],
        ..distill_cfg(LossKind::CrossEntropy {
            label_smoothing: 0.0,
        })
    };
    let lg = append_online_loss(&t, &s, &cfg).unwrap();
    assert_eq!(lg.projections, ["distill.proj.0"]);
    let (_, _, mut w) = weights(&t, &s);
    w.insert(
        "distill.proj.0".into(),
        HostTensor::f32(vec![3, 8], uniform(24, 5)),
    );
    let batch = mlp_batch();
    let g = grads(&lg.graph, lg.loss, &lg.stop, &batch, &w);
    let mut fwd = lg.graph.clone();
    fwd.state.clear();
    fwd.set_outputs(vec![lg.loss]);
    let loss = |w: &Weights| {
        run_with_options(&fwd, &batch, w, RunOptions::training(0, 1))
            .unwrap()
            .outputs[0]
            .to_f64()[0]
    };
    let h = 1e-2;
    let mut checked = 0;
    for (k, (name, analytic)) in g.iter().enumerate() {
        if name.starts_with(TEACHER_PREFIX) {
            continue;
        }
        let w0 = &w[name];
        let dir = uniform(w0.numel(), 100 + k as u64);
        let a: f64 = analytic.iter().zip(&dir).map(|(g, d)| g * *d as f64).sum();
        let (mut plus, mut minus) = (w.clone(), w.clone());
        plus.insert(name.clone(), axpy(w0, &dir, h));
        minus.insert(name.clone(), axpy(w0, &dir, -h));
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h);
        let tol = 1e-3 + 1e-2 * a.abs().max(numeric.abs());
        assert!((a - numeric).abs() <= tol, "{name}: {a} vs {numeric}");
        checked += 1;
    }
    assert_eq!(
        checked, 4,
        "student fc1.weight, fc2.weight, fc2.bias and the projection"
    );
}

/// A frozen teacher: no gradient, no update, no optimizer state; its hard loss is still
/// reported. The student's step is the online one's.
#[test]
fn a_frozen_teacher_is_not_updated() {
    let (_, s) = mlp();
    // A teacher dropout takes its inference form (identity here): the teacher's loss stays
    // fixed from step to step although each step draws new masks.
    let t = parse(&TEACHER.replace(
        "%h = tanh(%a1) : f32[6,8]",
        "%h0 = tanh(%a1) : f32[6,8]\n  %h = dropout(%h0) {p=0.5} : f32[6,8]",
    ))
    .unwrap();
    let cfg = OnlineDistill {
        teacher: TeacherMode::Frozen,
        ..distill_cfg(LossKind::CrossEntropy {
            label_smoothing: 0.0,
        })
    };
    let step = build_online_distill_step(&t, &s, &cfg).unwrap();
    assert!(step.unused_params.is_empty(), "{:?}", step.unused_params);
    assert!(
        step.graph.state.iter().all(|n| !n.contains(TEACHER_PREFIX)),
        "{:?}",
        step.graph.state
    );
    assert!(step
        .slots
        .iter()
        .all(|n| !n.name.starts_with(TEACHER_PREFIX)));
    let (_, _, mut w) = weights(&t, &s);
    let before = w.clone();
    w.extend(step.init_state());
    let h = train(&step, &mlp_batch(), &mut w, 5e-2, 6);
    for (k, v) in &before {
        if k.starts_with(TEACHER_PREFIX) {
            assert_eq!(&w[k], v, "{k}");
        } else {
            assert_ne!(&w[k], v, "{k}");
        }
    }
    assert!(
        h.iter().all(|x| x.0 == h[0].0),
        "a fixed teacher's loss: {h:?}"
    );
    assert!(h[5].1 < h[0].1, "{h:?}");
}

#[test]
fn bad_pairs_and_settings_are_clear_errors() {
    let (t, s) = mlp();
    let cfg = distill_cfg(LossKind::CrossEntropy {
        label_smoothing: 0.0,
    });
    let other = parse(
        &STUDENT
            .replace("f32[6,5]", "f32[6,7]")
            .replace("f32[5,3]", "f32[7,3]"),
    )
    .unwrap();
    let err = build_online_distill_step(&t, &other, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the teacher takes the input `x` as f32[6,5] but the student as f32[6,7]"),
        "{err}"
    );
    let bad = OnlineDistill {
        alpha: 1.5,
        ..cfg.clone()
    };
    let err = build_online_distill_step(&t, &s, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("alpha = 1.5"), "{err}");
    let bad = OnlineDistill {
        hidden: vec![FeatureMatch {
            student: "nope".into(),
            teacher: "h".into(),
            weight: 1.0,
        }],
        ..cfg.clone()
    };
    let err = build_online_distill_step(&t, &s, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the student has no node named `nope`"),
        "{err}"
    );
    let bad = OnlineDistill {
        hard: LossKind::Mse,
        ..cfg.clone()
    };
    let err = build_online_distill_step(&t, &s, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cross_entropy or masked_lm"), "{err}");
    let bad = OnlineDistill {
        attention: vec![FeatureMatch {
            student: "h".into(),
            teacher: "h".into(),
            weight: 1.0,
        }],
        ..cfg
    };
    let err = build_online_distill_step(&t, &s, &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("maps must have one type"), "{err}");
    // A plain step of either model still builds (the joint one does not change them).
    build_train_step(&t, &TrainConfig::new(adamw())).unwrap();
}

/// SSLD's unlabelled rows (label `IGNORE_INDEX`): both hard losses average over the labelled
/// rows only, the soft term (here the Jensen–Shannon divergence) over every row — checked
/// against the logits the step computes, in f64.
#[test]
fn unlabeled_rows_skip_the_hard_losses_not_the_soft_term() {
    let (t, s) = mlp();
    let cfg = OnlineDistill {
        soft: SoftLoss::Js,
        unlabeled: true,
        teacher: TeacherMode::Frozen,
        ..distill_cfg(LossKind::CrossEntropy {
            label_smoothing: 0.0,
        })
    };
    let (_, _, joint) = weights(&t, &s);
    let lg = append_online_loss(&t, &s, &cfg).unwrap();
    let mut g = lg.graph.clone();
    g.state.clear();
    g.set_outputs(vec![
        lg.student_logits,
        lg.teacher_logits,
        lg.student_hard,
        lg.teacher_hard,
        lg.distill,
        lg.loss,
    ]);
    let ignore = loss::IGNORE_INDEX;
    let labels = vec![0, ignore, 1, ignore, 3, 0];
    let mut batch = mlp_batch();
    batch[1] = HostTensor::i64(vec![6], labels.clone());
    let out = run_with_options(&g, &batch, &joint, RunOptions::training(0, 1))
        .unwrap()
        .outputs;
    let (sl, tl) = (out[0].to_f64(), out[1].to_f64());
    let log_softmax = |row: &[f64], temp: f64| {
        let z: Vec<f64> = row.iter().map(|v| v / temp).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        z.iter().map(|v| v - lse).collect::<Vec<f64>>()
    };
    let hard = |logits: &[f64]| {
        let rows: Vec<f64> = (0..6)
            .filter(|&r| labels[r] != ignore)
            .map(|r| -log_softmax(&logits[r * 4..r * 4 + 4], 1.0)[labels[r] as usize])
            .collect();
        rows.iter().sum::<f64>() / rows.len() as f64
    };
    let mut js = 0.0;
    for r in 0..6 {
        let ps = log_softmax(&sl[r * 4..r * 4 + 4], cfg.temperature);
        let pt = log_softmax(&tl[r * 4..r * 4 + 4], cfg.temperature);
        for k in 0..4 {
            let (a, b) = (pt[k].exp(), ps[k].exp());
            let m = 0.5 * (a + b);
            js += 0.5 * (a * (a / m).ln() + b * (b / m).ln());
        }
    }
    let t2 = cfg.temperature * cfg.temperature;
    let want_distill = cfg.alpha * t2 * js / 6.0;
    let scalar = |k: usize| out[k].to_f64()[0];
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{what}: {got} vs {want}"
        );
    };
    close(scalar(2), hard(&sl), "student hard loss over labelled rows");
    close(scalar(3), hard(&tl), "teacher hard loss over labelled rows");
    close(scalar(4), want_distill, "soft term over every row");
    // Frozen teacher: L = (1 − α)·student hard + distill.
    close(
        scalar(5),
        (1.0 - cfg.alpha) * hard(&sl) + want_distill,
        "joint loss",
    );
    // Label smoothing has no masked form: refused, not ignored.
    let smoothed = OnlineDistill {
        hard: LossKind::CrossEntropy {
            label_smoothing: 0.1,
        },
        ..cfg
    };
    let err = append_online_loss(&t, &s, &smoothed)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label smoothing"), "{err}");
}
