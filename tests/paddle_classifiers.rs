//! oar's PaddleClas classifiers — `lcnet_*`, `resnet*_vd`, `mobilenetv3_*` — against
//! PaddleClas's own `PPLCNet_x*`, `ResNet*_vd` and `MobileNetV3_*` with shared weights.
//! Needs paddlepaddle and paddleclas (`python3 scripts/paddle_setup.py`; scripts/test.sh runs
//! it); skips with a message when they are not importable.

mod common;

use common::*;
use oar::models::{LcNetConfig, MobileNetV3Config, MobileNetV3Size, ResNetVdConfig};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::save_safetensors;
use oar::runtime::train::StepRunner;
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paddle/paddleclas_run.py");
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

/// Runs oar's `g` on random weights and input in the interpreter (as built and after the
/// inference pipeline) and PaddleClas's `variant` on the same, and compares the logits.
fn compare_graph(g: oar::ir::Graph, variant: &str, seed: u64) {
    let weights = weights_for(&g, seed);
    let bindings = BTreeMap::from([("N".to_string(), 2u64)]);
    let inputs = random_inputs(&g, &bindings, seed);
    let dir = scratch("paddle-classifier");
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

/// PP-LCNet at `scale` against PaddleClas's `variant`.
fn compare(scale: f64, variant: &str, seed: u64) {
    if !have_paddle() {
        return;
    }
    // PPLCNet pools adaptively: a 64×64 image runs the whole network, with a 2×2 last map.
    let cfg = LcNetConfig {
        image_size: 64,
        ..LcNetConfig::new(scale)
    };
    compare_graph(cfg.build(variant).expect("build"), variant, seed);
}

/// ResNet-vd at 64×64 (2×2 last map; every shortcut pools an even map, as at 224).
fn compare_resnet(depth: u64, variant: &str, seed: u64) {
    if !have_paddle() {
        return;
    }
    let cfg = ResNetVdConfig {
        image_size: 64,
        ..ResNetVdConfig::new(depth).expect("a PaddleClas depth")
    };
    compare_graph(cfg.build(variant).expect("build"), variant, seed);
}

/// MobileNetV3 at 64×64 (2×2 last map).
fn compare_mobilenet(size: MobileNetV3Size, scale: f64, variant: &str, seed: u64) {
    if !have_paddle() {
        return;
    }
    let cfg = MobileNetV3Config {
        image_size: 64,
        ..MobileNetV3Config::new(size, scale)
    };
    compare_graph(cfg.build(variant).expect("build"), variant, seed);
}

#[test]
fn resnet50_vd_matches_paddleclas() {
    compare_resnet(50, "ResNet50_vd", 5);
}

#[test]
fn resnet18_vd_matches_paddleclas() {
    compare_resnet(18, "ResNet18_vd", 6);
}

#[test]
fn mobilenetv3_large_x1_0_matches_paddleclas() {
    compare_mobilenet(MobileNetV3Size::Large, 1.0, "MobileNetV3_large_x1_0", 7);
}

#[test]
fn mobilenetv3_small_x0_5_matches_paddleclas() {
    compare_mobilenet(MobileNetV3Size::Small, 0.5, "MobileNetV3_small_x0_5", 8);
}

#[test]
fn lcnet_x0_25_matches_paddleclas() {
    compare(0.25, "PPLCNet_x0_25", 11);
}

#[test]
fn lcnet_x1_0_matches_paddleclas() {
    compare(1.0, "PPLCNet_x1_0", 12);
}

/// 20 AdamW steps (global-norm clipping, warmup then cosine, no decay on rank-1 parameters)
/// of PP-LCNet x0.25 built by `build_train_step`, in the interpreter, against PaddleClas's
/// `PPLCNet_x0_25` trained by `paddle.optimizer.AdamW` from the same weights on the same
/// batches: the loss of every step agrees to 1e-4 relative (measured: at most 7e-6). Dropout
/// is 0 in both (Paddle's mask cannot be replayed); batch norm trains with batch statistics
/// in both. The same steps compiled by the LLVM backend (`CompiledRunner`) meet the same
/// bound. The batches are noise, so the loss does not fall; at batch 4 and lr 2e-3 the
/// two runs drift apart chaotically (1.3e-4 by step 10) from f32 rounding alone.
#[test]
fn lcnet_x0_25_trains_like_paddleclas() {
    use oar::passes::parallel::specialize;
    use oar::passes::training::{build_train_step, Schedule, TrainConfig};
    use oar::runtime::interp::{run_with_options, RunOptions};
    if !have_paddle() {
        return;
    }
    let (steps, batch, size, classes) = (20usize, 8usize, 32usize, 10u64);
    let (lr, warmup, clip, wd) = (1e-3, 5u64, 1.0, 0.01);
    let cfg = LcNetConfig {
        image_size: size as u64,
        class_num: classes,
        dropout: 0.0,
        ..LcNetConfig::new(0.25)
    };
    let model = cfg.build("lcnet_x0_25").expect("build");
    let model = specialize(&model, &BTreeMap::from([("N".to_string(), batch as u64)]))
        .expect("bind the batch");
    let mut tc = TrainConfig::new("adamw".parse().expect("adamw"));
    tc.optim.clip_global_norm = Some(clip);
    let step = build_train_step(&model, &tc).expect("training step");
    let initial = weights_for(&model, 21);
    let mut weights = initial.clone();
    weights.extend(step.init_state());

    let mut state = 5u64;
    let n_img = steps * batch * 3 * size * size;
    let images: Vec<f32> = (0..n_img).map(|_| noise(&mut state)).collect();
    let labels: Vec<i64> = (0..steps * batch)
        .map(|_| ((noise(&mut state) + 1.0) * 5.0) as i64 % classes as i64)
        .collect();
    let sched = Schedule::named("cosine", lr, warmup, steps as u64).expect("schedule");
    let img = size * size * 3 * batch;
    let inputs_at = |s: usize| {
        vec![
            HostTensor::f32(
                vec![batch, 3, size, size],
                images[s * img..(s + 1) * img].to_vec(),
            ),
            HostTensor::i64(vec![batch], labels[s * batch..(s + 1) * batch].to_vec()),
            HostTensor::f32(vec![], vec![sched.lr(s as u64 + 1) as f32]),
            HostTensor::f32(vec![], vec![(s + 1) as f32]),
        ]
    };
    let mut ours = Vec::new();
    for s in 0..steps {
        let r = run_with_options(
            &step.graph,
            &inputs_at(s),
            &weights,
            RunOptions::training(0, s as u64),
        )
        .expect("training step");
        ours.push(r.outputs[0].to_f64()[0]);
        weights.extend(r.state);
    }
    // The same steps compiled by the LLVM backend.
    let mut llvm_weights = initial.clone();
    llvm_weights.extend(step.init_state());
    let mut runner =
        oar::codegen::train::CompiledRunner::new(step.graph.clone(), &llvm_weights, 0, 2)
            .expect("the step compiles");
    let mut llvm = Vec::new();
    for s in 0..steps {
        let out = runner
            .run(&inputs_at(s), &mut llvm_weights, s as u64 + 1)
            .expect("compiled step");
        llvm.push(out.loss as f64);
    }

    let dir = scratch("paddle-lcnet-train");
    let p = |n: &str| dir.join(n);
    save_safetensors(&p("w.safetensors"), &initial).expect("write weights");
    write_npy(
        &p("x.npy"),
        &HostTensor::f32(vec![steps, batch, 3, size, size], images),
    )
    .expect("images");
    write_npy(&p("y.npy"), &HostTensor::i64(vec![steps, batch], labels)).expect("labels");
    let config = format!(
        r#"{{"class_num": {classes}, "lr": {lr}, "warmup": {warmup}, "weight_decay": {wd}, "clip": {clip}, "bn_momentum": 0.9}}"#
    );
    std::fs::write(p("cfg.json"), config).expect("config");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paddle/lcnet_train.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg("PPLCNet_x0_25")
        .args([
            p("w.safetensors"),
            p("x.npy"),
            p("y.npy"),
            p("cfg.json"),
            p("losses.npy"),
        ])
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "Paddle training failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let theirs = read_npy(&p("losses.npy")).expect("paddle losses").to_f64();
    assert_eq!(theirs.len(), steps);
    for (s, ((a, c), b)) in ours.iter().zip(&llvm).zip(&theirs).enumerate() {
        let rel = (a - b).abs() / b.abs().max(1e-12);
        let rel_llvm = (c - b).abs() / b.abs().max(1e-12);
        eprintln!(
            "step {:2}: oar {a:.6} oar-llvm {c:.6} paddle {b:.6} rel {rel:.1e} / {rel_llvm:.1e}",
            s + 1
        );
        assert!(
            rel <= 1e-4,
            "step {}: oar {a} vs paddle {b} (rel {rel:.2e})",
            s + 1
        );
        assert!(
            rel_llvm <= 1e-4,
            "step {}: oar-llvm {c} vs paddle {b} (rel {rel_llvm:.2e})",
            s + 1
        );
    }
}
