//! Neural-network modules as `Config` structs with defaults and an `init` that registers
//! named parameters (burn-style; no backend type parameter). Each module's `forward` is
//! built from `Tensor` methods.

mod attention;
mod conv;
mod detect;
mod linear;
mod norm;

pub use attention::{
    MultiHeadAttention, MultiHeadAttentionConfig, TransformerEncoderLayer,
    TransformerEncoderLayerConfig,
};
pub use conv::{
    Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, SeBlock, SeBlockConfig,
};
pub use detect::{
    add_coord, anchor_points, distance_to_box, gfl_integral, spp, AnchorPoints, DropBlock,
};
pub use linear::{Dropout, Embedding, EmbeddingConfig, Linear, LinearConfig};
pub use norm::{BatchNorm2d, BatchNorm2dConfig, LayerNorm, LayerNormConfig};

use crate::tensor::Tensor;
use oar_ir::op::Init;

/// Weight initialisation schemes; fan-based ones resolve to a concrete distribution from
/// the parameter's fan-in and fan-out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Initializer {
    /// U(±√(6 / (fan_in + fan_out))) (Glorot & Bengio).
    XavierUniform,
    /// N(0, √(2 / fan_in)) (He et al., for ReLU-family activations).
    KaimingNormal,
    /// U(±1/√fan_in) (the default of PyTorch and Paddle linear and conv layers).
    FanInUniform,
    Normal {
        mean: f64,
        std: f64,
    },
    Constant(f64),
}

impl Initializer {
    /// The concrete distribution for a parameter with these fans.
    pub fn resolve(self, fan_in: u64, fan_out: u64) -> Init {
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        match self {
            Initializer::XavierUniform => {
                let b = (6.0 / (fi + fo)).sqrt();
                Init::Uniform { low: -b, high: b }
            }
            Initializer::KaimingNormal => Init::Normal {
                mean: 0.0,
                std: (2.0 / fi).sqrt(),
            },
            Initializer::FanInUniform => {
                let b = 1.0 / fi.sqrt();
                Init::Uniform { low: -b, high: b }
            }
            Initializer::Normal { mean, std } => Init::Normal { mean, std },
            Initializer::Constant(v) => Init::Constant(v),
        }
    }
}

/// Activations usable as a module setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    Relu6,
    HardSwish,
    /// Paddle's hardsigmoid: slope 1/6, offset 0.5.
    HardSigmoid,
    Sigmoid,
    Gelu,
    GeluTanh,
    Silu,
    Tanh,
}

impl Activation {
    /// Applies the activation.
    #[track_caller]
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Identity => x.clone(),
            Activation::Relu => x.relu(),
            Activation::Relu6 => x.relu6(),
            Activation::HardSwish => x.hardswish(),
            Activation::HardSigmoid => x.hardsigmoid(1.0 / 6.0, 0.5),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}
