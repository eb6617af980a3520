//! Training semantics: run options (mode, seed, step), dropout's counter-based mask, the
//! training form of batch_norm, and state updates written back into the weights.
//!
//! Dropout's mask is a pure function of `(seed, step, node name, element index)`: the keep
//! decision for element `i` of node `name` at step `s` is `u(i) >= p`, where `u(i)` is the
//! top 53 bits of `splitmix64(key + (i + 1) * γ)` scaled to `[0, 1)`, `key =
//! mix(mix(mix(seed) ^ s) ^ fnv1a64(name))` and γ is splitmix64's increment. Nothing
//! depends on evaluation order, threads or earlier draws, so a run is reproducible and every
//! rank that evaluates the same node at the same step draws the same mask.

use super::float::{by_float, floats, Real};
use super::{run_with, InterpError, Res, RunCtx};
use crate::io::weights::Weights;
use crate::tensor::HostTensor;
use oar_ir::op::DropoutMode;
use oar_ir::{ExecMode, Graph};

/// How a run treats training-only semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOptions {
    /// Inference (dropout deterministic) or training (dropout draws its mask).
    pub mode: ExecMode,
    /// Seed of dropout's random stream.
    pub seed: u64,
    /// Training step: each step draws a fresh mask.
    pub step: u64,
    /// This rank's index among equal, contiguous shards of the batch (data parallelism; 0
    /// on one process). A rank's tensor of `n` elements is elements `shard·n ..` of the
    /// single-process tensor when its leading axis is the batch, so its dropout masks
    /// continue the single-process stream there and a data-parallel run drops exactly what
    /// one process would.
    pub batch_shard: u64,
}

impl RunOptions {
    /// Training at `step` of the stream `seed`.
    pub fn training(seed: u64, step: u64) -> RunOptions {
        RunOptions {
            mode: ExecMode::Training,
            seed,
            step,
            batch_shard: 0,
        }
    }
}

/// What a run returns: the model's outputs and the new values of updated parameters.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub outputs: Vec<HostTensor>,
    /// (parameter name, new value), in the graph's `update` order.
    pub state: Vec<(String, HostTensor)>,
}

/// Runs `graph` with `opts`. Dropout follows `opts.mode`; a training-form batch_norm (only in
/// training graphs) always normalises with batch statistics. State updates come back
/// separately from the outputs; the weights are not changed (see [`train_step`]).
pub fn run_with_options(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
    opts: RunOptions,
) -> Result<RunResult, InterpError> {
    oar_ir::verify(graph)?;
    let mut outputs = run_with(graph, inputs, weights, &RunCtx::of(graph, None, opts))?;
    let state_values = outputs.split_off(graph.model_outputs().len());
    let state = graph.state.iter().cloned().zip(state_values).collect();
    Ok(RunResult { outputs, state })
}

/// One training step's forward: runs with `opts` and writes the state updates (new running
/// statistics) back into `weights`. Returns the model's outputs.
pub fn train_step(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &mut Weights,
    opts: RunOptions,
) -> Result<Vec<HostTensor>, InterpError> {
    let r = run_with_options(graph, inputs, weights, opts)?;
    for (name, value) in r.state {
        weights.insert(name, value);
    }
    Ok(r.outputs)
}

/// splitmix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits: a hash of the node name that is the same on every platform and run.
fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The stream key of node `name` at `opts.step`.
fn stream_key(opts: &RunOptions, name: &str) -> u64 {
    mix(mix(mix(opts.seed) ^ opts.step) ^ fnv1a64(name))
}

/// Uniform in `[0, 1)` for element `i` of the stream `key`.
fn uniform(key: u64, i: u64) -> f64 {
    let bits = mix(key.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)));
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Whether element `i` of node `name` survives dropout with probability `p` at this step.
pub fn dropout_keep(opts: &RunOptions, name: &str, p: f64, i: u64) -> bool {
    uniform(stream_key(opts, name), i) >= p
}

/// [`dropout_keep`] for elements `0..n` at once, the stream key hashed once: the mask the
/// compiled executor draws on the host.
pub fn dropout_keep_mask(opts: &RunOptions, name: &str, p: f64, n: usize) -> Vec<bool> {
    let key = stream_key(opts, name);
    let first = opts.batch_shard * n as u64;
    (first..first + n as u64)
        .map(|i| uniform(key, i) >= p)
        .collect()
}

/// Dropout whose mask is that of node `name` (its own, or the forward node a backward
/// replays): at inference the mode's fixed scale, in training the seeded mask.
pub(super) fn dropout(
    x: &HostTensor,
    p: f64,
    mode: DropoutMode,
    name: &str,
    opts: &RunOptions,
) -> Res<HostTensor> {
    by_float!(x, dropout_t(x, p, mode, name, opts))
}

