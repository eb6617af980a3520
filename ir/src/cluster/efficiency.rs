//! Kernel efficiency by problem shape: the fraction of a device's peak that a GEMM or an
//! attention core of a given shape reaches, as a table of points (published or measured)
//! interpolated in log-space of problem size. One constant cannot be right for every shape:
//! a 2048×2304×6144 GEMM keeps an A100's tensor cores busier than a 512-wide one and less busy
//! than a 2048×9600×25600 one. `oar cluster calibrate` writes a table for the local machine;
//! presets carry published figures with their source.

use crate::types::DType;
use serde::{Deserialize, Serialize};

/// One measured or published GEMM: `[m, k] × [k, n]` in `dtype` reached `efficiency` of peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmPoint {
    pub dtype: DType,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    /// Achieved FLOP/s over the device's peak for `dtype`, in (0, 1].
    pub efficiency: f64,
}

/// One attention core (scores, softmax, context) over `seq` tokens with heads of `head_dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionPoint {
    pub dtype: DType,
    pub seq: u64,
    pub head_dim: u64,
    pub efficiency: f64,
}

/// A device kind's efficiency table (`[node_group.device.efficiency]` in a cluster file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficiencyTable {
    /// Where the figures come from (a publication, or `oar cluster calibrate` and the date).
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gemm: Vec<GemmPoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attention: Vec<AttentionPoint>,
}

/// The size measure points are ordered by: the geometric mean of a problem's three
/// dimensions (the side of the cube with the same work), whose log interpolation follows
/// the smooth rise of efficiency with size that tile and wave quantisation average to.
pub fn gemm_size(m: u64, n: u64, k: u64) -> f64 {
    ((m.max(1) as f64).ln() + (n.max(1) as f64).ln() + (k.max(1) as f64).ln()) / 3.0
}

/// Linear interpolation in `ln(size)` over `(ln size, efficiency)` points, clamped at both
/// ends (a table says nothing beyond its largest or below its smallest problem).
pub fn interpolate(points: &mut [(f64, f64)], ln_size: f64) -> Option<f64> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (first, last) = (points.first()?, points.last()?);
    if ln_size <= first.0 {
        return Some(first.1);
    }
    if ln_size >= last.0 {
        return Some(last.1);
    }
    points.windows(2).find_map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        (ln_size >= x0 && ln_size <= x1).then(|| {
            if x1 - x0 <= f64::EPSILON {
                y1
            } else {
                y0 + (y1 - y0) * (ln_size - x0) / (x1 - x0)
            }
        })
    })
}

impl EfficiencyTable {
    /// Efficiency of an `[m, k] × [k, n]` GEMM in `dtype`; `None` without points for it.
    pub fn gemm(&self, dtype: DType, m: u64, n: u64, k: u64) -> Option<f64> {
        let mut pts: Vec<(f64, f64)> = self
            .gemm
            .iter()
            .filter(|p| p.dtype == dtype)
            .map(|p| (gemm_size(p.m, p.n, p.k), p.efficiency))
            .collect();
        interpolate(&mut pts, gemm_size(m, n, k))
    }

    /// Efficiency of an attention core; `None` without points for `dtype`.
    pub fn attention(&self, dtype: DType, seq: u64, head_dim: u64) -> Option<f64> {
        let mut pts: Vec<(f64, f64)> = self
            .attention
            .iter()
            .filter(|p| p.dtype == dtype)
            .map(|p| (gemm_size(p.seq, p.seq, p.head_dim), p.efficiency))
            .collect();
        interpolate(&mut pts, gemm_size(seq, seq, head_dim))
    }

    /// The first point whose efficiency is not in (0, 1]: (field, index).
    pub fn invalid_point(&self) -> Option<(&'static str, usize)> {
        let bad = |e: f64| !(e.is_finite() && e > 0.0 && e <= 1.0);
        if let Some(i) = self.gemm.iter().position(|p| bad(p.efficiency)) {
            return Some(("gemm", i));
        }
        self.attention
            .iter()
            .position(|p| bad(p.efficiency))
            .map(|i| ("attention", i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> EfficiencyTable {
        let g = |m, n, k, efficiency| GemmPoint {
            dtype: DType::BF16,
            m,
            n,
            k,
            efficiency,
        };
        EfficiencyTable {
            source: "test".into(),
            gemm: vec![g(1024, 1024, 1024, 0.5), g(4096, 4096, 4096, 0.8)],
            attention: vec![],
        }
    }

    #[test]
    fn interpolates_in_log_size_and_clamps_at_the_ends() {
        let t = table();
        // 2048³ is halfway between 1024³ and 4096³ in log size.
        let mid = t.gemm(DType::BF16, 2048, 2048, 2048).unwrap();
        assert!((mid - 0.65).abs() < 1e-12, "{mid}");
        assert_eq!(t.gemm(DType::BF16, 16, 16, 16), Some(0.5));
        assert_eq!(t.gemm(DType::BF16, 1 << 15, 1 << 15, 1 << 15), Some(0.8));
        // Shape order does not matter, only the work's cube side.
        let skew = t.gemm(DType::BF16, 1024, 4096, 2048).unwrap();
        assert!((skew - mid).abs() < 1e-12, "{skew} vs {mid}");
        assert_eq!(t.gemm(DType::F32, 1024, 1024, 1024), None);
        assert_eq!(t.attention(DType::BF16, 1024, 128), None);
    }

    #[test]
    fn rejects_efficiencies_outside_zero_to_one() {
        let mut t = table();
        assert_eq!(t.invalid_point(), None);
        t.gemm[1].efficiency = 1.2;
        assert_eq!(t.invalid_point(), Some(("gemm", 1)));
    }
}
