//! ZeRO stages 1, 2 and 3 (`passes/src/training/zero/`): dp = 2 and 4 thread-ranks
//! (`LocalComm`), each building its own step, give step by step the single-process and the
//! plain data-parallel losses (1e-5 relative) and parameters, with AdamW and SGD with
//! momentum, global-norm clipping on (clip 0.5, far below the gradient norm, so the sharded
//! norm decides every update), on random token data. The optimizer state gathered back
//! from the parts ([`gather_full_state`], what a checkpoint writes) equals the
//! single-process state. A control run with every rank shifted to the next rank's part
//! must not match, so the comparisons can fail. Small buckets (2 KiB: a parameter often
//! spans two ranks' parts, and a rank's part can be padding only) and one big bucket.

mod dp_support;

use dp_support::{rand, Run};
use oar_ir::Graph;
use oar_passes::training::data_parallel::{build_data_parallel_step, DataParallel};
use oar_passes::training::{build_train_step, LossKind, TrainConfig, TrainStep};
use oar_runtime::init::init_weights;
use oar_runtime::{HostTensor, Weights};

const N: usize = 4;
const S: usize = 8;
const V: usize = 40;
const STEPS: u64 = 3;

fn model(batch: usize) -> Graph {
    dp_support::ernie_mlm(batch, S, V as u64, 16, 32)
}

fn config(opt: &str) -> TrainConfig {
    let optimizer = dp_support::optimizer(opt, 0.01);
    let mut tc = TrainConfig::new(optimizer);
    tc.loss = LossKind::MaskedLm;
    tc.optim.clip_global_norm = Some(0.5);
    tc
}

/// The global batch of step `k`: random ids and labels, about a third of the labels
/// ignored (so the ranks score different token counts).
fn batch(k: u64, lr: f32) -> Vec<HostTensor> {
    let mut seed = 1000 + k;
    let ids: Vec<i64> = (0..N * S)
        .map(|_| (rand(&mut seed) % V as u64) as i64)
        .collect();
    let labels: Vec<i64> = (0..N * S)
        .map(|_| match rand(&mut seed) % 3 {
            0 => -100,
            _ => (rand(&mut seed) % V as u64) as i64,
        })
        .collect();
    let pos: Vec<i64> = (0..N * S).map(|i| (i % S) as i64).collect();
    let t = |v: Vec<i64>| HostTensor::i64(vec![N, S], v);
    vec![
        t(ids),
        t(vec![0; N * S]),
        t(pos),
        t(vec![0; N * S]),
        t(labels),
        HostTensor::f32(vec![], vec![lr]),
        HostTensor::f32(vec![], vec![k as f32]),
    ]
}

fn single(step: &TrainStep, w0: &Weights, lr: f32) -> Run {
    dp_support::single(step, w0, STEPS, &|k| batch(k, lr))
}

fn ranks(rank_steps: &[TrainStep], w0: &Weights, lr: f32) -> Run {
    dp_support::ranks(rank_steps, w0, STEPS, N, &|k| batch(k, lr))
}

fn steps(opt: &str, dp: usize, stage: u8, bucket_bytes: usize, shift: usize) -> Vec<TrainStep> {
    (0..dp)
        .map(|r| {
            let d = DataParallel {
                bucket_bytes,
                ..DataParallel::zero(dp as u64, stage, ((r + shift) % dp) as u64)
            };
            build_data_parallel_step(&model(N / dp), &config(opt), &d).expect("ZeRO step")
        })
        .collect()
}

/// The largest relative loss difference and absolute difference over every tensor of
/// `want` (parameters and optimizer state), and how many tensors were compared.
fn diff(want: &Run, got: &Run) -> (f64, f64, usize) {
    let loss = want
        .0
        .iter()
        .zip(&got.0)
        .map(|(a, b)| ((a - b).abs() / a.abs().max(1e-3)) as f64)
        .fold(0.0, f64::max);
    let mut worst = 0.0f64;
    let mut n = 0;
    for (name, t) in &want.1 {
        let (Some(x), Some(y)) = (t.as_f32(), got.1.get(name).and_then(|u| u.as_f32())) else {
            continue;
        };
        assert_eq!(x.len(), y.len(), "{name}");
        for (a, b) in x.iter().zip(y) {
            worst = worst.max((a - b).abs() as f64);
        }
        n += 1;
    }
    (loss, worst, n)
}

