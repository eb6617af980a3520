//! Learning-rate schedules, evaluated on the host: a pure function of the step whose value
//! is fed to the graph's `lr` input, so changing the rate never recompiles.
//!
//! The formulas are Paddle's (`paddle.optimizer.lr`): [`Schedule::Warmup`] is `LinearWarmup`
//! wrapping `CosineAnnealingDecay` (its closed form) or `PolynomialDecay`, and the decay
//! sees the step counted from the end of the warmup, as `LinearWarmup` passes it on.
//! Steps are 1-based like the graph's `step` input: `lr(t)` is the rate Paddle's scheduler
//! gives at `last_epoch = t − 1`, the rate of the `t`-th `optimizer.step()` when
//! `scheduler.step()` follows every optimizer step.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The same rate at every step.
    Constant { lr: f64 },
    /// Linear warmup from `start_lr` to `end_lr` over `warmup_steps` steps (Paddle's
    /// `LinearWarmup`: `start + (end − start)·e/warmup` at epoch `e < warmup`), then `decay`
    /// from `base_lr` at epoch `e − warmup`.
    Warmup {
        warmup_steps: u64,
        start_lr: f64,
        end_lr: f64,
        base_lr: f64,
        decay: Decay,
    },
}

/// What follows the warmup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decay {
    /// `base_lr` throughout.
    Constant,
    /// Paddle's `CosineAnnealingDecay` closed form:
    /// `eta_min + (base − eta_min)·(1 + cos(π·e/t_max))/2`. As in Paddle, past `t_max` the
    /// cosine rises again; choose `t_max` as the number of steps after the warmup.
    Cosine { t_max: u64, eta_min: f64 },
    /// Paddle's `PolynomialDecay` without `cycle`:
    /// `(base − end_lr)·(1 − min(e, decay_steps)/decay_steps)^power + end_lr`.
    Polynomial {
        decay_steps: u64,
        end_lr: f64,
        power: f64,
    },
}

impl Decay {
    /// Linear decay to `end_lr` over `decay_steps` (polynomial of power 1).
    pub fn linear(decay_steps: u64, end_lr: f64) -> Decay {
        Decay::Polynomial {
            decay_steps,
            end_lr,
            power: 1.0,
        }
    }

    /// The rate at epoch `e` (0-based) of the decay, starting from `base`.
    pub fn at(&self, base: f64, e: u64) -> f64 {
        match *self {
            Decay::Constant => base,
            Decay::Cosine { t_max, eta_min } => {
                // Paddle divides by T_max unguarded; t_max = 0 is read as "already decayed".
                if t_max == 0 {
                    return eta_min;
                }
                eta_min + (base - eta_min) * (1.0 + (PI * e as f64 / t_max as f64).cos()) / 2.0
            }
            Decay::Polynomial {
                decay_steps,
                end_lr,
                power,
            } => {
                if decay_steps == 0 {
                    return end_lr;
                }
                let e = e.min(decay_steps) as f64;
                (base - end_lr) * (1.0 - e / decay_steps as f64).powf(power) + end_lr
            }
        }
    }
}

impl Schedule {
    /// The learning rate of 1-based step `step` (step 0 is read as step 1).
    pub fn lr(&self, step: u64) -> f64 {
        let e = step.saturating_sub(1);
        match self {
            Schedule::Constant { lr } => *lr,
            Schedule::Warmup {
                warmup_steps,
                start_lr,
                end_lr,
                base_lr,
                decay,
            } => {
                if e < *warmup_steps {
                    start_lr + (end_lr - start_lr) * e as f64 / *warmup_steps as f64
                } else {
                    decay.at(*base_lr, e - warmup_steps)
                }
            }
        }
    }
}

/// The CLI's schedule names: `constant`, `linear` and `cosine`.
pub const SCHEDULE_NAMES: [&str; 3] = ["constant", "linear", "cosine"];

impl Schedule {
    /// The schedule `oar train --schedule NAME --lr LR --warmup W` means for a run of
    /// `total` steps: a linear warmup from 0 to `lr` over `warmup` steps, then `name` decays
    /// to 0 at step `total` (constant stays at `lr`). `None` for an unknown name.
    pub fn named(name: &str, lr: f64, warmup: u64, total: u64) -> Option<Schedule> {
        let span = total.saturating_sub(warmup);
        let decay = match name {
            "constant" => Decay::Constant,
            "linear" => Decay::linear(span, 0.0),
            "cosine" => Decay::Cosine {
                t_max: span,
                eta_min: 0.0,
            },
            _ => return None,
        };
        Some(Schedule::Warmup {
            warmup_steps: warmup,
            start_lr: 0.0,
            end_lr: lr,
            base_lr: lr,
            decay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_schedules_warm_up_then_decay_to_zero() {
        let c = Schedule::named("cosine", 0.1, 10, 110).unwrap();
        assert_eq!(c.lr(1), 0.0, "Paddle's LinearWarmup starts at start_lr");
        assert!((c.lr(6) - 0.05).abs() < 1e-12);
        assert!(
            (c.lr(11) - 0.1).abs() < 1e-12,
            "the first step after warmup"
        );
        assert!((c.lr(61) - 0.05).abs() < 1e-12, "half way down the cosine");
        assert!(c.lr(111).abs() < 1e-12);
        let l = Schedule::named("linear", 0.1, 10, 110).unwrap();
        assert!((l.lr(36) - 0.075).abs() < 1e-12);
        assert_eq!(
            Schedule::named("constant", 0.1, 0, 100).unwrap().lr(50),
            0.1
        );
        assert!(Schedule::named("step", 0.1, 0, 1).is_none());
    }
}
