//! The packaged executable's `.npy` reader and argument parser (src/package/main.c), replayed
//! under AddressSanitizer + UBSan on every input the fuzzer found (fuzz/regressions/c_npy)
//! and the committed fuzz corpus: each ends in a clean error that names the cause, never a
//! sanitizer report. The harness is fuzz/c/npy_fuzz.c built with -DOAR_FUZZ_STANDALONE (no
//! libFuzzer needed), so this runs with the system C compiler; see docs/fuzzing.md.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the replay driver, with the sanitizers when the compiler has them.
fn replay_driver() -> PathBuf {
    let out = std::env::temp_dir().join(format!("oar-npy-replay-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let base = [
        "-DOAR_FUZZ_STANDALONE",
        "-g",
        "-O1",
        "-std=c11",
        "-D_POSIX_C_SOURCE=200809L",
        "-Wall",
        "-Werror",
        "-Wno-unused-function",
    ];
    let build = |sanitize: bool| {
        let mut cmd = Command::new(&cc);
        cmd.args(base);
        if sanitize {
            cmd.args([
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=undefined",
            ]);
        }
        cmd.arg("-I")
            .arg(root().join("codegen/src/package"))
            .arg(root().join("fuzz/c/npy_fuzz.c"))
            .args(["-pthread", "-lm", "-o"])
            .arg(&out)
            .output()
            .expect("cannot run the C compiler")
    };
    let res = build(true);
    if !res.status.success() {
        eprintln!(
            "note: {cc} has no ASan/UBSan runtime; replaying without sanitizers:\n{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let res = build(false);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    out
}

/// Runs the driver on files; returns stderr (asserting a clean exit: a sanitizer report
/// exits non-zero).
fn replay(driver: &Path, files: &[PathBuf]) -> String {
    let res = Command::new(driver)
        .args(files)
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .output()
        .expect("cannot run the replay driver");
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(res.status.success(), "sanitizer report or crash:\n{err}");
    assert!(
        String::from_utf8_lossy(&res.stdout).contains(&format!("replayed {}", files.len())),
        "{err}"
    );
    err
}

fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn fuzz_regressions_and_corpus_end_in_clear_errors() {
    let driver = replay_driver();
    // Each crash or unclear rejection found, and the message it must now give.
    let expected = [
        ("oom-npy-v2-header-length", "unsupported .npy version 100"),
        (
            "npy-v2-4gib-header-length",
            ".npy header of 4026531840 bytes is over the 1048576-byte limit",
        ),
        ("npy-header-nul-byte", "the .npy header holds a NUL byte"),
        (
            "npy-descr-only-elsewhere",
            "dtype '<f8' does not match input `x`, compiled for f32",
        ),
        ("npy-trailing-data", "data continues after the array"),
        (
            "npy-shape-overflow",
            "shape does not match input `x` [2, 3]",
        ),
        (
            "npy-shape-unclosed",
            "shape does not match input `x` [2, 3]",
        ),
        ("npy-truncated-data", "truncated data: 20 of 24 bytes"),
        ("args-input-without-value", "--input needs a value"),
        (
            "args-bench-huge",
            "--bench wants a run count from 1 to 1000000",
        ),
        ("args-input-twice", "input `x` is given twice"),
    ];
    let dir = root().join("fuzz/regressions/c_npy");
    for (file, message) in expected {
        let err = replay(&driver, &[dir.join(file)]);
        assert!(
            err.contains(message),
            "{file}: expected `{message}`, got:\n{err}"
        );
    }
    assert_eq!(
        files_in("fuzz/regressions/c_npy").len(),
        expected.len(),
        "every regression input has its expected message here"
    );
    // The corpus: valid files load silently, the rest fail with a message each.
    replay(&driver, &files_in("fuzz/corpus/c_npy"));
    let _ = std::fs::remove_file(driver);
}
