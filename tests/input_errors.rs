//! Every CLI path that takes inputs, given missing, extra, misnamed, repeated and mistyped
//! (dtype, shape, not a tensor) inputs: each fails with a message that names the real cause,
//! snapshotted. Paths: `oar run` (IR text and an exported ONNX model), the packaged
//! executable, and `oar train --weights` / `oar run --weights`. Temporary paths print as
//! `[TMP]`.

#[path = "../runtime/tests/train_util/mod.rs"]
mod train_util;

mod cli_util;
use cli_util::repo;

use oar::runtime::io::npy::write_npy;
use oar::runtime::io::weights::save_safetensors;
use oar::runtime::{HostTensor, Weights};
use std::path::Path;
use std::process::Command;
use train_util::{scratch, write_synthetic};

/// Random non-zero values (a fixed LCG: the messages must not depend on them).
fn f32s(shape: &[usize], seed: u64) -> HostTensor {
    let mut s = seed | 1;
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 0.9
        })
        .collect();
    HostTensor::f32(shape.to_vec(), v)
}

fn npy(dir: &Path, name: &str, t: &HostTensor) -> String {
    let p = dir.join(name);
    write_npy(&p, t).expect("write npy");
    p.display().to_string()
}

/// Runs a command that must fail cleanly (exit non-zero, no panic, no sanitizer report);
/// its stderr with `dir` replaced by `[TMP]`.
fn failure(cmd: &mut Command, dir: &Path) -> String {
    let out = cmd.output().expect("run the command");
    let err = String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "[TMP]");
    assert!(!out.status.success(), "{cmd:?} should fail:\n{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Sanitizer"),
        "{err}"
    );
    err.lines()
        .filter(|l| !l.starts_with("note: parameters initialised"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn oar_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oar"));
    c.args(args);
    c
}

/// `case: message` lines, one per case.
fn report(cases: &[(&str, String)]) -> String {
    cases
        .iter()
        .map(|(case, msg)| format!("{case}:\n  {}\n", msg.replace('\n', "\n  ")))
        .collect()
}

#[test]
fn oar_run_names_the_bad_input() {
    let d = scratch("input-errors-run");
    let mlp = repo("examples/mlp.oir");
    let x = npy(&d, "x.npy", &f32s(&[2, 784], 1));
    let x_short = npy(&d, "x_short.npy", &f32s(&[2, 5], 2));
    let x_i64 = npy(
        &d,
        "x_i64.npy",
        &HostTensor::i64(vec![2, 784], vec![3; 1568]),
    );
    let not_npy = d.join("x.txt");
    std::fs::write(&not_npy, "1 2 3\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", mlp.as_str()];
        args.extend_from_slice(extra);
        failure(&mut oar_cmd(&args), &d)
    };
    let xn = format!("x={x}");
    let cases = [
        ("missing", run(&[])),
        ("extra", run(&["--input", &x, "--input", &x])),
        ("misnamed", run(&["--input", &format!("y={x}")])),
        ("given twice", run(&["--input", &xn, "--input", &xn])),
        ("wrong dtype", run(&["--input", &x_i64])),
        ("wrong shape", run(&["--input", &x_short])),
        (
            "not a .npy file",
            run(&["--input", not_npy.to_str().unwrap()]),
        ),
        (
            "no such file",
            run(&["--input", &format!("{}/nope.npy", d.display())]),
        ),
    ];
    insta::assert_snapshot!(report(&cases));
}

