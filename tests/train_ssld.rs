//! `oar train STUDENT --distill-from TEACHER --unlabeled DIR` (SSLD) end to end on the
//! digits (skipped when `target/data/digits` is missing; `scripts/data_setup.py` makes it):
//! a labelled subset and an unlabelled one (images only) are written from the digits, a
//! teacher is trained on the labelled subset, and the SSLD student learns from its soft
//! labels on both. Checked: the unlabelled images join the training split, the teacher stays
//! frozen, the joint loss is the Jensen–Shannon term alone (alpha 1, no ground-truth term) and
//! stays within its bound, and bad settings are errors. Few steps at 8×8; the accuracy
//! comparison over seeds is `scripts/ssld_digits.sh` (docs/training.md).

mod cli_util;

use cli_util::{digits, fails, log_lines, ok, scratch_dir};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::load_safetensors;
use oar::runtime::HostTensor;
use std::path::{Path, PathBuf};

fn scratch(tag: &str) -> PathBuf {
    scratch_dir("ssld", tag)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Writes `dir/labeled` (the first `n_labeled` digits with labels) and `dir/unlabeled` (the
/// next `n_unlabeled`, images only); returns both directories.
fn split_digits(digits: &Path, dir: &Path, n_labeled: usize, n_unlabeled: usize) -> [PathBuf; 2] {
    let x = read_npy(&digits.join("images.npy")).expect("images");
    let y = read_npy(&digits.join("labels.npy")).expect("labels");
    let per: usize = x.shape[1..].iter().product();
    let (px, ys) = (x.as_f32().expect("f32"), y.as_i64().expect("i64"));
    let images = |from: usize, n: usize| {
        let mut shape = x.shape.clone();
        shape[0] = n;
        HostTensor::f32(shape, px[from * per..(from + n) * per].to_vec())
    };
    let (lab, unl) = (dir.join("labeled"), dir.join("unlabeled"));
    for d in [&lab, &unl] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    write_npy(&lab.join("images.npy"), &images(0, n_labeled)).expect("write");
    let labels = HostTensor::i64(vec![n_labeled], ys[..n_labeled].to_vec());
    write_npy(&lab.join("labels.npy"), &labels).expect("write");
    std::fs::write(lab.join("meta.json"), r#"{"classes": 10}"#).expect("write");
    write_npy(&unl.join("images.npy"), &images(n_labeled, n_unlabeled)).expect("write");
    [lab, unl]
}

fn base<'a>(model: &'a str, data: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        model,
        "--data",
        s(data),
        "--batch",
        "16",
        "--image-size",
        "8",
        "--holdout",
        "0.25",
        "--lr",
        "0.01",
        "--seed",
        "2",
    ]
}

#[test]
fn ssld_learns_from_a_frozen_teacher_on_unlabelled_images() {
    let Some(digits) = digits() else { return };
    let d = scratch("run");
    let [lab, unl] = split_digits(&digits, &d, 160, 96);
    let teacher_dir = d.join("teacher");
    let mut args = base("lcnet_x0_5", &lab);
    args.extend(["--steps", "3", "--save", s(&teacher_dir)]);
    ok(&args);
    let teacher = teacher_dir.join("step-00000003/shard-00000-of-00001.safetensors");
    let tw = load_safetensors(&teacher).expect("teacher weights");

    let save = d.join("ssld");
    let log = d.join("ssld.jsonl");
    let mut args = base("lcnet_x0_25", &lab);
    args.extend([
        "--steps",
        "4",
        "--distill-from",
        "lcnet_x0_5",
        "--teacher-weights",
        s(&teacher),
        "--unlabeled",
        s(&unl),
        "--save",
        s(&save),
        "--log",
        s(&log),
    ]);
    let stdout = ok(&args);
    // 160 labelled, a quarter held out: 120 labelled + 96 unlabelled images to train on.
    assert!(
        stdout.contains("216 training samples, 96 of them unlabelled"),
        "{stdout}"
    );
    let steps = log_lines(&log, "step");
    assert_eq!(steps.len(), 4);
    for st in &steps {
        let f = |k: &str| st[k].as_f64().unwrap_or_else(|| panic!("no {k} in {st}"));
        // alpha 1, frozen teacher: L is the soft term alone; T = 1 and the Jensen–Shannon
        // divergence is at most ln 2 per row.
        assert!((f("loss") - f("distill_loss")).abs() <= 1e-6, "{st}");
        assert!(
            f("distill_loss") > 0.0 && f("distill_loss") <= std::f64::consts::LN_2,
            "{st}"
        );
        // The hard losses are reported over the labelled rows only: finite cross-entropies.
        for k in ["student_loss", "teacher_loss"] {
            assert!(f(k).is_finite() && f(k) > 0.0, "{st}");
        }
    }
    // The teacher comes back bit for bit (its checkpoint also holds optimizer state).
    let after = load_safetensors(&save.join("teacher.safetensors")).expect("teacher");
    assert!(after.len() > 20, "{:?}", after.keys());
    for (k, v) in &after {
        assert!(tw.get(k) == Some(v), "teacher tensor {k} changed");
    }
    assert!(save.join("student.safetensors").is_file());
}

#[test]
fn bad_ssld_settings_are_errors() {
    let Some(digits) = digits() else { return };
    let d = scratch("bad");
    let [lab, unl] = split_digits(&digits, &d, 64, 32);
    let steps = ["--steps", "1"];

    // SSLD's teacher is frozen: it needs trained weights.
    let mut args = base("lcnet_x0_25", &lab);
    args.extend(steps);
    args.extend(["--distill-from", "lcnet_x0_5"]);
    let err = fails(&args);
    assert!(
        err.contains("--distill-from keeps the teacher's weights fixed"),
        "{err}"
    );

    // Distillation-only flags without a teacher are refused, not ignored.
    let mut args = base("lcnet_x0_25", &lab);
    args.extend(steps);
    args.extend(["--unlabeled", s(&unl)]);
    let err = fails(&args);
    assert!(err.contains("belong to distillation"), "{err}");

    // --teacher and --distill-from are two ways to name the teacher: one at a time.
    let mut args = base("lcnet_x0_25", &lab);
    args.extend(steps);
    args.extend(["--teacher", "lcnet_x0_5", "--distill-from", "lcnet_x0_5"]);
    let err = fails(&args);
    assert!(err.contains("cannot be used with"), "{err}");

    // Unlabelled images of another shape name the file and both shapes.
    let odd = d.join("odd");
    std::fs::create_dir_all(&odd).expect("mkdir");
    let x = HostTensor::f32(vec![2, 1, 4, 4], (0..32).map(|v| v as f32 / 32.0).collect());
    write_npy(&odd.join("images.npy"), &x).expect("write");
    let teacher_dir = d.join("teacher");
    let mut args = base("lcnet_x0_5", &lab);
    args.extend(["--steps", "1", "--save", s(&teacher_dir)]);
    ok(&args);
    let teacher = teacher_dir.join("step-00000001/shard-00000-of-00001.safetensors");
    let mut args = base("lcnet_x0_25", &lab);
    args.extend(steps);
    args.extend([
        "--distill-from",
        "lcnet_x0_5",
        "--teacher-weights",
        s(&teacher),
        "--unlabeled",
        s(&odd),
    ]);
    let err = fails(&args);
    assert!(
        err.contains("odd/images.npy") && err.contains("[1, 8, 8]"),
        "{err}"
    );
}
