//! What the planner plans for: a transformer described layer by layer, from a zoo ERNIE
//! config or a TOML config file, and the training job (batch, sequence, precision).

use serde::Deserialize;

/// One transformer layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerSpec {
    pub hidden: u64,
    pub heads: u64,
    pub ffn: u64,
}

impl LayerSpec {
    /// Weights: 4 attention projections and two FFN matrices with biases, two layer norms.
    pub fn params(&self) -> u64 {
        let (h, f) = (self.hidden, self.ffn);
        4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    }

    /// Forward FLOPs for `tokens` tokens of sequence length `seq` (a MAC is 2 FLOPs):
    /// projections and FFN 2·(4h² + 2hf) per token, attention scores and context 4·s·h.
    pub fn forward_flops(&self, tokens: u64, seq: u64) -> f64 {
        let (h, f) = (self.hidden as f64, self.ffn as f64);
        tokens as f64 * (2.0 * (4.0 * h * h + 2.0 * h * f) + 4.0 * seq as f64 * h)
    }
}

/// A model as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub vocab: u64,
    /// Width of the embedding table and the LM head.
    pub embed_hidden: u64,
    /// Embedding rows beyond the vocabulary (positions, token types).
    pub extra_embedding_rows: u64,
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// Embedding parameters (the LM head is tied to them).
    pub fn embedding_params(&self) -> u64 {
        (self.vocab + self.extra_embedding_rows) * self.embed_hidden
    }

    /// All parameters.
    pub fn params(&self) -> u64 {
        self.embedding_params() + self.layers.iter().map(LayerSpec::params).sum::<u64>()
    }

    /// Forward FLOPs of the LM head for `tokens` tokens.
    pub fn head_flops(&self, tokens: u64) -> f64 {
        2.0 * tokens as f64 * self.embed_hidden as f64 * self.vocab as f64
    }

    /// Model FLOPs of one training step (forward + backward = 3× forward), no recompute.
    pub fn step_flops(&self, tokens: u64, seq: u64) -> f64 {
        3.0 * (self
            .layers
            .iter()
            .map(|l| l.forward_flops(tokens, seq))
            .sum::<f64>()
            + self.head_flops(tokens))
    }
}

/// A transformer config file (`oar plan my-gpt.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    pub name: Option<String>,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub ffn: Option<u64>,
    pub vocab: u64,
    /// Default sequence length for planning.
    pub seq: Option<u64>,
    /// Decoder-style causal attention (does not change the cost model).
    #[serde(default)]
    pub causal: bool,
}

/// A transformer config file that does not parse or describes no model; names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not the config's fields.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A size that must be positive is zero.
    #[error("{path}: field `{field}` must be at least 1")]
    Zero { path: String, field: &'static str },
    /// Attention heads do not split the hidden size evenly.
    #[error("{path}: `hidden` ({hidden}) must be divisible by `heads` ({heads})")]
    HeadsDoNotDivide {
        path: String,
        hidden: u64,
        heads: u64,
    },
}

impl TransformerConfig {
    /// Parses and checks a TOML config; errors name the field.
    pub fn from_toml(text: &str, path: &str) -> Result<TransformerConfig, ConfigError> {
        let c: TransformerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for (field, v) in [
            ("layers", c.layers),
            ("hidden", c.hidden),
            ("heads", c.heads),
            ("vocab", c.vocab),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero {
                    path: path.to_string(),
                    field,
                });
            }
        }
        if !c.hidden.is_multiple_of(c.heads) {
            return Err(ConfigError::HeadsDoNotDivide {
                path: path.to_string(),
                hidden: c.hidden,
                heads: c.heads,
            });
        }
        Ok(c)
    }

    /// The planner's view.
    pub fn spec(&self, fallback_name: &str) -> ModelSpec {
        let layer = LayerSpec {
            hidden: self.hidden,
            heads: self.heads,
            ffn: self.ffn.unwrap_or(4 * self.hidden),
        };
        ModelSpec {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| fallback_name.to_string()),
            vocab: self.vocab,
            embed_hidden: self.hidden,
            extra_embedding_rows: self.seq.unwrap_or(2048),
            layers: vec![layer; self.layers as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_file_and_field() {
        let err = |text: &str| TransformerConfig::from_toml(text, "m.toml").unwrap_err();
        assert_eq!(
            err("layers = 0\nhidden = 8\nheads = 2\nvocab = 10\n").to_string(),
            "m.toml: field `layers` must be at least 1"
        );
        assert_eq!(
            err("layers = 1\nhidden = 9\nheads = 2\nvocab = 10\n"),
            ConfigError::HeadsDoNotDivide {
                path: "m.toml".into(),
                hidden: 9,
                heads: 2,
            }
        );
        assert!(matches!(err("layers = ["), ConfigError::Parse { .. }));
    }
}
