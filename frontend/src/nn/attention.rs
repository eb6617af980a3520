//! Multi-head attention and the transformer encoder layer.

use super::{Activation, Dropout, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use crate::builder::ModelBuilder;
use crate::tensor::Tensor;
use oar_ir::op::ReshapeDim;

/// Multi-head self-attention over `[batch, seq, d_model]`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttentionConfig {
    pub d_model: u64,
    pub heads: u64,
    /// Each position attends only to itself and earlier positions.
    pub causal: bool,
    pub dropout: f64,
}

impl MultiHeadAttentionConfig {
    pub fn new(d_model: u64, heads: u64) -> Self {
        MultiHeadAttentionConfig {
            d_model,
            heads,
            causal: false,
            dropout: 0.1,
        }
    }

    pub fn causal(mut self, c: bool) -> Self {
        self.causal = c;
        self
    }

    /// Registers `<name>.{q_proj,k_proj,v_proj,out_proj}.*`.
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> MultiHeadAttention {
        if self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            b.fail(
                "MultiHeadAttention",
                format!(
                    "d_model {} is not divisible by {} heads",
                    self.d_model, self.heads
                ),
            );
        }
        let lin = LinearConfig::new(self.d_model, self.d_model);
        b.scope(name, || MultiHeadAttention {
            q: lin.init(b, "q_proj"),
            k: lin.init(b, "k_proj"),
            v: lin.init(b, "v_proj"),
            out: lin.init(b, "out_proj"),
            heads: self.heads.max(1),
            d_model: self.d_model,
            causal: self.causal,
            dropout: Dropout { p: self.dropout },
        })
    }
}

#[derive(Clone)]
pub struct MultiHeadAttention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub heads: u64,
    pub d_model: u64,
    pub causal: bool,
    pub dropout: Dropout,
}

impl MultiHeadAttention {
    /// `[N, S, D]` → `[N, S, D]`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (n, s) = (x.dim(0), x.dim(1));
        let dh = self.d_model / self.heads;
        let heads = |t: Tensor| {
            t.reshape(vec![
                n.clone().into(),
                s.clone().into(),
                ReshapeDim::from(self.heads as i64),
                ReshapeDim::from(dh as i64),
            ])
            .transpose(&[0, 2, 1, 3])
        };
        let q = heads(self.q.forward(x));
        let k = heads(self.k.forward(x));
        let v = heads(self.v.forward(x));
        let mut scores = q.matmul_t(&k).mul_scalar(1.0 / (dh as f64).sqrt());
        if self.causal {
            scores = scores.causal_mask(-1e9);
        }
        let probs = self.dropout.forward(&scores.softmax(-1));
        let ctx = probs.matmul(&v).transpose(&[0, 2, 1, 3]).reshape(vec![
            n.into(),
            s.into(),
            ReshapeDim::from(self.d_model as i64),
        ]);
        self.out.forward(&ctx)
    }
}

/// A transformer encoder layer: attention and a feed-forward block, each with a residual,
/// normalised after (BERT/ERNIE, `pre_norm = false`) or before (GPT-2 style).
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayerConfig {
    pub d_model: u64,
    pub heads: u64,
    pub ffn: u64,
    pub dropout: f64,
    pub activation: Activation,
    pub pre_norm: bool,
    pub causal: bool,
    pub eps: f64,
}

impl TransformerEncoderLayerConfig {
    pub fn new(d_model: u64, heads: u64, ffn: u64) -> Self {
        TransformerEncoderLayerConfig {
            d_model,
            heads,
            ffn,
            dropout: 0.1,
            activation: Activation::Gelu,
            pre_norm: false,
            causal: false,
            eps: 1e-5,
        }
    }

    pub fn pre_norm(mut self, p: bool) -> Self {
        self.pre_norm = p;
        self
    }

    pub fn causal(mut self, c: bool) -> Self {
        self.causal = c;
        self
    }

    pub fn eps(mut self, e: f64) -> Self {
        self.eps = e;
        self
    }

    /// Registers `<name>.{self_attn,linear1,linear2,norm1,norm2}.*` (Paddle's names).
    #[track_caller]
    pub fn init(&self, b: &ModelBuilder, name: &str) -> TransformerEncoderLayer {
        let attn = MultiHeadAttentionConfig {
            d_model: self.d_model,
            heads: self.heads,
            causal: self.causal,
            dropout: self.dropout,
        };
        b.scope(name, || TransformerEncoderLayer {
            attn: attn.init(b, "self_attn"),
            linear1: LinearConfig::new(self.d_model, self.ffn).init(b, "linear1"),
            linear2: LinearConfig::new(self.ffn, self.d_model).init(b, "linear2"),
            norm1: LayerNormConfig::new(self.d_model)
                .with_eps(self.eps)
                .init(b, "norm1"),
            norm2: LayerNormConfig::new(self.d_model)
                .with_eps(self.eps)
                .init(b, "norm2"),
            dropout: Dropout { p: self.dropout },
            activation: self.activation,
            pre_norm: self.pre_norm,
        })
    }
}

#[derive(Clone)]
pub struct TransformerEncoderLayer {
    pub attn: MultiHeadAttention,
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub dropout: Dropout,
    pub activation: Activation,
    pub pre_norm: bool,
}

impl TransformerEncoderLayer {
    #[track_caller]
    fn ffn(&self, x: &Tensor) -> Tensor {
        let h = self.activation.apply(&self.linear1.forward(x));
        self.dropout
            .forward(&self.linear2.forward(&self.dropout.forward(&h)))
    }

    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.pre_norm {
            let x = x + &self
                .dropout
                .forward(&self.attn.forward(&self.norm1.forward(x)));
            &x + &self.ffn(&self.norm2.forward(&x))
        } else {
            let x = self
                .norm1
                .forward(&(x + &self.dropout.forward(&self.attn.forward(x))));
            self.norm2.forward(&(&x + &self.ffn(&x)))
        }
    }
}
