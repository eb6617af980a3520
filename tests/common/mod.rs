//! Helpers shared by the end-to-end tests: random inputs, onnxruntime as a subprocess, and
//! the error measure every comparison uses.
#![allow(dead_code)]

use oar::ir::{DType, Graph};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::HostTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The folder `scripts/onnx_setup.py` fills (models/, node/), if it exists.
pub fn onnx_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OAR_ONNX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/onnx"));
    dir.is_dir().then_some(dir)
}

/// Whether python3 can import onnxruntime.
pub fn have_onnxruntime() -> bool {
    Command::new("python3")
        .args(["-c", "import onnxruntime"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A fresh scratch folder under the target dir.
pub fn scratch(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Runs `model` in onnxruntime on `inputs` (graph-input order).
pub fn onnxruntime_run(model: &Path, inputs: &[HostTensor]) -> Vec<HostTensor> {
    let dir = scratch("ort");
    let mut args = vec![
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/onnx/ort_run.py")
            .display()
            .to_string(),
        model.display().to_string(),
        dir.display().to_string(),
    ];
    for (k, t) in inputs.iter().enumerate() {
        let p = dir.join(format!("input_{k}.npy"));
        write_npy(&p, t).expect("write input");
        args.push(p.display().to_string());
    }
    let out = Command::new("python3")
        .args(&args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "onnxruntime failed on {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut outs = Vec::new();
    for k in 0.. {
        let p = dir.join(format!("output_{k}.npy"));
        if !p.exists() {
            break;
        }
        outs.push(read_npy(&p).expect("read output"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    outs
}

/// max |a − b| / max |b|: the relative error every comparison states a bound on.
pub fn rel_err(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.shape, b.shape, "shapes differ");
    let (x, y) = (a.to_f64(), b.to_f64());
    let scale = y.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let diff = x.iter().zip(&y).fold(0f64, |m, (p, q)| max_diff(m, *p, *q));
    diff / scale
}

/// max |a − b|.
pub fn abs_err(a: &HostTensor, b: &HostTensor) -> f64 {
    a.to_f64()
        .iter()
        .zip(&b.to_f64())
        .fold(0f64, |m, (p, q)| max_diff(m, *p, *q))
}

/// Deterministic random inputs for a graph, symbols bound by `bindings`: floats uniform in
/// [-1, 1), integers in [0, 3) (valid ids for every embedding table in the zoo), bools 50/50.
pub fn random_inputs(g: &Graph, bindings: &BTreeMap<String, u64>, seed: u64) -> Vec<HostTensor> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    g.inputs()
        .iter()
        .map(|&i| {
            let ty = &g.node(i).outputs[0];
            let shape: Vec<usize> = ty
                .shape
                .eval(bindings, 1)
                .iter()
                .map(|&d| d as usize)
                .collect();
            let n: usize = shape.iter().product();
            match ty.dtype {
                DType::I64 | DType::I32 => {
                    HostTensor::i64(shape, (0..n).map(|_| (next() % 3) as i64).collect())
                }
                DType::Bool => HostTensor::bool(shape, (0..n).map(|_| next() % 2 == 0).collect()),
                _ => HostTensor::f32(
                    shape,
                    (0..n)
                        .map(|_| next() as f32 / (1u64 << 31) as f32 - 1.0)
                        .collect(),
                ),
            }
        })
        .collect()
}

/// The running max of |p − q|, where a NaN on one side only counts as an infinite error
/// (`f64::max` would skip it) and NaN on both sides as agreement.
fn max_diff(m: f64, p: f64, q: f64) -> f64 {
    match (p.is_nan(), q.is_nan()) {
        (true, true) => m,
        (false, false) => m.max((p - q).abs()),
        _ => f64::INFINITY,
    }
}
