//! oar's `lcnet_*` zoo models against PaddleClas's own `PPLCNet_x*` with shared weights.
//! Needs paddlepaddle and paddleclas (`python3 scripts/paddle_setup.py`; scripts/test.sh runs
//! it); skips with a message when they are not importable.

mod common;

use common::*;
use oar::models::LcNetConfig;
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::save_safetensors;
use oar::runtime::{init::init_weights, run, HostTensor, Weights};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The bound every comparison must meet: max |a−b| / max |b|.
const TOL: f64 = 1e-4;

fn have_paddle() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u, paddle; assert u.find_spec('paddleclas')",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIP: paddle or paddleclas is not importable (run `python3 scripts/paddle_setup.py`)"
        );
    }
    ok
}

/// A value in [-1, 1) from a counter (deterministic, no extra crates).
fn noise(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Seeded weights with batch-norm statistics and affine terms away from their identity
/// initial values, so a mismatch in any of them shows in the logits.
fn weights_for(g: &oar::ir::Graph, seed: u64) -> Weights {
    let mut w = init_weights(g, seed).expect("init");
    let mut state = seed;
    for (name, t) in w.iter_mut() {
        let bn_term = [".bn.", ".bn._", "se.conv"]
            .iter()
            .any(|p| name.contains(p));
        if !bn_term {
            continue;
        }
        let Some(v) = t.as_f32() else { continue };
        let n = v.len();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let r = noise(&mut state);
                if name.ends_with("_variance") {
                    0.5 + r.abs()
                } else if name.ends_with(".bn.weight") {
                    1.0 + 0.5 * r
                } else {
                    0.2 * r
                }
            })
            .collect();
        *t = HostTensor::f32(t.shape.clone(), data);
    }
    w
}

fn paddle_logits(variant: &str, weights: &Path, input: &Path, out: &Path) -> HostTensor {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paddle/lcnet_run.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(variant)
        .args([weights, input, out])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "{variant} in Paddle failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_npy(out).expect("paddle logits")
}

fn optimize(g: oar::ir::Graph) -> oar::ir::Graph {
    use oar::passes::{PassContext, Pipeline};
    let cluster = oar::ir::Cluster::resolve("cpu").expect("cpu preset");
    let mut cx = PassContext::new(cluster.node_groups[0].device.clone());
    cx.verify = true;
    let p = Pipeline::named("inference", &[]).expect("inference pipeline");
    p.run(g, &cx, |_, _| {}).expect("pipeline").0
}

/// Builds oar's model at `scale`, runs it on random weights and input in the interpreter
/// (as built and after the inference pipeline) and in PaddleClas's `variant`, and compares.
fn compare(scale: f64, variant: &str, seed: u64) {
    if !have_paddle() {
        return;
    }
    // PPLCNet pools adaptively: a 64×64 image runs the whole network, with a 2×2 last map.
    let cfg = LcNetConfig {
        image_size: 64,
        ..LcNetConfig::new(scale)
    };
    let g = cfg.build(variant).expect("build");
    let weights = weights_for(&g, seed);
    let bindings = BTreeMap::from([("N".to_string(), 2u64)]);
    let inputs = random_inputs(&g, &bindings, seed);
    let dir = scratch("paddle-lcnet");
    let (wp, xp, yp) = (
        dir.join("w.safetensors"),
        dir.join("x.npy"),
        dir.join("y.npy"),
    );
    save_safetensors(&wp, &weights).expect("write weights");
    write_npy(&xp, &inputs[0]).expect("write input");
    let theirs = paddle_logits(variant, &wp, &xp, &yp);
    let ours = run(&g, &inputs, &weights).expect("interpreter");
    let e = rel_err(&ours[0], &theirs);
    eprintln!("{variant}: rel err {e:.2e} (interpreter)");
    assert!(e <= TOL, "{variant}: rel err {e:.2e} > {TOL:e}");
    let opt = optimize(g);
    let ours = run(&opt, &inputs, &weights).expect("optimized graph runs");
    let e = rel_err(&ours[0], &theirs);
    eprintln!("{variant}: rel err {e:.2e} (inference pipeline)");
    assert!(e <= TOL, "{variant} optimized: rel err {e:.2e} > {TOL:e}");
}

#[test]
fn lcnet_x0_25_matches_paddleclas() {
    compare(0.25, "PPLCNet_x0_25", 11);
}

#[test]
fn lcnet_x1_0_matches_paddleclas() {
    compare(1.0, "PPLCNet_x1_0", 12);
}
