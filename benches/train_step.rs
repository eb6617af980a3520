//! One training step (forward, backward, AdamW with global-norm clipping) of PP-LCNet x0.25
//! at batch 32, 64×64, 10 classes: oar's step graph (`build_train_step`) in the reference
//! interpreter against PaddleClas's `PPLCNet_x0_25` trained by PaddlePaddle's CPU build, in
//! the same run, and the same step compiled by the LLVM backend (`CompiledRunner`).
//! `cargo bench --bench train_step`; `OAR_PROFILE=1` also prints the compiled step's
//! slowest kernels; `OAR_BENCH_LLVM_ONLY=1` skips the interpreter's rows (seconds a step).

use criterion::{criterion_group, criterion_main, Criterion};
use oar::codegen::train::CompiledRunner;
use oar::models::LcNetConfig;
use oar::passes::parallel::specialize;
use oar::passes::training::{build_train_step, TrainConfig};
use oar::runtime::interp::{run_with_options, RunOptions};
use oar::runtime::train::StepRunner;
use oar::runtime::HostTensor;
use std::collections::BTreeMap;

mod peer;
use peer::{Interleaved, Peer};

const THREADS: usize = 2;
const BATCH: usize = 32;
const SIZE: usize = 64;
/// Rounds × steps per round, each side (a step takes about a second in the interpreter).
const ROUNDS: usize = 3;
const REPS: usize = 2;

fn bench(c: &mut Criterion) {
    let cfg = LcNetConfig {
        image_size: SIZE as u64,
        class_num: 10,
        ..LcNetConfig::new(0.25)
    };
    let model = cfg.build("lcnet_x0_25").expect("zoo model");
    let model = specialize(&model, &BTreeMap::from([("N".to_string(), BATCH as u64)]))
        .expect("bind the batch");
    let mut tc = TrainConfig::new("adamw".parse().expect("adamw"));
    tc.optim.clip_global_norm = Some(1.0);
    let step = build_train_step(&model, &tc).expect("training step");
    let mut weights = oar::runtime::init::init_weights(&step.graph, 0).expect("init");
    let n = BATCH * 3 * SIZE * SIZE;
    let inputs = vec![
        HostTensor::f32(
            vec![BATCH, 3, SIZE, SIZE],
            (0..n).map(|i| (i * 31 % 255) as f32 / 255.0).collect(),
        ),
        HostTensor::i64(vec![BATCH], (0..BATCH as i64).map(|i| i % 10).collect()),
        HostTensor::f32(vec![], vec![1e-3]),
        HostTensor::f32(vec![], vec![1.0]),
    ];
    let initial = weights.clone();
    let mut k = 0u64;
    let mut one_step = || {
        k += 1;
        let r = run_with_options(&step.graph, &inputs, &weights, RunOptions::training(0, k))
            .expect("step runs");
        weights.extend(r.state);
    };
    let mut llvm_weights = initial.clone();
    let mut runner =
        CompiledRunner::new(step.graph.clone(), &initial, 0, THREADS).expect("the step compiles");
    let mut kl = 0u64;
    let mut llvm_step = || {
        kl += 1;
        runner
            .run(&inputs, &mut llvm_weights, kl)
            .expect("compiled step runs");
    };
    c.bench_function("train_step/lcnet_x0_25_b32_64px/llvm", |b| {
        b.iter(&mut llvm_step)
    });
    let llvm_ms = peer::median_time(5, &mut llvm_step) * 1e3;
    if std::env::var_os("OAR_PROFILE").is_some() {
        // The same step with every elementwise op in its own kernel, for comparison.
        for inplace in [false, true] {
            if inplace {
                std::env::remove_var("OAR_CODEGEN_NO_INPLACE");
            } else {
                std::env::set_var("OAR_CODEGEN_NO_INPLACE", "1");
            }
            let mut prof = CompiledRunner::new(step.graph.clone(), &initial, 0, THREADS)
                .expect("the step compiles");
            let times = prof.model().profile(&inputs).expect("profile");
            let total: f64 = times.iter().map(|t| t.1).sum();
            let mut w = initial.clone();
            let mut s = 0u64;
            let step_ms = peer::median_time(5, &mut || {
                s += 1;
                prof.run(&inputs, &mut w, s).expect("compiled step runs");
            }) * 1e3;
            println!(
                "compiled step ({}): {step_ms:.0} ms a step; profiled {:.1} ms in {} kernels",
                if inplace {
                    "elementwise fused in place"
                } else {
                    "one kernel per op"
                },
                total * 1e3,
                times.len()
            );
            for (name, t) in times.iter().take(if inplace { 25 } else { 0 }) {
                println!("{:8.2} ms  {name}", t * 1e3);
            }
        }
    }
    let llvm_only = std::env::var_os("OAR_BENCH_LLVM_ONLY").is_some();
    if !llvm_only {
        c.bench_function("train_step/lcnet_x0_25_b32_64px", |b| b.iter(&mut one_step));
    }
    let Some(mut paddle) = Peer::start(&[
        "paddle_train",
        "PPLCNet_x0_25",
        &BATCH.to_string(),
        &SIZE.to_string(),
        &THREADS.to_string(),
    ]) else {
        println!("PaddlePaddle not available: run `python3 scripts/paddle_setup.py`");
        return;
    };
    let r = if llvm_only {
        None
    } else {
        Interleaved::measure(
            ROUNDS,
            REPS,
            |reps| peer::median_time(reps, &mut one_step) * 1e3,
            &mut paddle,
        )
    };
    let rl = Interleaved::measure(
        ROUNDS,
        REPS * 5,
        |reps| peer::median_time(reps, &mut llvm_step) * 1e3,
        &mut paddle,
    );
    match rl {
        Some(r) => {
            let (ours, theirs, ratio, lo, hi) = r.summary();
            println!(
                "\nPP-LCNet x0.25 training step, batch {BATCH}, {SIZE}x{SIZE}: oar llvm \
                 {ours:.0} ms, Paddle CPU ({THREADS} threads) {theirs:.0} ms, oar-llvm/paddle \
                 {ratio:.2} (rounds {lo:.2}–{hi:.2})"
            );
        }
        None => println!("the Paddle peer stopped answering (llvm: {llvm_ms:.0} ms)"),
    }
    match r {
        Some(r) => {
            let (ours, theirs, ratio, lo, hi) = r.summary();
            println!(
                "\nPP-LCNet x0.25 training step, batch {BATCH}, {SIZE}x{SIZE}: oar interpreter \
                 {ours:.0} ms, Paddle CPU ({THREADS} threads) {theirs:.0} ms, oar/paddle \
                 {ratio:.1} (rounds {lo:.1}–{hi:.1})"
            );
        }
        None if llvm_only => {}
        None => println!("the Paddle peer stopped answering"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
