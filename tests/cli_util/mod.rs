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
