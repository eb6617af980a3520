//! `oar train STUDENT --teacher TEACHER` end to end on the digits (skipped when
//! `target/data/digits` is missing; `scripts/data_setup.py` makes it): an online run trains
//! both PP-LCNets and reports both accuracies and each model's own weights; a frozen run
//! from those teacher weights leaves them bit for bit unchanged; bad settings are errors.
//! Few steps at 8×8 so the interpreter is quick; nothing here measures accuracy.

mod cli_util;

use cli_util::oar;
use oar::runtime::io::weights::load_safetensors;
use std::path::{Path, PathBuf};

fn digits() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/digits");
    if d.join("images.npy").exists() {
        Some(d)
    } else {
        eprintln!("skipped: no {} (run scripts/data_setup.py)", d.display());
        None
    }
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-distill-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
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
    let joint = load_safetensors(&online.join("step-00000003/weights.safetensors")).unwrap();
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
}
