//! oar's ERNIE 3.0 masked-LM model against PaddleNLP's own `ErnieForMaskedLM` with shared
//! weights (written by oar as safetensors, loaded by PaddleNLP by name: every tensor of its
//! state dict, no renaming in the test) and the same batches. Needs paddlepaddle and
//! paddlenlp (`python3 scripts/paddle_setup.py`; scripts/test.sh runs it); skips with a
//! message when they are not importable.

mod common;

use common::*;
use oar::models::ErnieConfig;
use oar::passes::parallel::specialize;
use oar::passes::training::{
    build_train_step, DecayMask, LossKind, Schedule, TrainConfig, TrainStep,
};
use oar::runtime::interp::{run_with_options, RunOptions};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::save_safetensors;
use oar::runtime::train::StepRunner;
use oar::runtime::{init::init_weights, HostTensor, Weights};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have_paddlenlp() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, paddle; assert u.find_spec('paddlenlp')",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIP: paddle or paddlenlp is not importable (run `python3 scripts/paddle_setup.py`)"
        );
    }
    ok
}

/// A counter-based generator (deterministic, no extra crates).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

/// Weights at PaddleNLP's initial scale (std 0.02 for matrices and tables), with layer-norm
/// scales and every bias away from 1 and 0, so a tensor loaded under the wrong name, or not
/// at all, shows in the loss.
fn weights_for(g: &oar::ir::Graph, seed: u64) -> Weights {
    let mut w = init_weights(g, seed).expect("init");
    let mut r = Lcg(seed);
    for (name, t) in w.iter_mut() {
        let n = t.shape.iter().product::<usize>();
        let norm_scale = name.contains("norm") && name.ends_with(".weight");
        let data = (0..n)
            .map(|_| {
                let u = r.unit();
                if norm_scale {
                    1.0 + 0.2 * u
                } else {
                    0.02 * 3f32.sqrt() * u
                }
            })
            .collect();
        *t = HostTensor::f32(t.shape.clone(), data);
    }
    w
}

/// `steps` batches of `[n, seq]`: ids in [1, vocab) (0 is PaddleNLP's pad id, which it
/// masks out of attention), token types in [0, 4), positions 0.., about 15% of positions
/// labelled (at least one per batch) with one of 100 ids, the rest −100.
struct Batches {
    ids: Vec<i64>,
    types: Vec<i64>,
    pos: Vec<i64>,
    labels: Vec<i64>,
    steps: usize,
    n: usize,
    seq: usize,
}

impl Batches {
    fn new(steps: usize, n: usize, seq: usize, cfg: &ErnieConfig, seed: u64) -> Batches {
        let mut r = Lcg(seed);
        let total = steps * n * seq;
        let ids = (0..total).map(|_| 1 + r.below(cfg.vocab - 1)).collect();
        let types = (0..total).map(|_| r.below(cfg.type_vocab)).collect();
        let pos = (0..total).map(|i| (i % seq) as i64).collect();
        let labels = (0..total)
            .map(|i| {
                let scored = r.below(100) < 15 || i % (n * seq) == 1;
                if scored {
                    // Targets from 100 ids, so that training has something to learn.
                    1 + r.below(100)
                } else {
                    -100
                }
            })
            .collect();
        Batches {
            ids,
            types,
            pos,
            labels,
            steps,
            n,
            seq,
        }
    }

    fn slice(&self, v: &[i64], s: usize) -> HostTensor {
        let k = self.n * self.seq;
        HostTensor::i64(vec![self.n, self.seq], v[s * k..(s + 1) * k].to_vec())
    }

    /// The step graph's inputs for batch `s` (model inputs, labels, lr, 1-based step).
    fn step_inputs(&self, step: &TrainStep, s: usize, lr: f64) -> Vec<HostTensor> {
        step.inputs
            .iter()
            .map(|name| match name.as_str() {
                "input_ids" => self.slice(&self.ids, s),
                "token_type_ids" => self.slice(&self.types, s),
                "position_ids" => self.slice(&self.pos, s),
                // PaddleNLP's ErnieForMaskedLM passes no task ids: task 0 everywhere.
                "task_type_ids" => {
                    HostTensor::i64(vec![self.n, self.seq], vec![0; self.n * self.seq])
                }
                "labels" => self.slice(&self.labels, s),
                "lr" => HostTensor::f32(vec![], vec![lr as f32]),
                "step" => HostTensor::f32(vec![], vec![(s + 1) as f32]),
                other => panic!("unexpected step input {other}"),
            })
            .collect()
    }

