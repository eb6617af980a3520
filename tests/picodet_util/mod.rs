//! Weights for the PP-PicoDet tests (tests/zoo_picodet.rs, tests/paddle_picodet.rs).

use oar::runtime::io::weights::Weights;
use oar::runtime::{init::init_weights, TensorData};

/// Seeded weights redrawn so every layer matters: conv weights U(±√(6/fan_in)), biases and
/// batch-norm shifts and means U(±0.2), batch-norm scales and variances U(0.5, 1.5).
pub fn useful_weights(g: &oar::ir::Graph, seed: u64) -> Weights {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move |lo: f32, hi: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
    };
    let mut w = init_weights(g, seed).expect("init");
    for (name, t) in w.iter_mut() {
        let TensorData::F32(v) = &mut t.data else {
            continue;
        };
        let (lo, hi) = if t.shape.len() == 4 {
            let b = (6.0 / t.shape[1..].iter().product::<usize>() as f32).sqrt();
            (-b, b)
        } else if name.ends_with("_variance") || is_bn_scale(name) {
            (0.5, 1.5)
        } else {
            (-0.2, 0.2)
        };
        for x in v.iter_mut() {
            *x = uniform(lo, hi);
        }
    }
    w
}

/// Batch-norm scales: ESNet's `_batch_norm`, the head's `norm`, the neck's `bn`, `bn1`, `bn2`.
fn is_bn_scale(name: &str) -> bool {
    ["norm.weight", "bn.weight", "bn1.weight", "bn2.weight"]
        .iter()
        .any(|s| name.ends_with(s))
}
