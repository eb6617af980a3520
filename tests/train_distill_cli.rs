//! `oar train STUDENT --teacher TEACHER` end to end on the digits (skipped when
//! `target/data/digits` is missing; `scripts/data_setup.py` makes it): an online run trains
//! both PP-LCNets and reports both accuracies and each model's own weights; a frozen run
//! from those teacher weights leaves them bit for bit unchanged; bad settings are errors.
//! Few steps at 8×8 so the interpreter is quick; nothing here measures accuracy. On the
//! Python docs (`scripts/text_setup.py`; skipped when missing), a tiny ERNIE student and
//! teacher train together as masked LMs, with their losses logged apart.

mod cli_util;

use cli_util::{digits, oar, scratch_dir, text_corpus};
use oar::runtime::io::weights::load_safetensors;
use std::path::{Path, PathBuf};

fn scratch(tag: &str) -> PathBuf {
    scratch_dir("distill", tag)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The accuracy (percent) on the line `"{who} eval accuracy X% ..."`.
fn accuracy(out: &str, who: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{who} eval accuracy")))
        .unwrap_or_else(|| panic!("no {who} accuracy in:\n{out}"));
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

fn common<'a>(data: &'a Path, save: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "lcnet_x0_25",
        "--teacher",
        "lcnet_x0_5",
        "--data",
        s(data),
        "--steps",
        "3",
        "--batch",
        "8",
        "--image-size",
        "8",
        "--holdout",
        "0.05",
        "--lr",
        "0.01",
        "--save",
        s(save),
    ]
}

#[test]
fn online_then_frozen_distillation_of_lcnet() {
    let Some(data) = digits() else { return };
    let d = scratch("run");
    let online = d.join("online");
    let out = oar(&common(&data, &online));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("trained 3 steps"), "{stdout}");
    for who in ["student", "teacher"] {
        let acc = accuracy(&stdout, who);
        assert!((0.0..=100.0).contains(&acc), "{stdout}");
    }
    // Each model's weights under its own names: no prefixes, no optimizer state.
    let sw = load_safetensors(&online.join("student.safetensors")).unwrap();
    let tw = load_safetensors(&online.join("teacher.safetensors")).unwrap();
    let joint =
        load_safetensors(&online.join("step-00000003/shard-00000-of-00001.safetensors")).unwrap();
    for (prefix, own) in [("student.", &sw), ("teacher.", &tw)] {
        for (k, v) in own {
            assert_eq!(joint.get(&format!("{prefix}{k}")), Some(v), "{prefix}{k}");
        }
    }
    for w in [&sw, &tw] {
        assert!(
            w.keys()
                .all(|k| !k.starts_with("student.") && !k.starts_with("teacher.")),
            "{:?}",
            w.keys()
        );
        assert!(w.keys().all(|k| !k.contains("moment")), "{:?}", w.keys());
    }
    assert!(tw.len() >= sw.len());

    // Frozen, from the online run's teacher: the teacher comes back unchanged, the student
    // does not.
    let teacher = online.join("teacher.safetensors");
    let frozen = d.join("frozen");
    let mut args = common(&data, &frozen);
    args.extend(["--distill", "frozen", "--teacher-weights", s(&teacher)]);
    let out = oar(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = load_safetensors(&frozen.join("teacher.safetensors")).unwrap();
    // Running statistics included: a frozen teacher's batch norms are in inference form.
    assert_eq!(after, tw);
    let student = load_safetensors(&frozen.join("student.safetensors")).unwrap();
    assert_ne!(student, sw, "a fresh student trained for 3 steps");
}

