//! `oar compile`: the executable run as a subprocess, the shared library called from C, the
//! readable emits, and `oar run --backend llvm` — all against the reference interpreter.

mod common;

use common::{random_inputs, rel_err, scratch};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::{init::init_weights, run};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const TOL: f64 = 1e-4;

fn oar(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oar {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The interpreter's outputs for a zoo model with seed-0 weights on `inputs`.
fn reference(model: &str, inputs: &[oar::runtime::HostTensor]) -> Vec<oar::runtime::HostTensor> {
    let g = oar::load_graph(model).unwrap();
    let w = init_weights(&g, 0).unwrap();
    run(&g, inputs, &w).unwrap()
}

/// Runs an executable compiled from lcnet_x0_25 on a random input written to `dir`, checks
/// its output against the interpreter's, and returns the input's path.
fn check_lcnet_executable(exe: &Path, dir: &Path, seed: u64) -> std::path::PathBuf {
    let g = oar::load_graph("lcnet_x0_25").unwrap();
    let x = random_inputs(&g, &BTreeMap::from([("N".into(), 1)]), seed);
    let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
    write_npy(&xp, &x[0]).unwrap();
    let st = Command::new(exe)
        .args(["--input", xp.to_str().unwrap(), "-o", yp.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let e = rel_err(&read_npy(&yp).unwrap(), &reference("lcnet_x0_25", &x)[0]);
    assert!(e <= TOL, "rel err {e:.2e}");
    xp
}

/// `examples/convnet.oir` compiled to assembly for `cpu`.
fn convnet_asm(dir: &Path, cpu: &str) -> String {
    let asm = dir.join(format!("{cpu}.s"));
    oar(&[
        "compile",
        "examples/convnet.oir",
        "--emit",
        "asm",
        "--target-cpu",
        cpu,
        "-o",
        asm.to_str().unwrap(),
    ]);
    std::fs::read_to_string(&asm).unwrap()
}

#[test]
fn executable_matches_the_interpreter() {
    let dir = scratch("exe");
    let exe = dir.join("lcnet");
    oar(&["compile", "lcnet_x0_25", "-o", exe.to_str().unwrap()]);
    let xp = check_lcnet_executable(&exe, &dir, 3);
    // --bench prints percentiles.
    let out = Command::new(&exe)
        .args(["--input", xp.to_str().unwrap(), "--bench", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("p50") && text.contains("p99"), "{text}");
    // A wrong input shape is a clear error, not a crash.
    let bad = dir.join("bad.npy");
    write_npy(
        &bad,
        &oar::runtime::HostTensor::f32(vec![1, 3, 8, 8], vec![0.5; 192]),
    )
    .unwrap();
    let out = Command::new(&exe)
        .args(["--input", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shape does not match input `x`"));
}

#[test]
fn external_weights_and_integer_inputs() {
    let dir = scratch("exe-ext");
    let exe = dir.join("ernie");
    oar(&[
        "compile",
        "ernie-3.0-titan-tiny",
        "--sym",
        "N=2",
        "--sym",
        "seq=8",
        "--external-weights",
        "-o",
        exe.to_str().unwrap(),
    ]);
    assert!(dir.join("ernie.weights").exists());
    let g = oar::load_graph("ernie-3.0-titan-tiny").unwrap();
    let inputs = random_inputs(&g, &BTreeMap::from([("N".into(), 2), ("seq".into(), 8)]), 4);
    let mut args = Vec::new();
    for (&i, t) in g.inputs().iter().zip(&inputs) {
        let p = dir.join(format!("{}.npy", g.node(i).name));
        write_npy(&p, t).unwrap();
        args.push("--input".to_string());
        args.push(format!("{}={}", g.node(i).name, p.display()));
    }
    let want = reference("ernie-3.0-titan-tiny", &inputs);
    for k in 0..want.len() {
        args.push("-o".into());
        args.push(dir.join(format!("out{k}.npy")).display().to_string());
    }
    let out = Command::new(&exe).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, w) in want.iter().enumerate() {
        let got = read_npy(&dir.join(format!("out{k}.npy"))).unwrap();
        assert!(rel_err(&got, w) <= TOL, "output {k}");
    }
    // Without its weights file the binary says so.
    std::fs::remove_file(dir.join("ernie.weights")).unwrap();
    let out = Command::new(&exe).args(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open weights"));
}

#[test]
fn shared_library_is_called_from_c() {
    let dir = scratch("lib");
    let lib = dir.join("libmodel.so");
    oar(&[
        "compile",
        "lcnet_x0_25",
        "--emit",
        "lib",
        "-o",
        lib.to_str().unwrap(),
    ]);
    assert!(dir.join("libmodel.h").exists());
    // The executor suite's caller of the C API (codegen/tests/executor_suite): it runs the
    // model twice and writes each run's output.
    let driver = include_str!("../codegen/tests/executor_suite/driver.c");
    std::fs::write(dir.join("driver.c"), driver).unwrap();
    let st = Command::new("cc")
        .current_dir(&dir)
        .args(["-o", "driver", "driver.c", "-L.", "-lmodel"])
        .arg("-Wl,-rpath,$ORIGIN")
        .status()
        .unwrap();
    assert!(st.success());
    let g = oar::load_graph("lcnet_x0_25").unwrap();
    let x = random_inputs(&g, &BTreeMap::from([("N".into(), 1)]), 9);
    let raw: Vec<u8> = x[0]
        .to_f64()
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(dir.join("x.bin"), raw).unwrap();
    let st = Command::new(dir.join("driver"))
        .args(["2", "x.bin", "y.bin", "4000"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let want = reference("lcnet_x0_25", &x);
    for run in ["y.bin.1", "y.bin.2"] {
        let y: Vec<f32> = std::fs::read(dir.join(run))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let got = oar::runtime::HostTensor::f32(vec![1, 1000], y);
        assert!(rel_err(&got, &want[0]) <= TOL, "{run}");
    }
}

#[test]
fn emits_are_readable() {
    let dir = scratch("emit");
    for (emit, marker) in [
        ("kernel-ir", "kernel @k0_"),
        ("llvm-ir", "define void @k0_"),
        ("asm", "vfmadd"),
    ] {
        let p = dir.join(emit);
        oar(&[
            "compile",
            "examples/convnet.oir",
            "--emit",
            emit,
            "-o",
            p.to_str().unwrap(),
        ]);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(marker), "{emit} lacks {marker}");
    }
}

/// `--target-cpu`: AVX-512 code for another machine (read as assembly), and a baseline
/// x86-64 executable (SSE, 6 × 8 tiles) that runs here and matches the interpreter.
#[test]
fn cross_compiles_for_other_cpus() {
    let dir = scratch("cross");
    let text = convnet_asm(&dir, "skylake-avx512");
    assert!(text.contains("vfmadd231ps\t%zmm"), "no AVX-512 FMA");
    let exe = dir.join("lcnet-x86-64");
    oar(&[
        "compile",
        "lcnet_x0_25",
        "--target-cpu",
        "x86-64",
        "-o",
        exe.to_str().unwrap(),
    ]);
    check_lcnet_executable(&exe, &dir, 4);
    let text = convnet_asm(&dir, "x86-64");
    assert!(
        !text.contains("ymm") && !text.contains("vfmadd"),
        "not baseline code"
    );
    let asm = dir.join("rejected.s");
    // A misspelt CPU is an error naming it, not LLVM's silent fallback to baseline code.
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args([
            "compile",
            "examples/convnet.oir",
            "--target-cpu",
            "skylake-avx521",
        ])
        .args(["--emit", "asm", "-o", asm.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown CPU `skylake-avx521`"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(["compile", "examples/convnet.oir", "--target-cpu", "x86-64"])
        .args(["--target-features", "avx2", "--emit", "asm", "-o"])
        .arg(&asm)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target feature `avx2`"), "{err}");
}

#[test]
fn run_with_the_llvm_backend() {
    let dir = scratch("run-llvm");
    let g = oar::load_graph("lcnet_x0_35").unwrap();
    let x = random_inputs(&g, &BTreeMap::from([("N".into(), 2)]), 1);
    let xp = dir.join("x.npy");
    write_npy(&xp, &x[0]).unwrap();
    let (a, b) = (dir.join("a.npy"), dir.join("b.npy"));
    oar(&[
        "run",
        "lcnet_x0_35",
        "--input",
        xp.to_str().unwrap(),
        "--backend",
        "llvm",
        "-o",
        a.to_str().unwrap(),
    ]);
    oar(&[
        "run",
        "lcnet_x0_35",
        "--input",
        xp.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
    ]);
    assert!(rel_err(&read_npy(&a).unwrap(), &read_npy(Path::new(&b)).unwrap()) <= TOL);
}