    /// Writes `<prefix>.{ids,types,pos,labels}.npy`, each `[steps, n, seq]`.
    fn save(&self, prefix: &Path) -> PathBuf {
        let shape = vec![self.steps, self.n, self.seq];
        for (k, v) in [
            ("ids", &self.ids),
            ("types", &self.types),
            ("pos", &self.pos),
            ("labels", &self.labels),
        ] {
            let path = PathBuf::from(format!("{}.{k}.npy", prefix.display()));
            write_npy(&path, &HostTensor::i64(shape.clone(), v.clone())).expect("write batch");
        }
        prefix.to_path_buf()
    }
}

/// The masked-LM training step of `cfg` at `[n, seq]`: AdamW (Paddle's defaults), decay on
/// every parameter whose name has neither "bias" nor "norm" (PaddleNLP's convention),
/// global-norm clipping at `clip`.
fn masked_lm_step(
    cfg: &ErnieConfig,
    n: usize,
    seq: usize,
    clip: f64,
) -> (oar::ir::Graph, TrainStep) {
    let model = cfg.build_masked_lm("ernie").expect("build");
    let bindings = BTreeMap::from([("N".to_string(), n as u64), ("seq".to_string(), seq as u64)]);
    let model = specialize(&model, &bindings).expect("bind N and seq");
    let mut tc = TrainConfig::new("adamw".parse().expect("adamw"));
    tc.loss = LossKind::MaskedLm;
    tc.optim.decay_mask = DecayMask::Except(vec!["bias".into(), "norm".into()]);
    tc.optim.clip_global_norm = Some(clip);
    let step = build_train_step(&model, &tc).expect("training step");
    (model, step)
}

/// Runs tests/paddle/ernie_paddle.py and reads the losses it writes.
fn paddle_losses(args: &[&str], dir: &Path, extra: Option<&Path>) -> Vec<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paddle/ernie_paddle.py");
    let out = dir.join("losses.npy");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(args)
        .arg(dir.join("w.safetensors"))
        .arg(dir.join("batch"))
        .arg(&out);
    if let Some(p) = extra {
        cmd.arg(p);
    }
    let o = cmd.output().expect("python3");
    assert!(
        o.status.success(),
        "PaddleNLP failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_npy(&out).expect("paddle losses").to_f64()
}

/// The forward masked-LM loss of `ernie-3.0-nano-zh` (the configuration the issue names:
/// 16 task types, pooler, eps 1e-12) and of `ernie-3.0-tiny` (PaddleNLP's
/// `ernie-3.0-tiny-pico-v2-zh`: no task-type table) agree with PaddleNLP's to 1e-6 relative
/// on three batches. oar's loss is the training step's (evaluated before the update).
#[test]
fn ernie_masked_lm_loss_matches_paddlenlp() {
    if !have_paddlenlp() {
        return;
    }
    for (cfg, paddle_name, seed) in [
        (ErnieConfig::nano(), "ernie-3.0-nano-zh", 31u64),
        (ErnieConfig::tiny(), "ernie-3.0-tiny-pico-v2-zh", 32),
    ] {
        let cfg = ErnieConfig {
            dropout: 0.0,
            ..cfg
        };
        let (n, seq, steps) = (2, 16, 3);
        let (model, step) = masked_lm_step(&cfg, n, seq, 1.0);
        let weights = weights_for(&model, seed);
        let batches = Batches::new(steps, n, seq, &cfg, seed + 100);
        let mut w = weights.clone();
        w.extend(step.init_state());
        let ours: Vec<f64> = (0..steps)
            .map(|s| {
                let r = run_with_options(
                    &step.graph,
                    &batches.step_inputs(&step, s, 0.0),
                    &w,
                    RunOptions::training(0, s as u64),
                )
                .expect("step");
                r.outputs[0].to_f64()[0]
            })
            .collect();
        let dir = scratch(&format!("paddle-ernie-{paddle_name}"));
        save_safetensors(&dir.join("w.safetensors"), &weights).expect("write weights");
        batches.save(&dir.join("batch"));
        let theirs = paddle_losses(&["forward", paddle_name], &dir, None);
        for (s, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let rel = (a - b).abs() / b.abs();
            eprintln!("{paddle_name} batch {s}: oar {a:.8} paddle {b:.8} rel {rel:.1e}");
            assert!(
                rel <= 1e-6,
                "{paddle_name} batch {s}: oar {a} vs paddle {b} (rel {rel:.2e})"
            );
        }
        assert_eq!(theirs.len(), steps);
    }
}