#[test]
fn bad_distillation_settings_are_errors() {
    let Some(data) = digits() else { return };
    let d = scratch("bad");
    let save = d.join("ck");
    let mut args = common(&data, &save);
    args.extend(["--distill", "frozen"]);
    let out = oar(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("--teacher-weights"), "{err}");

    let mut args = common(&data, &save);
    args.extend(["--alpha", "2"]);
    let out = oar(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("alpha = 2 must be in [0, 1]"), "{err}");

    // ERNIE-only settings on image models are refused, not ignored.
    let mut args = common(&data, &save);
    args.extend(["--hidden-mse", "1"]);
    let out = oar(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("not a zoo ERNIE"), "{err}");
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Online distillation of a masked LM: ERNIE 3.0 tiny (1 layer, hidden 32) from ERNIE 3.0
/// mini (2 layers, hidden 48, so the hidden-state term needs its projection) on six documents
/// of the Python docs, vocabulary 300, seq 32, batch 4, dropout on. Both models train: the
/// log carries the teacher's and the student's masked-LM loss and the distillation term,
/// which add up to the joint loss; both hard losses fall over 24 steps (means of the first and
/// last 6 steps; at lr 3e-3 the unigram distribution alone takes them below ln 300); the
/// teacher's weights move; the summary evaluates both models.
#[test]
fn online_distillation_of_ernie_trains_both_models() {
    let Some(data) = text_corpus() else { return };
    let d = scratch("ernie");
    let (save, log) = (d.join("ck"), d.join("log.jsonl"));
    let vocab = d.join("vocab.txt");
    let (alpha, steps) = (0.5, 24usize);
    let args = [
        "train",
        "ernie-3.0-tiny",
        "--teacher",
        "ernie-3.0-mini-zh",
        "--data",
        s(&data),
        "--vocab",
        s(&vocab),
        "--vocab-size",
        "300",
        "--max-docs",
        "6",
        "--seq",
        "32",
        "--batch",
        "4",
        "--layers",
        "1",
        "--hidden",
        "32",
        "--heads",
        "2",
        "--ffn",
        "64",
        "--teacher-layers",
        "2",
        "--teacher-hidden",
        "48",
        "--teacher-heads",
        "2",
        "--teacher-ffn",
        "96",
        "--hidden-mse",
        "1.0",
        "--alpha",
        "0.5",
        "--steps",
        "24",
        "--lr",
        "3e-3",
        "--eval-every",
        "12",
        "--eval-sequences",
        "8",
        "--save",
        s(&save),
        "--save-every",
        "1",
        "--keep",
        "0",
        "--log",
        s(&log),
    ];
    let out = oar(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("trained {steps} steps")),
        "{stdout}"
    );
    assert!(stdout.contains("teacher eval accuracy"), "{stdout}");
    assert!(stdout.contains("MLM loss"), "{stdout}");

    let lines = cli_util::log_lines(&log, "step");
    assert_eq!(lines.len(), steps);
    let field = |l: &serde_json::Value, k: &str| -> f64 {
        l[k].as_f64()
            .unwrap_or_else(|| panic!("no finite `{k}` in {l}"))
    };
    let (mut teacher, mut student) = (Vec::new(), Vec::new());
    for l in &lines {
        let (t, st, dt) = (
            field(l, "teacher_loss"),
            field(l, "student_loss"),
            field(l, "distill_loss"),
        );
        assert!(
            t.is_finite() && st.is_finite() && dt.is_finite() && dt >= 0.0,
            "{l}"
        );
        // L = L_teacher + (1 − α)·L_student + distillation term, in f32.
        let joint = t + (1.0 - alpha) * st + dt;
        let loss = field(l, "loss");
        assert!(
            (loss - joint).abs() <= 1e-5 * loss.abs(),
            "{loss} vs {joint}: {l}"
        );
        teacher.push(t);
        student.push(st);
    }
    for (who, v) in [("teacher", &teacher), ("student", &student)] {
        let (first, last) = (mean(&v[..6]), mean(&v[v.len() - 6..]));
        assert!(
            last < first,
            "{who} loss did not fall: {first} → {last} ({v:?})"
        );
    }

    // The teacher trains: its weights after step 24 differ from those after step 1, and the
    // projection of the hidden-state term is part of the state.
    let w1 =
        load_safetensors(&save.join("step-00000001/shard-00000-of-00001.safetensors")).unwrap();
    let w24 =
        load_safetensors(&save.join("step-00000024/shard-00000-of-00001.safetensors")).unwrap();
    let moved: Vec<&String> = w1
        .keys()
        .filter(|k| k.starts_with("teacher.") && !k.contains("moment"))
        .filter(|k| w1[*k] != w24[*k])
        .collect();
    assert!(moved.len() > 10, "teacher tensors that moved: {moved:?}");
    assert!(w24.contains_key("distill.proj.0"), "{:?}", w24.keys());
    let tw = load_safetensors(&save.join("teacher.safetensors")).unwrap();
    assert!(tw.keys().all(|k| !k.starts_with("teacher.")));
}
