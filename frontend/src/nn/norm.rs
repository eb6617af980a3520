//! BatchNorm2d and LayerNorm.

use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use oar_ir::op::Init;

/// Inference batch norm over channels of NCHW; Paddle's parameter names.
#[derive(Debug, Clone)]
pub struct BatchNorm2dConfig {
    pub channels: u64,
    pub eps: f64,
}

impl BatchNorm2dConfig {
    pub fn new(channels: u64) -> Self {
        BatchNorm2dConfig {
            channels,
            eps: 1e-5,
        }
    }

    /// Registers `<name>.{weight,bias,_mean,_variance}`.
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> BatchNorm2d {
        let c = [self.channels];
        b.scope(name, || BatchNorm2d {
            weight: b.param("weight", &c, Init::Constant(1.0)),
            bias: b.param("bias", &c, Init::Constant(0.0)),
            mean: b.param("_mean", &c, Init::Constant(0.0)),
            var: b.param("_variance", &c, Init::Constant(1.0)),
            eps: self.eps,
        })
    }
}

#[derive(Clone)]
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub mean: Tensor,
    pub var: Tensor,
    pub eps: f64,
}

impl BatchNorm2d {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.batch_norm(&self.weight, &self.bias, &self.mean, &self.var, self.eps)
    }
}

/// Layer norm over the last dim.
#[derive(Debug, Clone)]
pub struct LayerNormConfig {
    pub dim: u64,
    pub eps: f64,
}

impl LayerNormConfig {
    pub fn new(dim: u64) -> Self {
        LayerNormConfig { dim, eps: 1e-5 }
    }

    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Registers `<name>.{weight,bias}`.
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> LayerNorm {
        b.scope(name, || LayerNorm {
            weight: b.param("weight", &[self.dim], Init::Constant(1.0)),
            bias: b.param("bias", &[self.dim], Init::Constant(0.0)),
            eps: self.eps,
        })
    }
}

#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(&self.weight, &self.bias, -1, self.eps)
    }
}
