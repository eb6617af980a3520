//! `oar train ernie-3.0-tiny ... --tp 2` under `mpirun -n 2`, and `--dp 2 --tp 2` under
//! `mpirun -n 4`: the tiny ERNIE of the MPI tests (1 layer, hidden 32, 2 heads, dropout 0.1,
//! AdamW, clipping) with Megatron splits gives, at every step and on every rank, the
//! single-process loss to 1e-5 relative, and its final checkpoint (split weights and moments
//! gathered back) holds one process's AdamW moments to 1e-5 and weights to 1e-4 (see below). Bad layouts fail with messages that
//! name the tensor and dim, or both rank counts. Skips, saying so, without `mpirun` or the
//! corpus.

mod cli_util;

use cli_util::{
    assert_rank_losses, mpirun_available, mpirun_fails, mpirun_ok, ok, step_losses, text_corpus,
};
use oar::runtime::io::checkpoint::load_latest_good;
use std::path::{Path, PathBuf};

const STEPS: &str = "4";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-tp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn args(data: &Path, dir: &Path, name: &str) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut a: Vec<String> = cli_util::TINY_ERNIE_TRAIN
        .iter()
        .chain(&["--batch", "4", "--steps", STEPS])
        .map(|x| x.to_string())
        .collect();
    a.extend([
        "--data".into(),
        p(data),
        "--vocab".into(),
        p(&dir.join("vocab.txt")),
        "--log".into(),
        p(&dir.join(format!("{name}.jsonl"))),
        "--save".into(),
        p(&dir.join(name)),
    ]);
    a
}

#[test]
fn ernie_tp2_and_dp2_tp2_equal_one_process() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("ernie");
    ok(&args(&data, &dir, "single"));
    let want = step_losses(&dir.join("single.jsonl"));
    assert_eq!(want.len(), 4, "{want:?}");
    let (want_w, _) = load_latest_good(&dir.join("single")).expect("single checkpoint");
    for (name, n, flags) in [
        ("tp2", 2, vec!["--tp", "2"]),
        ("dp2tp2", 4, vec!["--dp", "2", "--tp", "2"]),
    ] {
        let mut a = args(&data, &dir, name);
        a.extend(flags.iter().map(|s| s.to_string()));
        let stdout = mpirun_ok(n, &a);
        assert_eq!(stdout.matches("final loss").count(), 1, "rank 0 alone");
        assert!(stdout.contains("tensor parallel: dp"), "{stdout}");
        assert_rank_losses(&dir, name, n, &want);
        let (got_w, _) = load_latest_good(&dir.join(name)).expect("tp checkpoint");
        assert_eq!(
            got_w.weights.keys().collect::<Vec<_>>(),
            want_w.weights.keys().collect::<Vec<_>>()
        );
        let mut split_seen = false;
        for (k, w) in &want_w.weights {
            let g = &got_w.weights[k];
            assert_eq!(w.shape, g.shape, "{name} {k}");
            split_seen |= k.contains("q_proj.weight.moment");
            // Moments to 1e-5. A weight's AdamW step divides its first moment by the root
            // of its second, which turns float32 rounding of near-cancelling gradients
            // (different summation orders across ranks) into steps of ~1e-5 on a few
            // elements over 4 steps: weights to 1e-4 (as the ZeRO tests). Attention is
            // invariant to the key bias, whose gradient is pure rounding noise: 1e-3.
            let tol = if k.ends_with("k_proj.bias") {
                1e-3
            } else if k.contains(".moment") {
                1e-5
            } else {
                1e-4
            };
            for (x, y) in w.to_f64().iter().zip(g.to_f64()) {
                assert!(
                    (x - y).abs() <= tol * x.abs().max(1.0),
                    "{name} {k}: {x} vs {y}"
                );
            }
        }
        assert!(
            split_seen,
            "the checkpoint holds the split weights' moments"
        );
    }
}

#[test]
fn bad_tensor_parallel_layouts_are_clear_errors() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("errors");
    // Hidden 32 does not split into 3 columns.
    let mut a = args(&data, &dir, "tp3");
    a.extend(["--tp".into(), "3".into()]);
    let e = mpirun_fails(3, &a);
    assert!(
        e.contains("self_attn.q_proj.weight") && e.contains("dim 1") && e.contains("--tp 3"),
        "{e}"
    );
    // Two tensor ranks asked, three started.
    let mut a = args(&data, &dir, "tp2n3");
    a.extend(["--tp".into(), "2".into()]);
    let e = mpirun_fails(3, &a);
    assert!(
        e.contains("needs 2 ranks") && e.contains("started 3"),
        "{e}"
    );
    // Outside MPI: how to launch it.
    let e = cli_util::fails(&a);
    assert!(e.contains("oar launch -n 2"), "{e}");
}
