//! One training step (forward, backward, AdamW with global-norm clipping) of PP-LCNet x0.25
//! at batch 32, 64×64, 10 classes: oar's step graph (`build_train_step`) in the reference
//! interpreter against PaddleClas's `PPLCNet_x0_25` trained by PaddlePaddle's CPU build, in
//! the same run. `cargo bench --bench train_step`. The interpreter is the only executor of
//! training steps so far (the LLVM backend does not compile state updates yet).

use criterion::{criterion_group, criterion_main, Criterion};
use oar::models::LcNetConfig;
use oar::passes::parallel::specialize;
use oar::passes::training::{build_train_step, TrainConfig};
use oar::runtime::interp::{run_with_options, RunOptions};
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
    let mut k = 0u64;
    let mut one_step = || {
        k += 1;
        let r = run_with_options(&step.graph, &inputs, &weights, RunOptions::training(0, k))
            .expect("step runs");
        weights.extend(r.state);
    };
    c.bench_function("train_step/lcnet_x0_25_b32_64px", |b| b.iter(&mut one_step));
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
    let r = Interleaved::measure(
        ROUNDS,
        REPS,
        |reps| peer::median_time(reps, &mut one_step) * 1e3,
        &mut paddle,
    );
    match r {
        Some(r) => {
            let (ours, theirs, ratio, lo, hi) = r.summary();
            println!(
                "\nPP-LCNet x0.25 training step, batch {BATCH}, {SIZE}x{SIZE}: oar interpreter \
                 {ours:.0} ms, Paddle CPU ({THREADS} threads) {theirs:.0} ms, oar/paddle \
                 {ratio:.1} (rounds {lo:.1}–{hi:.1})"
            );
        }
        None => println!("the Paddle peer stopped answering"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
