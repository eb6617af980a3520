//! `resize` compiled through LLVM against the reference interpreter: every interpolation ×
//! coordinate mode, up- and down-scaling, odd and degenerate sizes, on random inputs in
//! [−1, 1]; through the JIT (Rust executor, 2 threads) and the packaged executable (C
//! executor). Bound: max |a − b| / max |b| ≤ 1e-5 (the kernels blend the same taps in
//! another order; the weights are the interpreter's rounded to f32).

mod common;

use common::{random_inputs, rel_err};
use oar_codegen::cpu::host_cpu;
use oar_codegen::jit::JitModel;
use oar_codegen::kernel::build_kernels;
use oar_codegen::package::{package, Artifact};
use oar_ir::op::{CoordMode, ResizeAttrs, ResizeMode};
use oar_ir::{Dim, Graph, Op, TensorType, ValueRef};
use oar_runtime::io::npy::{read_npy, write_npy};
use oar_runtime::{run, HostTensor, Weights};
use proptest::prelude::*;
use std::collections::BTreeMap;

const TOL: f64 = 1e-5;

const MODES: [ResizeMode; 2] = [ResizeMode::Nearest, ResizeMode::Bilinear];
const COORDS: [CoordMode; 4] = [
    CoordMode::HalfPixel,
    CoordMode::AlignCorners,
    CoordMode::Asymmetric,
    CoordMode::PytorchHalfPixel,
];

/// One input `[n, c, h, w]` resized to each `(mode, coord, [ho, wo])`, one output each.
fn graph(x: [u64; 4], resizes: &[(ResizeMode, CoordMode, [u64; 2])]) -> Graph {
    let mut g = Graph::new("resize");
    let xv = g.add_input("x", TensorType::f32(&x));
    let outs: Vec<ValueRef> = resizes
        .iter()
        .map(|&(mode, coord, [ho, wo])| {
            let attrs = ResizeAttrs {
                mode,
                coord,
                size: [Dim::Static(ho), Dim::Static(wo)],
            };
            g.add_node(Op::Resize(attrs), vec![xv], None)
                .unwrap()
                .into()
        })
        .collect();
    g.set_outputs(outs);
    g
}

/// Every mode × coordinate mode to `size`.
fn all_modes(size: [u64; 2]) -> Vec<(ResizeMode, CoordMode, [u64; 2])> {
    MODES
        .iter()
        .flat_map(|&m| COORDS.iter().map(move |&c| (m, c, size)))
        .collect()
}

fn describe(g: &Graph, k: usize) -> String {
    let o = g.outputs()[k];
    format!("{:?}", g.node(o.node).op)
}

/// The JIT's outputs against the interpreter's; the worst error.
fn check_jit(g: &Graph, seed: u64) -> Result<f64, String> {
    let inputs = random_inputs(g, &BTreeMap::new(), seed);
    let want = run(g, &inputs, &Weights::new()).map_err(|e| e.to_string())?;
    let mut m =
        JitModel::new(g, &BTreeMap::new(), &Weights::new(), 2).map_err(|e| e.to_string())?;
    let mut worst = 0f64;
    // Twice: the second run must not depend on what the first left behind.
    for _ in 0..2 {
        let got = m.run(&inputs).map_err(|e| e.to_string())?;
        for (k, (a, b)) in got.iter().zip(&want).enumerate() {
            let e = rel_err(a, b);
            if e.is_nan() || e > TOL {
                return Err(format!(
                    "{} on {:?}: rel err {e:.2e} > {TOL:e}",
                    describe(g, k),
                    inputs[0].shape
                ));
            }
            worst = worst.max(e);
        }
    }
    Ok(worst)
}

#[test]
fn every_mode_matches_the_interpreter() {
    // (input NCHW, output HW): integer up-scales (the FPN ×2/×4/×8), down-scales, odd and
    // non-integer ratios, identity, single rows and columns in and out.
    let cases: &[([u64; 4], [u64; 2])] = &[
        ([1, 1, 1, 1], [1, 1]),
        ([1, 1, 1, 1], [3, 5]),
        ([1, 2, 5, 7], [10, 14]),
        ([1, 2, 4, 4], [16, 16]),
        ([1, 1, 3, 5], [24, 40]),
        ([2, 3, 7, 5], [3, 2]),
        ([1, 3, 9, 11], [13, 6]),
        ([1, 2, 6, 6], [6, 6]),
        ([1, 1, 1, 4], [5, 1]),
        ([1, 1, 5, 1], [1, 7]),
        ([1, 4, 17, 31], [40, 29]),
        ([2, 2, 10, 10], [7, 23]),
        ([1, 2, 33, 47], [11, 94]),
        ([1, 1, 8, 64], [20, 200]),
    ];
    for (seed, (x, size)) in cases.iter().enumerate() {
        let g = graph(*x, &all_modes(*size));
        let e = check_jit(&g, seed as u64 + 1).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{x:?} → {size:?}: worst rel err {e:.2e}");
    }
}

