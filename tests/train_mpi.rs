//! `oar train ... --dp N` under `mpirun -n N`: a tiny ERNIE (1 layer, hidden 32, dropout 0.1:
//! each rank's masks continue one process's stream at its slice of the batch) masked-LM run on the Python-docs corpus gives, at every step, the single-process loss to
//! 1e-5 relative on 2 and 4 ranks; every rank logs (rank r > 0 to `run.rank<r>.jsonl`) and
//! only rank 0 prints the summary. `oar launch` builds the mpirun line; `--dp` outside MPI
//! is a clear error. Skips, saying so, without `mpirun` or the corpus.

mod cli_util;

use cli_util::{fails, mpirun, mpirun_available, ok, step_losses, text_corpus};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn args(data: &Path, dir: &Path, log: &str) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut a: Vec<String> = cli_util::TINY_ERNIE_TRAIN
        .iter()
        .chain(&["--batch", "4", "--steps", "5"])
        .map(|x| x.to_string())
        .collect();
    a.extend([
        "--data".into(),
        p(data),
        "--vocab".into(),
        p(&dir.join("vocab.txt")),
    ]);
    a.extend(["--log".into(), p(&dir.join(log))]);
    a
}

#[test]
fn ernie_dp2_and_dp4_losses_equal_one_process() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("ernie");
    ok(&args(&data, &dir, "single.jsonl"));
    let want = step_losses(&dir.join("single.jsonl"));
    assert_eq!(want.len(), 5, "{want:?}");
    for n in [2, 4] {
        let log = format!("dp{n}.jsonl");
        let mut a = args(&data, &dir, &log);
        a.extend(["--dp".into(), n.to_string()]);
        let out = mpirun(n, &a);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "dp{n}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.matches("final loss").count(),
            1,
            "rank 0 alone: {stdout}"
        );
        for r in 0..n {
            let path = match r {
                0 => dir.join(&log),
                r => dir.join(format!("dp{n}.rank{r}.jsonl")),
            };
            let got = step_losses(&path);
            assert_eq!(got.len(), want.len(), "dp{n} rank {r}");
            for (k, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
                    "dp{n} rank {r} step {k}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn dp_outside_mpi_is_a_clear_error() {
    let Some(data) = text_corpus() else { return };
    let dir = scratch("nompi");
    let mut a = args(&data, &dir, "x.jsonl");
    a.extend(["--dp".into(), "2".into()]);
    let e = fails(&a);
    assert!(e.contains("oar launch -n 2"), "{e}");
}

#[test]
fn launch_builds_the_mpirun_line() {
    let out = ok(&[
        "launch",
        "-n",
        "64",
        "--dry-run",
        "--",
        "train",
        "m",
        "--dp",
        "64",
    ]);
    assert!(
        out.contains("mpirun")
            && out.contains("--oversubscribe -n 64")
            && out.ends_with("train m --dp 64\n"),
        "{out}"
    );
}

/// `mpirun -n 2 oar train ... --dp 2 --zero 2` (gradients and AdamW moments sharded): rank 0
/// reports the bytes per rank, and the losses are one process's to 1e-5 relative. The run
/// saves its last step; one process resuming from that checkpoint (full moments gathered
/// from the ranks' parts) takes the step one process would have taken after its own 5:
/// the loss of step 6 agrees to 1e-5, which fails if the saved moments are partial.
#[test]
fn ernie_dp2_zero2_equals_one_process_and_saves_full_state() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("zero");
    let steps6 = |log: &str| {
        let mut a = args(&data, &dir, log);
        let i = a.iter().position(|x| x == "--steps").expect("--steps") + 1;
        a[i] = "6".into();
        a
    };
    ok(&steps6("single.jsonl"));
    let want = step_losses(&dir.join("single.jsonl"));
    assert_eq!(want.len(), 6, "{want:?}");
    let mut a = args(&data, &dir, "zero.jsonl");
    let ck = dir.join("ck");
    // Mid-run save points too: gathering the ZeRO partitions there is collective, so every
    // rank must reach each one (rank 0 alone writes).
    a.extend(["--dp", "2", "--zero", "2", "--save-every", "2", "--save"].map(String::from));
    a.push(ck.display().to_string());
    let out = mpirun(2, &a);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "zero-2:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("zero-2 on 2 ranks, per rank: parameters"),
        "{stdout}"
    );
    for (r, log) in [(0, "zero.jsonl"), (1, "zero.rank1.jsonl")] {
        let got = step_losses(&dir.join(log));
        assert_eq!(got.len(), 5, "rank {r}");
        for (k, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
                "zero-2 rank {r} step {k}: {a} vs {b}"
            );
        }
    }
    let mut resume = steps6("resumed.jsonl");
    resume.extend(["--resume".into(), ck.display().to_string()]);
    ok(&resume);
    let got = step_losses(&dir.join("resumed.jsonl"));
    let (a, b) = (want[5], *got.last().expect("step 6"));
    assert!(
        (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
        "step 6 after resuming the zero-2 checkpoint: {a} vs {b} ({got:?})"
    );
}
