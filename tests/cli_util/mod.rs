//! Helpers shared by the `oar train` end-to-end tests: run the built binary, expect success
//! or a clean failure, read the JSON-lines log.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `p` (relative to the repository root) as an absolute path string.
pub fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

pub fn oar<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(args)
        .output()
        .expect("run oar")
}

/// Runs `oar ARGS`, which must succeed; its stdout.
pub fn ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = oar(args);
    assert!(
        out.status.success(),
        "oar {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `oar ARGS`, which must fail with a message, not a panic; its stderr.
pub fn fails<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = oar(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "oar {args:?} should fail");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The records of one `kind` in a JSON-lines log.
pub fn log_lines(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read log")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// The Python-docs corpus `scripts/text_setup.py` writes, or `None` (saying the test skips).
pub fn text_corpus() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/pydoc");
    if d.join("train").is_dir() {
        return Some(d);
    }
    eprintln!(
        "skipped: no text corpus at {} (python3 scripts/text_setup.py; needs python3.11-doc)",
        d.display()
    );
    None
}

/// `train ernie-3.0-tiny` at the size the multi-process tests use (1 layer, hidden 32,
/// dropout 0.1, interpreter); callers add the batch, steps, data and logs.
pub const TINY_ERNIE_TRAIN: [&str; 26] = [
    "train",
    "ernie-3.0-tiny",
    "--vocab-size",
    "300",
    "--max-docs",
    "6",
    "--seq",
    "16",
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
    "--backend",
    "interp",
];

/// Whether `mpirun` runs here (the multi-process tests skip, saying so, where it does not).
pub fn mpirun_available() -> bool {
    let ok = Command::new("mpirun").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: mpirun is not installed (scripts/setup.sh installs OpenMPI)");
    }
    ok
}

/// `mpirun -n N oar ARGS` (as root and oversubscribed, as CI runs it).
pub fn mpirun<S: AsRef<OsStr>>(n: u64, args: &[S]) -> Output {
    Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-n",
            &n.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_oar"))
        .args(args)
        .output()
        .expect("run mpirun")
}

/// The digits `scripts/data_setup.py` writes, or `None` (saying the test skips).
pub fn digits() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/digits");
    if d.join("images.npy").exists() {
        Some(d)
    } else {
        eprintln!("skipped: no {} (run scripts/data_setup.py)", d.display());
        None
    }
}

/// A fresh scratch directory `oar-{what}-{tag}-{pid}` in the temp dir.
pub fn scratch_dir(what: &str, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-{what}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// The `loss` of every `step` record in a JSON-lines log.
pub fn step_losses(path: &Path) -> Vec<f64> {
    log_lines(path, "step")
        .iter()
        .map(|r| r["loss"].as_f64().expect("a loss"))
        .collect()
}

/// `mpirun -n N oar ARGS`, which must succeed; its stdout.
pub fn mpirun_ok(n: u64, a: &[String]) -> String {
    let out = mpirun(n, a);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{a:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `mpirun -n N oar ARGS`, which must fail with a message, not a panic; its stderr.
pub fn mpirun_fails(n: u64, a: &[String]) -> String {
    let out = mpirun(n, a);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{a:?} should fail");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Every rank's per-step losses of run `name` (logs `dir/{name}.jsonl` for rank 0,
/// `dir/{name}.rank{r}.jsonl` for the others) equal `want` to 1e-5 relative.
pub fn assert_rank_losses(dir: &Path, name: &str, ranks: u64, want: &[f64]) {
    for r in 0..ranks {
        let log = match r {
            0 => dir.join(format!("{name}.jsonl")),
            r => dir.join(format!("{name}.rank{r}.jsonl")),
        };
        let got = step_losses(&log);
        assert_eq!(got.len(), want.len(), "{name} rank {r}");
        for (k, (a, b)) in want.iter().zip(&got).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
                "{name} rank {r} step {k}: {a} vs {b}"
            );
        }
    }
}

/// The text corpus, when it and `mpirun` are here; a skip is a failure under `CI=true`
/// (`what` names the tests in the message).
pub fn mpi_corpus(what: &str) -> Option<PathBuf> {
    let found = match (text_corpus(), mpirun_available()) {
        (Some(d), true) => Some(d),
        _ => None,
    };
    if found.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {what} need mpirun and the text corpus");
    }
    found
}

/// `TINY_ERNIE_TRAIN` with `layers` layers (its `--layers 1` replaced), batch 8, `steps`
/// steps, the vocabulary at `dir/vocab.txt`, the log at `dir/name.jsonl` and, with `save`,
/// checkpoints under `dir/name`.
pub fn tiny_ernie_args(
    data: &Path,
    dir: &Path,
    name: &str,
    (layers, steps): (&str, &str),
    save: bool,
) -> Vec<String> {
    let p = |x: &Path| x.display().to_string();
    let mut a: Vec<String> = TINY_ERNIE_TRAIN.iter().map(|x| x.to_string()).collect();
    let at = a.iter().position(|x| x == "--layers").expect("--layers") + 1;
    a[at] = layers.into();
    a.extend(["--batch", "8", "--steps", steps].map(String::from));
    a.extend([
        "--data".into(),
        p(data),
        "--vocab".into(),
        p(&dir.join("vocab.txt")),
        "--log".into(),
        p(&dir.join(format!("{name}.jsonl"))),
    ]);
    if save {
        a.extend(["--save".into(), p(&dir.join(name))]);
    }
    a
}