fn dropout_t<T: Real>(
    x: &HostTensor,
    p: f64,
    mode: DropoutMode,
    name: &str,
    opts: &RunOptions,
) -> Res<HostTensor> {
    let xv = floats::<T>(x)?;
    let out = match opts.mode {
        ExecMode::Inference => {
            let k = T::c(mode.inference_scale(p));
            xv.iter().map(|&v| v * k).collect()
        }
        ExecMode::Training => {
            // p = 1 drops everything (Paddle returns zeros rather than 0 · ∞).
            let k = match mode {
                DropoutMode::UpscaleInTrain if p < 1.0 => T::c(1.0 / (1.0 - p)),
                DropoutMode::UpscaleInTrain => T::zero(),
                DropoutMode::DownscaleInInfer => T::one(),
            };
            let key = stream_key(opts, name);
            let first = opts.batch_shard * xv.len() as u64;
            xv.iter()
                .enumerate()
                .map(|(i, &v)| {
                    if uniform(key, first + i as u64) >= p {
                        v * k
                    } else {
                        T::zero()
                    }
                })
                .collect()
        }
    };
    Ok(T::tensor(x.shape.clone(), out))
}

/// The training form of batch_norm: normalises with the batch mean and biased variance over
/// every dim but the channel (dim 1) and returns `[y, new running mean, new running var]`
/// with `new = momentum * running + (1 - momentum) * batch` (Paddle's convention).
pub(super) fn batch_norm_train(
    x: &HostTensor,
    p: [&HostTensor; 4],
    eps: f64,
    momentum: f64,
) -> Res<Vec<HostTensor>> {
    by_float!(x, batch_norm_train_t(x, p, eps, momentum))
}

fn batch_norm_train_t<T: Real>(
    x: &HostTensor,
    p: [&HostTensor; 4],
    eps: f64,
    momentum: f64,
) -> Res<Vec<HostTensor>> {
    let xv = floats::<T>(x)?;
    let [scale, bias, run_mean, run_var] = [
        floats::<T>(p[0])?,
        floats::<T>(p[1])?,
        floats::<T>(p[2])?,
        floats::<T>(p[3])?,
    ];
    if x.shape.len() < 2 {
        return super::err("batch_norm needs rank ≥ 2");
    }
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let count = (xv.len() / c.max(1)) as f64;
    let chan = |i: usize| (i / inner.max(1)) % c;
    // Sums in f64 so the statistics do not depend on the batch size's rounding.
    let mut mean = vec![0f64; c];
    for (i, &v) in xv.iter().enumerate() {
        mean[chan(i)] += v.f64();
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0f64; c];
    for (i, &v) in xv.iter().enumerate() {
        var[chan(i)] += (v.f64() - mean[chan(i)]).powi(2);
    }
    var.iter_mut().for_each(|s| *s /= count);
    let y = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = chan(i);
            let norm = (v.f64() - mean[ch]) / (var[ch] + eps).sqrt();
            T::c(norm * scale[ch].f64() + bias[ch].f64())
        })
        .collect();
    let update = |running: &[T], batch: &[f64]| -> Vec<T> {
        running
            .iter()
            .zip(batch)
            .map(|(&r, &b)| T::c(momentum * r.f64() + (1.0 - momentum) * b))
            .collect()
    };
    Ok(vec![
        T::tensor(x.shape.clone(), y),
        T::tensor(vec![c], update(run_mean, &mean)),
        T::tensor(vec![c], update(run_var, &var)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_is_a_pure_function_of_seed_step_name_and_index() {
        let a = RunOptions::training(7, 3);
        let keep = |o: &RunOptions, name: &str| -> Vec<bool> {
            (0..256).map(|i| dropout_keep(o, name, 0.5, i)).collect()
        };
        assert_eq!(keep(&a, "drop"), keep(&a, "drop"));
        assert_ne!(keep(&a, "drop"), keep(&a, "drop2"));
        assert_ne!(keep(&a, "drop"), keep(&RunOptions::training(7, 4), "drop"));
        assert_ne!(keep(&a, "drop"), keep(&RunOptions::training(8, 3), "drop"));
        // Roughly p of the elements are dropped.
        let kept = (0..10_000)
            .filter(|&i| dropout_keep(&a, "d", 0.3, i))
            .count();
        assert!(
            (6_700..7_300).contains(&kept),
            "kept {kept} of 10000 at p = 0.3"
        );
    }
}
