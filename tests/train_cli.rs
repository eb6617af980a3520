//! `oar train` end to end with the built binary: it learns, writes its JSON-lines log and
//! checkpoints, resumes exactly, and refuses bad data, bad graphs, NaN losses and damaged
//! checkpoints with a message instead of a panic.

#[path = "../runtime/tests/train_util/mod.rs"]
mod train_util;

mod cli_util;

use cli_util::{fails, log_lines, ok, repo};
use std::path::{Path, PathBuf};
use train_util::{dropout_graph, scratch, write_synthetic};

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn synthetic(tag: &str) -> PathBuf {
    let d = scratch(tag);
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_synthetic(&data, 400, 0.3, 12);
    d
}

#[test]
fn train_learns_and_logs_json_lines() {
    let d = synthetic("cli-learn");
    let log = d.join("logs/run.jsonl");
    let model = repo("runtime/tests/train_softmax.oir");
    let out = ok(&[
        "train",
        &model,
        "--data",
        s(&d.join("data")),
        "--steps",
        "120",
        "--batch",
        "25",
        "--lr",
        "0.5",
        "--schedule",
        "cosine",
        "--warmup",
        "5",
        "--eval-every",
        "40",
        "--holdout",
        "0.2",
        "--log",
        s(&log),
    ]);
    assert!(
        out.contains("trained 120 steps (120 in this run, batch 25, 320 training samples)"),
        "{out}"
    );
    assert!(out.contains("best eval accuracy"), "{out}");
    let steps = log_lines(&log, "step");
    assert_eq!(steps.len(), 120);
    assert_eq!(steps[0]["step"], 1);
    // Paddle's LinearWarmup from 0: step 1 runs at 0, step 2 at 1/5 of 0.5.
    assert_eq!(steps[0]["lr"].as_f64().unwrap(), 0.0);
    assert!(
        (steps[1]["lr"].as_f64().unwrap() - 0.1).abs() < 1e-12,
        "warmup: 1/5 of 0.5"
    );
    assert!(steps[0]["samples_per_sec"].as_f64().unwrap() > 0.0);
    let loss = |r: &[serde_json::Value]| -> f64 {
        r.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    assert!(
        loss(&steps[110..]) < loss(&steps[..10]) / 4.0,
        "{} vs {}",
        loss(&steps[110..]),
        loss(&steps[..10])
    );
    let evals = log_lines(&log, "eval");
    let at: Vec<u64> = evals.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(at, vec![40, 80, 120]);
    let acc = evals[2]["eval_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "eval accuracy {acc}");
    assert_eq!(evals[2]["samples"], 80);
}

#[test]
fn train_on_the_digits_reaches_ninety_percent() {
    let Some(data) = train_util::digits_dir() else {
        return;
    };
    let d = scratch("cli-digits");
    let log = d.join("run.jsonl");
    let model = repo("runtime/tests/train_softmax.oir");
    ok(&[
        "train",
        &model,
        "--data",
        s(&data),
        "--epochs",
        "6",
        "--batch",
        "32",
        "--lr",
        "0.5",
        "--schedule",
        "cosine",
        "--eval-every",
        "100",
        "--log",
        s(&log),
    ]);
    // 1,617 training samples: 50 full batches per epoch.
    assert_eq!(log_lines(&log, "step").len(), 300);
    let evals = log_lines(&log, "eval");
    let acc = evals.last().unwrap()["eval_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "digits eval accuracy {acc}");
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    let d = synthetic("cli-resume");
    // The dropout variant: the resumed steps must draw the same masks.
    let model = d.join("dropout.oir");
    std::fs::write(&model, oar_ir::print(&dropout_graph())).unwrap();
    let data = d.join("data");
    let common = |steps: &'static str, save: &Path, log: &Path| -> Vec<String> {
        [
            "train",
            s(&model),
            "--data",
            s(&data),
            "--steps",
            steps,
            "--batch",
            "16",
            "--lr",
            "0.3",
            "--warmup",
            "8",
            "--crop-pad",
            "1",
            "--seed",
            "5",
            "--eval-every",
            "10",
            "--save",
            s(save),
            "--save-every",
            "5",
            "--log",
            s(log),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let (full, part) = (d.join("full"), d.join("part"));
    ok(&argv(&common("30", &full, &d.join("full.jsonl"))));
    ok(&argv(&common("15", &part, &d.join("part.jsonl"))));
    let mut again = common("30", &part, &d.join("part.jsonl"));
    again.extend(["--resume".to_string(), s(&part).to_string()]);
    let out = ok(&argv(&again));
    assert!(out.contains("trained 30 steps (15 in this run"), "{out}");
    let losses = |p: &Path| -> Vec<(u64, f64)> {
        log_lines(p, "step")
            .iter()
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    };
    let (a, b) = (losses(&d.join("full.jsonl")), losses(&d.join("part.jsonl")));
    assert_eq!(
        b.len(),
        30,
        "15 steps, then 15 more appended to the same log"
    );
    assert_eq!(a, b);
    let w = |root: &Path| {
        std::fs::read(root.join("step-00000030/shard-00000-of-00001.safetensors")).unwrap()
    };
    assert!(w(&full) == w(&part), "final weights differ");
    // keep = 3 (the default): steps 20, 25, 30 remain.
    let mut kept: Vec<String> = std::fs::read_dir(&full)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-00000020", "step-00000025", "step-00000030"]);

    // A different batch size would not continue the same stream.
    let mut other = common("40", &part, &d.join("x.jsonl"));
    other[7] = "8".into();
    other.extend(["--resume".to_string(), s(&part).to_string()]);
    let e = fails(&argv(&other));
    assert!(
        e.contains("cannot resume") && e.contains("--batch 8 (the checkpoint has 16)"),
        "{e}"
    );
    // A flipped bit in the newest checkpoint: resuming that checkpoint by name is refused...
    let wfile = part.join("step-00000030/shard-00000-of-00001.safetensors");
    let mut bytes = std::fs::read(&wfile).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 1;
    std::fs::write(&wfile, bytes).unwrap();
    let mut corrupt = common("40", &part, &d.join("x.jsonl"));
    corrupt.extend([
        "--resume".to_string(),
        s(&part.join("step-00000030")).to_string(),
    ]);
    let e = fails(&argv(&corrupt));
    assert!(
        e.contains("shard-00000-of-00001.safetensors") && e.contains("checksum"),
        "{e}"
    );
    // ...and resuming the root falls back to the previous one, warning with the bad file.
    let fallback = |steps: &'static str, bad: &str, back_to: u64| {
        let mut args = common(steps, &part, &d.join("x.jsonl"));
        args.extend(["--resume".to_string(), s(&part).to_string()]);
        let out = cli_util::oar(&argv(&args));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("warning: skipped")
                && err.contains(&format!("{bad}/shard-00000-of-00001.safetensors"))
                && err.contains(&format!("resuming from the checkpoint at step {back_to}")),
            "{err}"
        );
        err
    };
    let err = fallback("40", "step-00000030", 25);
    assert!(err.contains("checksum sha256"), "{err}");
    // A truncated shard in the newest (step 40 of the run just made) falls back to 35.
    let wfile = part.join("step-00000040/shard-00000-of-00001.safetensors");
    let bytes = std::fs::read(&wfile).unwrap();
    std::fs::write(&wfile, &bytes[..bytes.len() - 64]).unwrap();
    let err = fallback("45", "step-00000040", 35);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let d = synthetic("cli-errors");
    let data = d.join("data");
    let model = repo("runtime/tests/train_softmax.oir");
    // Labels of the wrong dtype.
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(data.join("images.npy"), bad.join("images.npy")).unwrap();
    let labels = oar_runtime::HostTensor::f32(vec![400], vec![1.0; 400]);
    oar_runtime::io::npy::write_npy(&bad.join("labels.npy"), &labels).unwrap();
    let e = fails(&["train", &model, "--data", s(&bad), "--steps", "3"]);
    assert!(
        e.contains("labels.npy: expected integer labels [n], found f32[400]"),
        "{e}"
    );
    // Images with a channel count the graph does not take.
    let img = oar_runtime::HostTensor::f32(vec![400, 3, 8, 8], vec![0.5; 400 * 192]);
    oar_runtime::io::npy::write_npy(&bad.join("images.npy"), &img).unwrap();
    std::fs::copy(data.join("labels.npy"), bad.join("labels.npy")).unwrap();
    let e = fails(&["train", &model, "--data", s(&bad), "--steps", "3"]);
    assert!(e.contains("3 channel(s), the graph's input takes 1"), "{e}");
    // An inference graph gets a built step, but oar train feeds it one image input.
    let e = fails(&[
        "train",
        &repo("examples/mlp.oir"),
        "--data",
        s(&data),
        "--steps",
        "3",
    ]);
    assert!(e.contains("input `x` must be f32[N, c, h, w]"), "{e}");
    // A NaN loss names the step and the node.
    let nan = d.join("nan.oir");
    let text = train_util::SOFTMAX.replace("%loss = neg(%mean)", "%loss = log(%mean)");
    std::fs::write(&nan, text).unwrap();
    let e = fails(&["train", s(&nan), "--data", s(&data), "--steps", "3"]);
    assert!(
        e.contains("step 1") && e.contains("%loss (log) produced NaN"),
        "{e}"
    );
    // No length.
    let e = fails(&["train", &model, "--data", s(&data)]);
    assert!(e.contains("--steps N or --epochs E"), "{e}");
}

/// A zoo classifier by name: `oar train lcnet_x0_25` sizes the head to the data's classes,
/// repeats the grey channel into RGB, builds the step (autodiff, AdamW, clipping) and
/// learns the synthetic prototypes; an interrupted run resumes to the same final weights;
/// an unknown optimizer is a clear error.
#[test]
fn zoo_lcnet_trains_by_name_and_resumes_exactly() {
    let d = scratch("train-cli-zoo");
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_synthetic(&data, 240, 0.2, 5);
    let run = |steps: &str, save: &Path, extra: &[&str]| {
        let mut a = vec![
            "train",
            "lcnet_x0_25",
            "--data",
            s(&data),
            "--steps",
            steps,
            "--batch",
            "16",
            "--lr",
            "0.01",
            "--schedule",
            "cosine",
            "--warmup",
            "5",
            "--clip-norm",
            "1.0",
            "--holdout",
            "0.2",
            "--eval-every",
            "40",
            "--save",
            s(save),
        ];
        a.extend_from_slice(extra);
        ok(&a)
    };
    let full = d.join("full");
    let log = d.join("full.jsonl");
    let out = run("40", &full, &["--log", s(&log)]);
    assert!(out.contains("trained 40 steps"), "{out}");
    let steps = log_lines(&log, "step");
    let mean = |r: &[serde_json::Value]| {
        r.iter().map(|v| v["loss"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (mean(&steps[..10]), mean(&steps[30..]));
    assert!(last < 0.7 * first, "loss {first:.3} → {last:.3}");
    // Evaluation runs the inference model (running statistics); 40 steps are too few for
    // them to settle, so only its presence is checked here (docs/training.md has the
    // digits run to 97%).
    let eval = log_lines(&log, "eval");
    assert_eq!(eval.len(), 1, "one evaluation at step 40");
    assert_eq!(eval[0]["samples"], 48);

    // A run killed after its step-20 checkpoint: resuming it gives the same final weights,
    // byte for byte.
    let part = d.join("part");
    run("40", &part, &["--save-every", "20", "--keep", "0"]);
    std::fs::remove_dir_all(part.join("step-00000040")).unwrap();
    run("40", &part, &["--resume", s(&part.join("step-00000020"))]);
    let weights = |root: &Path| {
        std::fs::read(root.join("step-00000040/shard-00000-of-00001.safetensors"))
            .expect("final weights")
    };
    assert!(
        weights(&part) == weights(&full),
        "a resumed run must end with the uninterrupted run's weights"
    );
    let e = fails(&[
        "train",
        "lcnet_x0_25",
        "--data",
        s(&data),
        "--steps",
        "2",
        "--optimizer",
        "adamax",
    ]);
    assert!(
        e.contains("unknown optimizer `adamax`; known: sgd, adamw, lamb, adagrad"),
        "{e}"
    );
}
