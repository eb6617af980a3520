//! `oar train ernie-3.0-tiny ... --pp 2` under `mpirun`: the tiny ERNIE of the MPI tests at
//! 2 layers (4 for the interleaved schedule: 2 chunks × 2 ranks, one layer per virtual
//! stage), hidden 32, dropout 0.1, AdamW with clipping, batch 8, 3 steps. Under 1F1B and
//! GPipe with 4 micro-batches, interleaved 1F1B with 4 micro-batches, and `--dp 2 --pp 2`
//! on 4 ranks, every rank's per-step loss is the single-process loss of the same global
//! batch to 1e-5 relative, and the final checkpoint (rank 0's, after the stages' state is
//! broadcast) holds the single-process weights and AdamW moments to 1e-5 (the key bias,
//! whose gradient is rounding noise, to 1e-3). Bad layouts fail
//! with messages that name what is wrong. Skips, saying so, without `mpirun` or the corpus
//! (and fails instead when `CI=true`).

mod cli_util;

use cli_util::{assert_rank_losses, mpirun_fails, mpirun_ok, ok, scratch_dir, step_losses};
use oar::runtime::io::checkpoint::load_latest_good;
use std::path::{Path, PathBuf};

fn setup() -> Option<PathBuf> {
    cli_util::mpi_corpus("the pipeline tests")
}

/// The tiny ERNIE with `layers` layers, batch 8, 3 steps, logs and checkpoints under `dir`.
fn args(data: &Path, dir: &Path, name: &str, layers: &str) -> Vec<String> {
    cli_util::tiny_ernie_args(data, dir, name, (layers, "3"), true)
}

/// Runs `flags` on `n` ranks and checks every rank's losses and the checkpoint against the
/// single-process run `single`.
fn check_against(
    data: &Path,
    dir: &Path,
    layers: &str,
    single: &str,
    name: &str,
    n: u64,
    flags: &[&str],
) {
    let want = step_losses(&dir.join(format!("{single}.jsonl")));
    assert_eq!(want.len(), 3, "{want:?}");
    let (want_w, _) = load_latest_good(&dir.join(single)).expect("single checkpoint");
    let mut a = args(data, dir, name, layers);
    a.extend(flags.iter().map(|s| s.to_string()));
    let stdout = mpirun_ok(n, &a);
    assert_eq!(stdout.matches("final loss").count(), 1, "rank 0 alone");
    assert!(stdout.contains("pipeline parallel: dp"), "{stdout}");
    assert_rank_losses(dir, name, n, &want);
    let (got_w, _) = load_latest_good(&dir.join(name)).expect("pp checkpoint");
    assert_eq!(
        got_w.weights.keys().collect::<Vec<_>>(),
        want_w.weights.keys().collect::<Vec<_>>()
    );
    let mut off = Vec::new();
    for (k, w) in &want_w.weights {
        let g = &got_w.weights[k];
        assert_eq!(w.shape, g.shape, "{name} {k}");
        // Attention is invariant to the key bias, whose gradient is pure float32 rounding
        // noise (different summation orders over micro-batches): 1e-3, as tests/train_tp.rs.
        let tol = if k.ends_with("k_proj.bias") {
            1e-3
        } else {
            1e-5
        };
        let worst = w
            .to_f64()
            .iter()
            .zip(g.to_f64())
            .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
            .fold(0.0, f64::max);
        if worst > tol {
            off.push(format!("{k}: {worst:e}"));
        }
    }
    assert!(
        off.is_empty(),
        "{name}: weights off by more than the tolerance: {off:?}"
    );
}

#[test]
fn ernie_pp2_schedules_and_dp2_pp2_equal_one_process() {
    let Some(data) = setup() else { return };
    let dir = scratch_dir("pp", "ernie");
    ok(&args(&data, &dir, "single2", "2"));
    ok(&args(&data, &dir, "single4", "4"));
    let m4 = ["--micro-batches", "4"];
    let runs: [(&str, &str, &str, u64, Vec<&str>); 4] = [
        (
            "2",
            "single2",
            "pp2_1f1b",
            2,
            [&["--pp", "2"][..], &m4].concat(),
        ),
        (
            "2",
            "single2",
            "pp2_gpipe",
            2,
            [&["--pp", "2", "--pp-schedule", "gpipe"][..], &m4].concat(),
        ),
        (
            "4",
            "single4",
            "pp2_interleaved",
            2,
            [
                &["--pp", "2", "--pp-schedule", "interleaved", "--chunks", "2"][..],
                &m4,
            ]
            .concat(),
        ),
        ("2", "single2", "dp2_pp2", 4, vec!["--dp", "2", "--pp", "2"]),
    ];
    for (layers, single, name, n, flags) in runs {
        check_against(&data, &dir, layers, single, name, n, &flags);
    }
}

#[test]
fn bad_pipeline_layouts_are_clear_errors() {
    let Some(data) = setup() else { return };
    let dir = scratch_dir("pp", "errors");
    let with = |name: &str, flags: &[&str]| {
        let mut a = args(&data, &dir, name, "2");
        a.extend(flags.iter().map(|s| s.to_string()));
        a
    };
    // Three stages of a two-layer model.
    let e = mpirun_fails(3, &with("pp3", &["--pp", "3", "--micro-batches", "2"]));
    assert!(
        e.contains("--pp 3") && e.contains("2 layers") && e.contains("3 stages"),
        "{e}"
    );
    // Two pipeline ranks asked, three started.
    let e = mpirun_fails(3, &with("pp2n3", &["--pp", "2"]));
    assert!(e.contains("--pp 2") && e.contains("started 3"), "{e}");
    let e = mpirun_fails(3, &with("dp2pp2n3", &["--dp", "2", "--pp", "2"]));
    assert!(
        e.contains("needs 4 ranks (dp 2 × pp 2)") && e.contains("started 3"),
        "{e}"
    );
    // 8 rows do not split into 3 micro-batches.
    let e = mpirun_fails(2, &with("m3", &["--pp", "2", "--micro-batches", "3"]));
    assert!(
        e.contains("--batch 8") && e.contains("3 micro-batches"),
        "{e}"
    );
    // The interleaved schedule needs micro-batches in groups of pp.
    let e = mpirun_fails(
        2,
        &with(
            "il",
            &[
                "--pp",
                "2",
                "--pp-schedule",
                "interleaved",
                "--chunks",
                "2",
                "--micro-batches",
                "1",
            ],
        ),
    );
    assert!(e.contains("2 layers") || e.contains("groups of pp"), "{e}");
    // Outside MPI: how to launch it.
    let e = cli_util::fails(&with("nompi", &["--pp", "2"]));
    assert!(e.contains("oar launch -n 2"), "{e}");
}
