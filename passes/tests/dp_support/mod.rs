//! Helpers shared by the ZeRO and SyncBatchNorm tests: seeded random numbers, a rank's
//! shard of a global batch, and a step run in one process or on thread-ranks (`LocalComm`).

// Each test crate uses a different subset of the helpers.
#![allow(dead_code)]

use oar_passes::training::zero::{gather_full_state, partition_state};
use oar_passes::training::TrainStep;
use oar_runtime::comm::{Communicator, LocalComm};
use oar_runtime::interp::{run_on_rank, run_with_options, RunOptions};
use oar_runtime::{HostTensor, Weights};

/// Losses per step and the final weights (parameters and optimizer state).
pub type Run = (Vec<f32>, Weights);

/// The global batch of step `k` (model inputs, labels, lr, step).
pub type Batch<'a> = &'a (dyn Fn(u64) -> Vec<HostTensor> + Sync);

/// A seeded generator (splitmix64).
pub fn rand(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rank `r`'s contiguous slice of every input whose leading axis is the global batch `n`.
pub fn shard(inputs: &[HostTensor], n: usize, r: usize, dp: usize) -> Vec<HostTensor> {
    inputs
        .iter()
        .map(|t| match t.shape.first() {
            Some(&b) if b == n => t.narrow(0, r * n / dp, n / dp),
            _ => t.clone(),
        })
        .collect()
}

/// `steps` single-process steps.
pub fn single(step: &TrainStep, w0: &Weights, steps: u64, batch: Batch) -> Run {
    let mut w = w0.clone();
    w.extend(step.init_state());
    let mut losses = Vec::new();
    for k in 1..=steps {
        let r = run_with_options(&step.graph, &batch(k), &w, RunOptions::training(1, k))
            .expect("single-process step");
        losses.push(r.outputs[0].as_f32().expect("loss")[0]);
        w.extend(r.state);
    }
    (losses, w)
}

/// One rank's run of `steps` steps on its shard of the global batch of `n`; ZeRO parts are
/// sliced from the (initial) full state first and gathered back at the end, as the CLI's
/// runner does around a checkpoint.
pub fn rank_run(
    step: &TrainStep,
    w0: &Weights,
    (steps, n, batch): (u64, usize, Batch),
    (r, dp): (usize, usize),
    comm: &dyn Communicator,
) -> Run {
    let mut w = w0.clone();
    match &step.zero {
        Some(l) => partition_state(l, &mut w).expect("partition"),
        None => w.extend(step.init_state()),
    }
    let mut losses = Vec::new();
    let outs = step.graph.model_outputs().len();
    for k in 1..=steps {
        let x = shard(&batch(k), n, r, dp);
        let mut o = run_on_rank(&step.graph, &x, &w, comm).expect("rank step");
        losses.push(o[0].as_f32().expect("loss")[0]);
        let state = o.split_off(outs);
        w.extend(step.graph.state.iter().cloned().zip(state));
    }
    if let Some(l) = &step.zero {
        gather_full_state(l, &mut w, comm).expect("gather");
    }
    (losses, w)
}

/// Runs `rank_steps[r]` on thread-rank r over a global batch of `n`; every rank must
/// report the same losses; returns rank 0's run.
pub fn ranks(rank_steps: &[TrainStep], w0: &Weights, steps: u64, n: usize, batch: Batch) -> Run {
    let dp = rank_steps.len();
    let comms = LocalComm::group(&(0..dp as u64).collect::<Vec<_>>());
    let per_rank: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .zip(rank_steps)
            .enumerate()
            .map(|(r, (c, step))| {
                s.spawn(move || rank_run(step, w0, (steps, n, batch), (r, dp), c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    });
    for (r, (l, _)) in per_rank.iter().enumerate() {
        assert_eq!(
            *l, per_rank[0].0,
            "rank {r} reports another loss than rank 0"
        );
    }
    per_rank.into_iter().next().expect("rank 0")
}

/// `g` with its symbols bound (`N` = batch, and `seq` when given).
pub fn specialized(g: &oar_ir::Graph, batch: usize, seq: Option<usize>) -> oar_ir::Graph {
    let mut bindings = std::collections::BTreeMap::new();
    bindings.insert("N".to_string(), batch as u64);
    if let Some(s) = seq {
        bindings.insert("seq".to_string(), s as u64);
    }
    oar_passes::parallel::specialize(g, &bindings).expect("specialize")
}

/// A small ERNIE masked-LM (dropout 0): `layers` layers of `hidden` width, 2 heads, FFN
/// `ffn`, vocabulary `vocab`, sequence `seq`, specialized to `batch`.
pub fn ernie_mlm(batch: usize, seq: usize, vocab: u64, hidden: u64, ffn: u64) -> oar_ir::Graph {
    let cfg = oar_models::ErnieConfig {
        vocab,
        max_positions: seq as u64,
        dropout: 0.0,
        universal: oar_models::ernie::StackConfig::new(2, hidden, 2, ffn),
        ..oar_models::ErnieConfig::nano()
    };
    let m = cfg.build_masked_lm("mlm").expect("build ERNIE");
    specialized(&m, batch, Some(seq))
}

/// SGD with momentum 0.9 and weight decay `wd` for "sgd", else AdamW with its defaults.
pub fn optimizer(name: &str, wd: f64) -> oar_passes::training::Optimizer {
    match name {
        "sgd" => oar_passes::training::Optimizer::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: wd,
        },
        _ => "adamw".parse().expect("adamw"),
    }
}
