//! `oar export`, then `oar inspect` and `oar run` on the .onnx file, as a user runs them.

mod common;

use common::{rel_err, scratch};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::HostTensor;
use std::process::Command;

fn oar(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oar {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn export_inspect_and_run_an_onnx_file() {
    let dir = scratch("cli");
    let model = dir.join("lcnet.onnx");
    let m = model.to_str().unwrap();
    oar(&["export", "lcnet_x0_25", "-o", m]);

    let stats = oar(&["inspect", m, "--stats", "--input-shape", "x=1x3x224x224"]);
    let zoo = oar(&["inspect", "lcnet_x0_25", "--stats"]);
    let line = |s: &str, key: &str| s.lines().find(|l| l.starts_with(key)).unwrap().to_string();
    assert_eq!(line(&stats, "parameters"), line(&zoo, "parameters"));
    assert_eq!(line(&stats, "MACs"), line(&zoo, "MACs"));

    let x: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let xp = dir.join("x.npy");
    write_npy(&xp, &HostTensor::f32(vec![1, 3, 224, 224], x)).unwrap();
    let (y1, y2) = (dir.join("y1.npy"), dir.join("y2.npy"));
    oar(&[
        "run",
        m,
        "--input",
        xp.to_str().unwrap(),
        "-o",
        y1.to_str().unwrap(),
    ]);
    // The zoo model with the same seed (0) as the export.
    oar(&[
        "run",
        "lcnet_x0_25",
        "--input",
        xp.to_str().unwrap(),
        "-o",
        y2.to_str().unwrap(),
    ]);
    let (a, b) = (read_npy(&y1).unwrap(), read_npy(&y2).unwrap());
    assert_eq!(a.shape, vec![1, 1000]);
    assert!(rel_err(&a, &b) <= 1e-6);
}

#[test]
fn onnx_errors_reach_the_user() {
    let dir = scratch("cli-err");
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, b"\x08\x07 not really a model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(["inspect", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.onnx: not a valid ONNX model"), "{err}");
}
