//! Learning-rate schedules: a pure function of the 1-based step, so a resumed run gets the
//! same rate at the same step. The loop takes any `Fn(u64) -> f64`; [`Schedule`] builds the
//! usual ones.

use serde::{Deserialize, Serialize};

/// The shape of the decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Linear decay from the base rate to 0 at the last step.
    Linear,
    /// Half a cosine from the base rate to 0 at the last step.
    Cosine,
}

impl ScheduleKind {
    /// `constant`, `linear` or `cosine`.
    pub fn from_name(s: &str) -> Option<ScheduleKind> {
        match s {
            "constant" => Some(ScheduleKind::Constant),
            "linear" => Some(ScheduleKind::Linear),
            "cosine" => Some(ScheduleKind::Cosine),
            _ => None,
        }
    }
}

/// A base rate, a linear warmup over the first `warmup` steps, then `kind` until `total`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    /// The rate at 1-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        if step <= self.warmup {
            return self.base_lr * step as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        // Progress through the decay: 0 just after warmup, 1 at the last step.
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Linear => self.base_lr * (1.0 - t),
            ScheduleKind::Cosine => self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = |kind| Schedule {
            kind,
            base_lr: 0.1,
            warmup: 10,
            total: 110,
        };
        let c = s(ScheduleKind::Cosine);
        assert!((c.lr(5) - 0.05).abs() < 1e-12);
        assert!((c.lr(10) - 0.1).abs() < 1e-12);
        assert!((c.lr(60) - 0.05).abs() < 1e-12, "half way down the cosine");
        assert!(c.lr(110).abs() < 1e-12);
        let l = s(ScheduleKind::Linear);
        assert!((l.lr(35) - 0.075).abs() < 1e-12);
        assert_eq!(s(ScheduleKind::Constant).lr(100), 0.1);
    }
}
