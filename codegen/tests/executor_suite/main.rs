//! One executor contract, one suite: every case (`cases.rs`: the examples, the zoo's small
//! configs, optimized graphs, random graphs) runs on every backend (`runners.rs`: the Rust
//! executor on JIT kernels, the packaged executable, the packaged shared library through
//! its C API) and each run is compared to the reference interpreter (`oar_runtime::run`,
//! the oracle) on random non-zero inputs: max |a − b| / max |b| ≤ 1e-4, a NaN on one side
//! only an infinite error. A backend skips only the cases its `known_gaps` lists, each
//! with its reason. `contract.rs` pins the executor rules no comparison can see.

#[path = "../common/mod.rs"]
mod common;

mod cases;
mod contract;
mod runners;

use cases::{cases, Case};
use common::{random_inputs, rel_err, TOL};
use oar_runtime::{init::init_weights, run, HostTensor, Weights};
use runners::{compile, Backend, Executable, RustExecutor, SharedLibrary};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// A fresh folder for one backend's build of one case.
fn scratch(backend: &str, case: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("executor-suite-{}", std::process::id()))
        .join(backend)
        .join(case.replace(['/', '+'], "_"));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Every run's outputs against the interpreter's; `Err` says how they differ.
fn compare(runs: &[Vec<HostTensor>], want: &[HostTensor]) -> Result<f64, String> {
    let mut worst = 0f64;
    for (r, got) in runs.iter().enumerate() {
        if got.len() != want.len() {
            return Err(format!(
                "run {r}: {} outputs, want {}",
                got.len(),
                want.len()
            ));
        }
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            if a.shape != b.shape || a.dtype() != b.dtype() {
                return Err(format!(
                    "run {r} output {k}: {}, want {}",
                    a.describe(),
                    b.describe()
                ));
            }
            let e = rel_err(a, b);
            if e > TOL || e.is_nan() {
                return Err(format!("run {r} output {k}: rel err {e:.2e} > {TOL:.0e}"));
            }
            worst = worst.max(e);
        }
    }
    Ok(worst)
}

/// A case's weights (seed 3), inputs (seed 5) and the interpreter's outputs on them.
struct Reference {
    weights: Weights,
    inputs: Vec<HostTensor>,
    want: Vec<HostTensor>,
}

/// The reference of `case`, computed once for all backends (their tests run in parallel:
/// the first to ask computes it, the others wait for it).
fn reference(case: &Case) -> Arc<Result<Reference, String>> {
    type Slot = Arc<OnceLock<Arc<Result<Reference, String>>>>;
    static CACHE: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(case.name.clone())
        .or_default()
        .clone();
    slot.get_or_init(|| {
        Arc::new((|| {
            let weights = init_weights(&case.graph, 3).map_err(|e| e.to_string())?;
            let inputs = random_inputs(&case.graph, &case.bindings, 5);
            let want =
                run(&case.graph, &inputs, &weights).map_err(|e| format!("interpreter: {e}"))?;
            Ok(Reference {
                weights,
                inputs,
                want,
            })
        })())
    })
    .clone()
}

fn check_case(backend: &dyn Backend, case: &Case) -> Result<f64, String> {
    let reference = reference(case);
    let r = reference.as_ref().as_ref().map_err(Clone::clone)?;
    let compiled = compile(case)?;
    let dir = scratch(backend.name(), &case.name);
    let runs = backend.run(case, compiled, &r.weights, &r.inputs, &dir)?;
    let worst = compare(&runs, &r.want)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(worst)
}

/// Runs every case not in the backend's known gaps; fails listing every divergence.
fn check_backend(backend: &dyn Backend) {
    let all = cases();
    let gaps = backend.known_gaps();
    for (name, _) in gaps {
        assert!(
            all.iter().any(|c| c.name == *name),
            "{}: known gap `{name}` is no case",
            backend.name()
        );
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    for case in &all {
        if let Some((_, why)) = gaps.iter().find(|(n, _)| *n == case.name) {
            eprintln!("{} {}: skipped ({why})", backend.name(), case.name);
            continue;
        }
        let t = Instant::now();
        match check_case(backend, case) {
            Ok(e) => eprintln!(
                "{} {}: rel err {e:.1e} ({:.1}s)",
                backend.name(),
                case.name,
                t.elapsed().as_secs_f64()
            ),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    eprintln!(
        "{}: {} cases in {:.1}s",
        backend.name(),
        all.len() - gaps.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} diverges from the interpreter on {} case(s):\n{}",
        backend.name(),
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn rust_executor_matches_the_interpreter() {
    check_backend(&RustExecutor);
}

#[test]
fn packaged_executable_matches_the_interpreter() {
    check_backend(&Executable);
}

#[test]
fn packaged_shared_library_matches_the_interpreter() {
    check_backend(&SharedLibrary);
}
