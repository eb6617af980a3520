//! Helpers shared by the `oar train` end-to-end tests: run the built binary, expect success
//! or a clean failure, read the JSON-lines log.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
