//! Inference or training: what a graph computes and what passes may assume about it.
//!
//! At inference dropout is deterministic, batch_norm uses its running statistics and
//! parameters are load-time constants (weight-only sub-graphs fold). In training dropout
//! draws a seeded mask, batch_norm uses batch statistics and updates its running
//! statistics, and parameters change every step, so nothing computed from them is constant.

use serde::{Deserialize, Serialize};

/// Whether a graph runs for inference or for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    #[default]
    Inference,
    Training,
}

impl ExecMode {
    /// Whether parameters are fixed for the life of a compiled program, so that values
    /// computed from parameters alone can be computed once at load time.
    pub fn params_are_constant(self) -> bool {
        self == ExecMode::Inference
    }

    /// The text-format spelling (`inference`, `training`).
    pub fn name(self) -> &'static str {
        match self {
            ExecMode::Inference => "inference",
            ExecMode::Training => "training",
        }
    }
}
