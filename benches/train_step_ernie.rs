//! One masked-LM training step (forward, backward, AdamW with global-norm clipping) of
//! ERNIE 3.0 Tiny (`ernie-3.0-tiny`, PaddleNLP's `ernie-3.0-tiny-pico-v2-zh`: 3 layers,
//! hidden 128, vocab 40000) at batch 16, sequence 128, about 15% of positions scored, dropout
//! 0.1: oar's step graph (`build_train_step`, `LossKind::MaskedLm`) compiled by the LLVM
//! backend (`CompiledRunner`) and in the reference interpreter, each against PaddleNLP's
//! `ErnieForMaskedLM` trained by PaddlePaddle's CPU build (benches/peer_ernie.py), in the
//! same run. `cargo bench --bench train_step_ernie`; `OAR_PROFILE=1` prints the compiled
//! step's slowest kernels instead (no peer, no interpreter); `OAR_BENCH_LLVM_ONLY=1` skips
//! the interpreter's row (about a minute a step).
//!
//! A step takes seconds on either side, so this bench times interleaved blocks itself
//! (benches/peer) instead of through criterion, whose 10-sample minimum would take many
//! minutes per side.

use oar::codegen::train::CompiledRunner;
use oar::models::ErnieConfig;
use oar::passes::parallel::specialize;
use oar::passes::training::{build_train_step, LossKind, TrainConfig};
use oar::runtime::interp::{run_with_options, RunOptions};
use oar::runtime::train::StepRunner;
use oar::runtime::HostTensor;
use std::collections::BTreeMap;

mod peer;
use peer::{Interleaved, Peer};

const THREADS: usize = 2;
const BATCH: usize = 16;
const SEQ: usize = 128;
/// Rounds × steps per round, each side.
const ROUNDS: usize = 3;
const REPS: usize = 1;
/// Compiled steps per round.
const LLVM_REPS: usize = 3;

/// The step's inputs by name: ids in [1, vocab), token types in [0, 4), positions 0..SEQ,
/// task 0, every 7th position scored.
fn inputs(names: &[String], vocab: i64) -> Vec<HostTensor> {
    let n = BATCH * SEQ;
    let ids = |f: &dyn Fn(usize) -> i64| HostTensor::i64(vec![BATCH, SEQ], (0..n).map(f).collect());
    names
        .iter()
        .map(|name| match name.as_str() {
            "input_ids" => ids(&|i| 1 + (i as i64 * 7919) % (vocab - 1)),
            "token_type_ids" => ids(&|i| (i / SEQ % 4) as i64),
            "position_ids" => ids(&|i| (i % SEQ) as i64),
            "task_type_ids" => ids(&|_| 0),
            "labels" => ids(&|i| {
                if i % 7 == 3 {
                    (i as i64 * 31) % vocab
                } else {
                    -100
                }
            }),
            "lr" => HostTensor::f32(vec![], vec![1e-4]),
            "step" => HostTensor::f32(vec![], vec![1.0]),
            other => panic!("unexpected step input {other}"),
        })
        .collect()
}

fn main() {
    let cfg = ErnieConfig::tiny();
    let model = cfg.build_masked_lm("ernie-3.0-tiny").expect("zoo model");
    let bindings = BTreeMap::from([
        ("N".to_string(), BATCH as u64),
        ("seq".to_string(), SEQ as u64),
    ]);
    let model = specialize(&model, &bindings).expect("bind batch and sequence");
    let mut tc = TrainConfig::new("adamw".parse().expect("adamw"));
    tc.loss = LossKind::MaskedLm;
    tc.optim.clip_global_norm = Some(1.0);
    let step = build_train_step(&model, &tc).expect("training step");
    let mut weights = oar::runtime::init::init_weights(&model, 0).expect("init");
    weights.extend(step.init_state());
    let inputs = inputs(&step.inputs, cfg.vocab as i64);
    let mut runner =
        CompiledRunner::new(step.graph.clone(), &weights, 0, THREADS).expect("the step compiles");
    if std::env::var_os("OAR_PROFILE").is_some() {
        profile(&mut runner, &inputs);
        return;
    }
    let mut llvm_weights = weights.clone();
    let mut kl = 0u64;
    let mut llvm_step = || {
        kl += 1;
        runner
            .run(&inputs, &mut llvm_weights, kl)
            .expect("compiled step runs");
    };
    llvm_step();
    let mut k = 0u64;
    let mut one_step = || {
        k += 1;
        let r = run_with_options(&step.graph, &inputs, &weights, RunOptions::training(0, k))
            .expect("step runs");
        weights.extend(r.state);
    };
    let Some(mut paddle) = Peer::start(&[
        "paddle_ernie_train",
        "ernie-3.0-tiny-pico-v2-zh",
        &BATCH.to_string(),
        &SEQ.to_string(),
        &THREADS.to_string(),
    ]) else {
        println!("PaddleNLP not available: run `python3 scripts/paddle_setup.py`");
        let tl = peer::median_time(LLVM_REPS, &mut llvm_step);
        let t = peer::median_time(REPS, &mut one_step);
        println!(
            "ERNIE 3.0 Tiny training step, batch {BATCH}, seq {SEQ}: oar llvm {:.0} ms, \
             oar interpreter {:.0} ms",
            tl * 1e3,
            t * 1e3
        );
        return;
    };
    let rl = Interleaved::measure(
        ROUNDS,
        LLVM_REPS,
        |reps| peer::median_time(reps, &mut llvm_step) * 1e3,
        &mut paddle,
    );
    match rl {
        Some(r) => {
            let (ours, theirs, ratio, lo, hi) = r.summary();
            println!(
                "\nERNIE 3.0 Tiny (pico-v2) masked-LM training step, batch {BATCH}, seq {SEQ}: \
                 oar llvm {ours:.0} ms, Paddle CPU ({THREADS} threads) {theirs:.0} ms, \
                 oar-llvm/paddle {ratio:.2} (rounds {lo:.2}–{hi:.2})"
            );
        }
        None => println!("the Paddle peer stopped answering"),
    }
    if std::env::var_os("OAR_BENCH_LLVM_ONLY").is_some() {
        return;
    }
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
                "\nERNIE 3.0 Tiny (pico-v2) masked-LM training step, batch {BATCH}, seq {SEQ}: \
                 oar interpreter {ours:.0} ms, Paddle CPU ({THREADS} threads) {theirs:.0} ms, \
                 oar/paddle {ratio:.2} (rounds {lo:.2}–{hi:.2})"
            );
        }
        None => println!("the Paddle peer stopped answering"),
    }
}

/// The compiled step's kernels, slowest first, each summed over 3 profiled steps.
fn profile(runner: &mut CompiledRunner, inputs: &[HostTensor]) {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    const RUNS: usize = 3;
    for _ in 0..RUNS {
        for (name, t) in runner.model().profile(inputs).expect("profile") {
            *sum.entry(name).or_default() += t / RUNS as f64;
        }
    }
    let mut times: Vec<(String, f64)> = sum.into_iter().collect();
    times.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = times.iter().map(|t| t.1).sum();
    println!(
        "compiled step: {:.1} ms in {} kernels",
        total * 1e3,
        times.len()
    );
    for (name, t) in times.iter().take(30) {
        println!("{:9.2} ms {:5.1}%  {name}", t * 1e3, 100.0 * t / total);
    }
}