fn mode() -> impl Strategy<Value = ResizeMode> {
    prop::sample::select(MODES.to_vec())
}

fn coord() -> impl Strategy<Value = CoordMode> {
    prop::sample::select(COORDS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_resizes_match_the_interpreter(
        n in 1u64..3, c in 1u64..4, h in 1u64..20, w in 1u64..40, ho in 1u64..40,
        wo in 1u64..80, mode in mode(), coord in coord(), seed in 1u64..1000,
    ) {
        let g = graph([n, c, h, w], &[(mode, coord, [ho, wo])]);
        check_jit(&g, seed).map_err(TestCaseError::fail)?;
    }
}

/// Shapes decide the taps; the tables are constants, loaded with the weights, and an
/// integer asymmetric up-scale repeats columns with no column table.
#[test]
fn taps_are_constant_tables() {
    let cpu = host_cpu().unwrap();
    let table_names = |g: &Graph| {
        let c = build_kernels(g, &BTreeMap::new(), &cpu).unwrap();
        let mut names: Vec<String> = c
            .program
            .buffers
            .iter()
            .filter(|b| matches!(b.role, oar_runtime::program::BufferRole::Constant(_)))
            .map(|b| b.name.rsplit('.').next().unwrap_or("").to_string())
            .collect();
        names.sort();
        names
    };
    let x2 = graph(
        [1, 4, 5, 7],
        &[(ResizeMode::Nearest, CoordMode::Asymmetric, [10, 14])],
    );
    assert_eq!(table_names(&x2), ["rows"]);
    let odd = graph(
        [1, 4, 5, 7],
        &[(ResizeMode::Nearest, CoordMode::HalfPixel, [9, 13])],
    );
    assert_eq!(table_names(&odd), ["cols", "rows"]);
    // Two bilinear resizes of one shape share their tables (and their kernel).
    let two = graph(
        [1, 4, 5, 7],
        &[
            (ResizeMode::Bilinear, CoordMode::HalfPixel, [9, 13]),
            (ResizeMode::Bilinear, CoordMode::HalfPixel, [9, 13]),
        ],
    );
    let c = build_kernels(&two, &BTreeMap::new(), &cpu).unwrap();
    assert_eq!(table_names(&two).len(), 8);
    assert_eq!(c.kernels.len(), 1);
}

/// Empty outputs write nothing; an empty input to a non-empty output is a clear error.
#[test]
fn empty_shapes() {
    let cpu = host_cpu().unwrap();
    let g = graph(
        [1, 2, 3, 3],
        &[(ResizeMode::Bilinear, CoordMode::HalfPixel, [0, 4])],
    );
    let c = build_kernels(&g, &BTreeMap::new(), &cpu).unwrap();
    assert!(c.kernels.is_empty());
    let g = graph(
        [1, 2, 0, 3],
        &[(ResizeMode::Nearest, CoordMode::HalfPixel, [2, 4])],
    );
    let e = build_kernels(&g, &BTreeMap::new(), &cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("resize") && e.contains("empty input"), "{e}");
}

/// The packaged executable (the C executor over the same kernels, the tables among its
/// constants) on every mode and coordinate mode, up and down.
#[test]
fn packaged_executable_matches_the_interpreter() {
    let mut resizes = all_modes([14, 22]);
    resizes.extend(all_modes([4, 5]));
    let g = graph([2, 3, 7, 11], &resizes);
    let inputs = random_inputs(&g, &BTreeMap::new(), 11);
    let want = run(&g, &inputs, &Weights::new()).unwrap();
    let c = build_kernels(&g, &BTreeMap::new(), &host_cpu().unwrap()).unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("resize-package-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("model");
    package(
        &c,
        &["x".to_string()],
        &Weights::new(),
        Artifact::Executable,
        true,
        &exe,
    )
    .unwrap();
    let xp = dir.join("x.npy");
    write_npy(&xp, &inputs[0]).unwrap();
    let outs: Vec<_> = (0..want.len())
        .map(|k| dir.join(format!("y{k}.npy")))
        .collect();
    let mut cmd = std::process::Command::new(&exe);
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
    for (k, (p, b)) in outs.iter().zip(&want).enumerate() {
        let a: HostTensor = read_npy(p).unwrap();
        let e = rel_err(&a, b);
        assert!(e <= TOL, "{}: rel err {e:.2e}", describe(&g, k));
    }
    std::fs::remove_dir_all(&dir).ok();
}
