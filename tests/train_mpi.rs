//! `oar train ... --dp N` under `mpirun -n N`: a tiny ERNIE (1 layer, hidden 32, dropout 0.1:
//! each rank's masks continue one process's stream at its slice of the batch) masked-LM run on the Python-docs corpus gives, at every step, the single-process loss to
//! 1e-5 relative on 2 and 4 ranks; every rank logs (rank r > 0 to `run.rank<r>.jsonl`) and
//! only rank 0 prints the summary. `oar launch` builds the mpirun line; `--dp` outside MPI
//! is a clear error. Skips, saying so, without `mpirun` or the corpus.

mod cli_util;

use cli_util::{fails, log_lines, ok, text_corpus};
use std::path::{Path, PathBuf};
use std::process::Command;

fn mpirun_available() -> bool {
    let ok = Command::new("mpirun").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: mpirun is not installed (scripts/setup.sh installs OpenMPI)");
    }
    ok
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn args(data: &Path, dir: &Path, log: &str) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut a: Vec<String> = [
        "train",
        "ernie-3.0-tiny",
        "--vocab-size",
        "300",
        "--max-docs",
        "6",
        "--seq",
        "16",
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
        "--dropout",
        "0.1",
        "--lr",
        "0.01",
        "--clip-norm",
        "1.0",
        "--seed",
        "3",
        "--steps",
        "5",
        "--backend",
        "interp",
    ]
    .iter()
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

fn losses(path: &Path) -> Vec<f64> {
    log_lines(path, "step")
        .iter()
        .map(|r| r["loss"].as_f64().expect("a loss"))
        .collect()
}

#[test]
fn ernie_dp2_and_dp4_losses_equal_one_process() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("ernie");
    ok(&args(&data, &dir, "single.jsonl"));
    let want = losses(&dir.join("single.jsonl"));
    assert_eq!(want.len(), 5, "{want:?}");
    for n in [2, 4] {
        let log = format!("dp{n}.jsonl");
        let mut a = args(&data, &dir, &log);
        a.extend(["--dp".into(), n.to_string()]);
        let out = Command::new("mpirun")
            .args([
                "--allow-run-as-root",
                "--oversubscribe",
                "-n",
                &n.to_string(),
            ])
            .arg(env!("CARGO_BIN_EXE_oar"))
            .args(&a)
            .output()
            .expect("run mpirun");
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
            let got = losses(&path);
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
