//! Linear, Embedding, Dropout.

use super::Initializer;
use crate::builder::ModelBuilder;
use crate::tensor::Tensor;

/// `y = x·W + b` with `W: [in, out]` (Paddle's layout).
#[derive(Debug, Clone)]
pub struct LinearConfig {
    pub in_features: u64,
    pub out_features: u64,
    pub bias: bool,
    pub weight_init: Initializer,
}

impl LinearConfig {
    pub fn new(in_features: u64, out_features: u64) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
            weight_init: Initializer::XavierUniform,
        }
    }

    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    pub fn with_init(mut self, init: Initializer) -> Self {
        self.weight_init = init;
        self
    }

    /// Registers `<name>.weight` and `<name>.bias`.
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> Linear {
        b.scope(name, || Linear {
            weight: b.param(
                "weight",
                &[self.in_features, self.out_features],
                self.weight_init
                    .resolve(self.in_features, self.out_features),
            ),
            bias: self.bias.then(|| {
                b.param(
                    "bias",
                    &[self.out_features],
                    oar_ir::op::Init::Constant(0.0),
                )
            }),
        })
    }
}

/// A fully connected layer.
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.matmul(&self.weight);
        match &self.bias {
            Some(b) => &y + b,
            None => y,
        }
    }
}

/// A lookup table `[vocab, dim]`.
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    pub vocab: u64,
    pub dim: u64,
    pub init: Initializer,
}

impl EmbeddingConfig {
    pub fn new(vocab: u64, dim: u64) -> Self {
        EmbeddingConfig {
            vocab,
            dim,
            init: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            },
        }
    }

    /// Registers `<name>.weight`.
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> Embedding {
        b.scope(name, || Embedding {
            weight: b.param(
                "weight",
                &[self.vocab, self.dim],
                self.init.resolve(self.vocab, self.dim),
            ),
        })
    }
}

/// Token embedding.
#[derive(Clone)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    #[track_caller]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        self.weight.embedding(ids)
    }
}

/// Dropout with probability `p` (identity at inference).
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
}

impl Dropout {
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.p > 0.0 {
            x.dropout(self.p)
        } else {
            x.clone()
        }
    }
}
