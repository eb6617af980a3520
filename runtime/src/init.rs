//! Materialises parameters from their initializers, deterministically: each parameter draws
//! from its own ChaCha8 stream seeded by the run seed and the parameter's name, so adding or
//! reordering parameters does not change the others' values.

use crate::io::weights::Weights;
use crate::tensor::HostTensor;
use oar_ir::op::{Init, Op};
use oar_ir::Graph;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// The initializer used for parameters that declare none.
pub const DEFAULT_INIT: Init = Init::Normal {
    mean: 0.0,
    std: 0.02,
};

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across platforms and releases, unlike std's hasher.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An initializer whose parameters describe no distribution.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("normal({mean}, {std}): {source}")]
    Normal {
        mean: f64,
        std: f64,
        source: rand_distr::NormalError,
    },
    #[error("uniform({low}, {high}) needs low < high")]
    Uniform { low: f64, high: f64 },
}

/// A parameter that cannot be materialised.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("parameter `{param}` has a symbolic shape {ty}")]
    SymbolicShape { param: String, ty: String },
    #[error("parameter `{param}`: {source}")]
    Sample { param: String, source: SampleError },
}

/// Samples `n` values from an initializer.
pub fn sample(init: &Init, n: usize, seed: u64, name: &str) -> Result<Vec<f32>, SampleError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash(name));
    Ok(match *init {
        Init::Constant(v) => vec![v as f32; n],
        Init::Normal { mean, std } => {
            let d = Normal::new(mean, std.abs()).map_err(|source| SampleError::Normal {
                mean,
                std,
                source,
            })?;
            (0..n).map(|_| d.sample(&mut rng) as f32).collect()
        }
        Init::Uniform { low, high } => {
            if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less) {
                return Err(SampleError::Uniform { low, high });
            }
            let d = Uniform::new(low, high);
            (0..n).map(|_| d.sample(&mut rng) as f32).collect()
        }
    })
}

/// Creates every parameter of `graph` from its initializer and `seed`.
pub fn init_weights(graph: &Graph, seed: u64) -> Result<Weights, InitError> {
    let mut w = Weights::new();
    for n in graph.nodes() {
        if let Op::Param(p) = &n.op {
            let shape = n.outputs[0]
                .shape
                .as_static()
                .ok_or_else(|| InitError::SymbolicShape {
                    param: p.name.clone(),
                    ty: n.outputs[0].to_string(),
                })?;
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let numel = shape.iter().product();
            let data = sample(
                p.init.as_ref().unwrap_or(&DEFAULT_INIT),
                numel,
                seed,
                &p.name,
            )
            .map_err(|source| InitError::Sample {
                param: p.name.clone(),
                source,
            })?;
            w.insert(p.name.clone(), HostTensor::f32(shape, data));
        }
    }
    Ok(w)
}