fn check(opt: &str, lr: f32, tol: f64) {
    let w0 = init_weights(&model(N), 5).expect("weights");
    let one = build_train_step(&model(N), &config(opt)).expect("single step");
    let want = single(&one, &w0, lr);
    let slots = one.slots.len();
    for dp in [2usize, 4] {
        let plain = ranks(&steps(opt, dp, 0, 2048, 0), &w0, lr);
        let (l, w, _) = diff(&want, &plain);
        println!("{opt} dp{dp} plain: loss {l:.1e}, weights {w:.1e}");
        for stage in [1u8, 2, 3] {
            for bytes in [2048usize, 64 << 20] {
                let got = ranks(&steps(opt, dp, stage, bytes, 0), &w0, lr);
                let what = format!("{opt} dp{dp} zero-{stage} bucket {bytes}");
                let (l, w, n) = diff(&want, &got);
                println!("{what}: loss {l:.1e}, params and state {w:.1e} over {n} tensors");
                assert!(l <= 1e-5, "{what}: losses differ by {l:.1e} relative");
                assert!(w <= tol, "{what}: weights differ by {w:.1e}");
                assert!(n >= 20 + slots, "{what}: only {n} tensors compared");
                let (_, wp, _) = diff(&plain, &got);
                assert!(wp <= tol, "{what}: differs from plain dp by {wp:.1e}");
            }
        }
    }
}

// AdamW divides by √v: a near-zero gradient's rounding noise (the sums' order differs
// between one process, plain dp and ZeRO) moves a weight by up to ~lr, so weights compare
// to 1e-4 absolutely at lr 3e-3 (as the plain data-parallel test); SGD with momentum has
// no such amplification and compares to 1e-6.
#[test]
fn zero_adamw_matches_single_process_and_plain_dp() {
    check("adamw", 3e-3, 1e-4);
}

#[test]
fn zero_sgd_momentum_matches_single_process_and_plain_dp() {
    check("sgd", 0.1, 1e-6);
}

/// Negative control: each rank updating the next rank's part (a wrong partition offset)
/// must break the equality the tests above check.
#[test]
fn a_wrong_partition_offset_is_caught() {
    let w0 = init_weights(&model(N), 5).expect("weights");
    let want = single(
        &build_train_step(&model(N), &config("sgd")).expect("single step"),
        &w0,
        0.1,
    );
    for stage in [1u8, 2, 3] {
        let got = ranks(&steps("sgd", 2, stage, 2048, 1), &w0, 0.1);
        let (l, w, _) = diff(&want, &got);
        assert!(
            l > 1e-5 || w > 1e-3,
            "zero-{stage} with shifted parts still matched (loss {l:.1e}, weights {w:.1e})"
        );
    }
}

/// Bytes per rank against the planner's ZeRO memory formula
/// (`passes/src/parallel/step_cost.rs`: parameters ÷dp at stage 3, gradients ÷dp from
/// stage 2, optimizer state ÷dp from stage 1), with f32 everywhere and Adam's two moments (the
/// planner's mixed-precision 2/2/12 bytes become 4/4/8). Padding adds under dp elements per
/// bucket.
#[test]
fn bytes_per_rank_follow_the_planner_formula() {
    for dp in [2u64, 4] {
        for stage in [1u8, 2, 3] {
            let step = &steps("adamw", dp as usize, stage, 2048, 0)[0];
            let l = step.zero.as_ref().expect("layout");
            let p = l.numel() as f64;
            let got = l.bytes_per_rank();
            let d = dp as f64;
            let (pd, gd, od) = match stage {
                1 => (1.0, 1.0, d),
                2 => (1.0, d, d),
                _ => (d, d, d),
            };
            let pad = (4 * dp * l.buckets.len() as u64) as f64;
            let close = |got: u64, want: f64, what: &str| {
                assert!(
                    (got as f64 - want).abs() <= 2.0 * pad,
                    "dp{dp} zero-{stage} {what}: {got} bytes, formula {want}"
                );
            };
            close(got.params, 4.0 * p / pd, "parameters");
            close(got.grads, 4.0 * p / gd, "gradients");
            close(got.optimizer, 8.0 * p / od, "optimizer state");
            let full = l.replicated_bytes();
            assert_eq!(full.optimizer, 2 * full.params);
            assert_eq!(full.params, 4 * l.numel());
            assert!(got.optimizer * dp >= full.optimizer);
        }
    }
}

#[test]
fn unsupported_combinations_are_refused() {
    let m = model(N / 2);
    let lamb = TrainConfig {
        optim: oar_passes::training::OptimConfig::new("lamb".parse().expect("lamb")),
        ..config("adamw")
    };
    let mut acc = config("adamw");
    acc.optim.accumulate = 2;
    let mut rc = config("adamw");
    rc.recompute.mode = "full".parse().expect("full");
    for (cfg, d, what) in [
        (lamb, DataParallel::zero(2, 1, 0), "LAMB"),
        (acc, DataParallel::zero(2, 2, 0), "accumulation"),
        (
            rc,
            DataParallel::zero(2, 3, 0),
            "stage 3 with recomputation",
        ),
        (config("adamw"), DataParallel::zero(2, 5, 0), "stage 5"),
        (config("adamw"), DataParallel::zero(2, 1, 2), "rank 2 of 2"),
    ] {
        let e = build_data_parallel_step(&m, &cfg, &d);
        assert!(e.is_err(), "{what} must be refused");
    }
}
