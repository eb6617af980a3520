//! Planning time of `oar plan` at the sizes issue 23 sets (release build): ERNIE 3.0 Titan
//! on 1,024 A100s (128 nodes; target < 2 s) and the 1T GPT of docs/planner-validation.md on
//! 4,096 A100s (512 nodes; target < 10 s), each with the weak-scaling sweep the report
//! prints. It times the `oar` executable end to end, as a user runs it (process start and
//! JSON output included: a few milliseconds of the total).
//!
//! `cargo bench --bench plan`

use criterion::{criterion_group, criterion_main, Criterion};
use std::process::Command;
use std::time::Duration;

fn plan(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .arg("plan")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run oar plan");
    assert!(
        out.status.success(),
        "oar plan {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn planning(c: &mut Criterion) {
    let one_t = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan/gpt-1t.toml");
    let mut g = c.benchmark_group("oar plan");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("ernie-3.0-titan, 1024 A100", |b| {
        b.iter(|| plan(&["ernie-3.0-titan", "--cluster", "a100", "--nodes", "128"]))
    });
    g.bench_function("gpt-1t, 4096 A100", |b| {
        b.iter(|| plan(&[one_t, "--cluster", "a100", "--nodes", "512"]))
    });
    g.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