/// The case the issue reports: an exported ERNIE run without `mlm_weights` failed at a
/// broadcast deep in the graph; it must say the input has no value.
#[test]
fn oar_run_on_exported_ernie_names_the_missing_input() {
    let d = scratch("input-errors-ernie");
    let onnx = d.join("ernie.onnx");
    let out = oar_cmd(&["export", "ernie-3.0-tiny", "-o", onnx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (n, seq) = (2, 16);
    let ids = HostTensor::i64(vec![n, seq], (0..(n * seq) as i64).map(|i| i % 2).collect());
    let given: Vec<String> = [
        "input_ids",
        "token_type_ids",
        "position_ids",
        "task_type_ids",
        "mlm_labels",
    ]
    .iter()
    .map(|name| format!("{name}={}", npy(&d, &format!("{name}.npy"), &ids)))
    .collect();
    let weights_i64 = format!("mlm_weights={}", npy(&d, "w_i64.npy", &ids));
    let weights_ok = format!("mlm_weights={}", npy(&d, "w.npy", &f32s(&[n, seq], 3)));
    let run = |extra: &[&str]| {
        let mut args = vec!["run", onnx.to_str().unwrap()];
        for g in &given {
            args.extend(["--input", g.as_str()]);
        }
        args.extend_from_slice(extra);
        failure(&mut oar_cmd(&args), &d)
    };
    let cases = [
        ("mlm_weights missing", run(&[])),
        (
            "misnamed",
            run(&["--input", &weights_ok.replace("mlm_weights", "mlm_weight")]),
        ),
        (
            "given twice",
            run(&["--input", &weights_ok, "--input", &given[0]]),
        ),
        ("wrong dtype", run(&["--input", &weights_i64])),
    ];
    insta::assert_snapshot!(report(&cases));
}

#[test]
fn packaged_executable_names_the_bad_input() {
    let d = scratch("input-errors-exe");
    let exe = d.join("mlp");
    let out = oar_cmd(&[
        "compile",
        &repo("examples/mlp.oir"),
        "--sym",
        "N=2",
        "-o",
        exe.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = npy(&d, "x.npy", &f32s(&[2, 784], 1));
    let x_short = npy(&d, "x_short.npy", &f32s(&[2, 5], 2));
    let x_i64 = npy(
        &d,
        "x_i64.npy",
        &HostTensor::i64(vec![2, 784], vec![3; 1568]),
    );
    let bad_header = d.join("bad.npy");
    let mut bytes = std::fs::read(&x).unwrap();
    bytes[8..10].copy_from_slice(&[0xff, 0xff]);
    std::fs::write(&bad_header, &bytes).unwrap();
    let run = |args: &[&str]| failure(Command::new(&exe).args(args), &d);
    let xn = format!("x={x}");
    let cases = [
        ("missing", run(&[])),
        ("extra", run(&["--input", &x, "--input", &x])),
        ("misnamed", run(&["--input", &format!("y={x}")])),
        ("given twice", run(&["--input", &xn, "--input", &xn])),
        ("wrong dtype", run(&["--input", &x_i64])),
        ("wrong shape", run(&["--input", &x_short])),
        (
            "corrupt header length",
            run(&["--input", bad_header.to_str().unwrap()]),
        ),
        ("flag without its value", run(&["--input", &x, "--threads"])),
        ("bad --bench", run(&["--input", &x, "--bench", "-3"])),
    ];
    insta::assert_snapshot!(report(&cases));
}

#[test]
fn weights_files_name_the_bad_tensor() {
    let d = scratch("input-errors-weights");
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_synthetic(&data, 64, 0.3, 5);
    let model = repo("runtime/tests/train_softmax.oir");
    let write = |name: &str, tensors: &[(&str, HostTensor)]| -> String {
        let w: Weights = tensors
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        let p = d.join(name);
        save_safetensors(&p, &w).unwrap();
        p.display().to_string()
    };
    let (w, b) = (f32s(&[64, 10], 1), f32s(&[10], 2));
    let misnamed = write("misnamed.safetensors", &[("fc.weights", w.clone())]);
    let extra = write(
        "extra.safetensors",
        &[
            ("fc.weight", w.clone()),
            ("fc.bias", b.clone()),
            ("fc2.bias", b.clone()),
        ],
    );
    let shape = write("shape.safetensors", &[("fc.weight", f32s(&[10, 64], 1))]);
    let dtype = write(
        "dtype.safetensors",
        &[("fc.bias", HostTensor::i64(vec![10], vec![1; 10]))],
    );
    let not_st = d.join("w.txt");
    std::fs::write(&not_st, "weights").unwrap();
    let train = |weights: &str| {
        failure(
            &mut oar_cmd(&[
                "train",
                &model,
                "--data",
                data.to_str().unwrap(),
                "--steps",
                "2",
                "--batch",
                "8",
                "--weights",
                weights,
            ]),
            &d,
        )
    };
    let x = npy(&d, "x.npy", &f32s(&[2, 784], 1));
    let only_fc1 = write(
        "partial.safetensors",
        &[
            ("fc1.weight", f32s(&[784, 256], 4)),
            ("fc1.bias", f32s(&[256], 5)),
        ],
    );
    let run = |weights: &str| {
        failure(
            &mut oar_cmd(&[
                "run",
                &repo("examples/mlp.oir"),
                "--input",
                &x,
                "--weights",
                weights,
            ]),
            &d,
        )
    };
    let cases = [
        ("train: misnamed tensor", train(&misnamed)),
        ("train: extra tensor", train(&extra)),
        ("train: wrong shape", train(&shape)),
        ("train: wrong dtype", train(&dtype)),
        ("train: not safetensors", train(not_st.to_str().unwrap())),
        ("run: missing tensors", run(&only_fc1)),
        ("run: misnamed tensor", run(&misnamed)),
    ];
    insta::assert_snapshot!(report(&cases));
    // Inference with a training checkpoint's file: every parameter plus optimizer state.
    let full = write(
        "full.safetensors",
        &[
            ("fc1.weight", f32s(&[784, 256], 4)),
            ("fc1.bias", f32s(&[256], 5)),
            ("fc2.weight", f32s(&[256, 10], 6)),
            ("fc2.bias", f32s(&[10], 7)),
            ("fc1.weight.moment1", f32s(&[784, 256], 8)),
        ],
    );
    let out = oar_cmd(&[
        "run",
        &repo("examples/mlp.oir"),
        "--input",
        &x,
        "--weights",
        &full,
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 tensor(s) that name no parameter ignored"),
        "{err}"
    );
}