/// 20 AdamW steps (global-norm clipping at 1, linear warmup over 5 steps then linear decay,
/// PaddleNLP's decay mask) of `ernie-3.0-tiny` (`ernie-3.0-tiny-pico-v2-zh`, full size:
/// 3 layers, vocab 40000) at batch 4 × seq 16 in the interpreter, against PaddleNLP's
/// `ErnieForMaskedLM` trained by `paddle.optimizer.AdamW` from the same weights on the same
/// batches: the loss before every step agrees to 1e-4 relative. Dropout is 0 in both. The
/// same steps compiled by the LLVM backend (`CompiledRunner`) meet the same bound.
#[test]
fn ernie_tiny_trains_like_paddlenlp() {
    if !have_paddlenlp() {
        return;
    }
    let (steps, n, seq) = (20usize, 4usize, 16usize);
    let (lr, warmup, clip, wd) = (2e-3, 5u64, 1.0, 0.01);
    let cfg = ErnieConfig {
        dropout: 0.0,
        ..ErnieConfig::tiny()
    };
    let (model, step) = masked_lm_step(&cfg, n, seq, clip);
    let initial = weights_for(&model, 41);
    let batches = Batches::new(steps, n, seq, &cfg, 42);
    let sched = Schedule::named("linear", lr, warmup, steps as u64).expect("schedule");
    let mut weights = initial.clone();
    weights.extend(step.init_state());
    let mut ours = Vec::new();
    for s in 0..steps {
        let r = run_with_options(
            &step.graph,
            &batches.step_inputs(&step, s, sched.lr(s as u64 + 1)),
            &weights,
            RunOptions::training(0, s as u64),
        )
        .expect("training step");
        ours.push(r.outputs[0].to_f64()[0]);
        weights.extend(r.state);
    }
    let mut llvm_weights = initial.clone();
    llvm_weights.extend(step.init_state());
    let mut runner =
        oar::codegen::train::CompiledRunner::new(step.graph.clone(), &llvm_weights, 0, 2)
            .expect("the step compiles");
    let llvm: Vec<f64> = (0..steps)
        .map(|s| {
            let inputs = batches.step_inputs(&step, s, sched.lr(s as u64 + 1));
            let out = runner
                .run(&inputs, &mut llvm_weights, s as u64)
                .expect("compiled step");
            out.loss as f64
        })
        .collect();

    let dir = scratch("paddle-ernie-train");
    save_safetensors(&dir.join("w.safetensors"), &initial).expect("write weights");
    batches.save(&dir.join("batch"));
    let train = dir.join("train.json");
    std::fs::write(
        &train,
        format!(r#"{{"lr": {lr}, "warmup": {warmup}, "weight_decay": {wd}, "clip": {clip}}}"#),
    )
    .expect("config");
    let theirs = paddle_losses(&["train", "ernie-3.0-tiny-pico-v2-zh"], &dir, Some(&train));
    assert_eq!(theirs.len(), steps);
    for (s, ((a, c), b)) in ours.iter().zip(&llvm).zip(&theirs).enumerate() {
        let rel = (a - b).abs() / b.abs();
        let rel_llvm = (c - b).abs() / b.abs();
        eprintln!(
            "step {:2}: oar {a:.6} oar-llvm {c:.6} paddle {b:.6} rel {rel:.1e} / {rel_llvm:.1e}",
            s + 1
        );
        assert!(
            rel <= 1e-4,
            "step {}: oar {a} vs paddle {b} (rel {rel:.2e})",
            s + 1
        );
        assert!(
            rel_llvm <= 1e-4,
            "step {}: oar-llvm {c} vs paddle {b} (rel {rel_llvm:.2e})",
            s + 1
        );
    }
    // The run learns: the last loss is below the first.
    assert!(ours[steps - 1] < ours[0], "losses {ours:?}");
}
