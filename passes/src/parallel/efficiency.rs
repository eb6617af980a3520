//! What one device kind reaches on the planner's kernels: its peak in the training
//! precision times a per-shape efficiency from the device's table (`ir::cluster::
//! EfficiencyTable`), or one constant where the device has no table.
//!
//! A table holds kernel efficiencies (what cuBLAS, or oar's own kernels, reach in isolation).
//! A training step keeps a fraction of that (launch gaps between kernels, clocks held down
//! by the power limit under sustained load): `TrainingCostModel::step_fraction`, calibrated
//! once on the smallest Megatron-LM row (see docs/planner-validation.md) and then held fixed.

use oar_ir::cluster::DeviceSpec;
use oar_ir::DType;

/// Achievable rates of one device kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRates {
    /// Peak FLOP/s in `dtype`.
    pub peak: f64,
    /// The training precision: bf16, else f16, else f32 (the first the device has).
    pub dtype: DType,
    table: Option<oar_ir::cluster::EfficiencyTable>,
    /// Efficiency without a table (already a step-level figure).
    fallback: f64,
    /// Fraction of a table's kernel efficiency a training step keeps.
    step_fraction: f64,
}

impl KernelRates {
    /// Rates of `device` with the cost model's constants.
    pub fn of(device: &DeviceSpec, fallback: f64, step_fraction: f64) -> KernelRates {
        let (dtype, peak) = [DType::BF16, DType::F16, DType::F32]
            .into_iter()
            .find_map(|d| device.peak_flops(d).map(|p| (d, p)))
            // Validation requires some precision; f64-only devices train in f64.
            .unwrap_or((DType::F64, device.peak_flops(DType::F64).unwrap_or(1e12)));
        KernelRates {
            peak,
            dtype,
            table: device.efficiency.clone(),
            fallback,
            step_fraction,
        }
    }

    /// One efficiency for every shape (tests, and devices described by a constant).
    pub fn flat(peak: f64, efficiency: f64) -> KernelRates {
        KernelRates {
            peak,
            dtype: DType::BF16,
            table: None,
            fallback: efficiency,
            step_fraction: 1.0,
        }
    }

    /// Whether figures come from a table (else the constant).
    pub fn has_table(&self) -> bool {
        self.table
            .as_ref()
            .is_some_and(|t| t.gemm.iter().any(|p| p.dtype == self.dtype))
    }

    /// Fraction of peak an `[m, k] × [k, n]` GEMM reaches within a training step.
    pub fn gemm_efficiency(&self, m: u64, n: u64, k: u64) -> f64 {
        self.table
            .as_ref()
            .and_then(|t| t.gemm(self.dtype, m, n, k))
            .map_or(self.fallback, |e| e * self.step_fraction)
    }

    /// Seconds of an `[m, k] × [k, n]` GEMM.
    pub fn gemm_seconds(&self, m: u64, n: u64, k: u64) -> f64 {
        2.0 * m as f64 * n as f64 * k as f64 / (self.peak * self.gemm_efficiency(m, n, k))
    }

    /// Fraction of peak an attention core over `seq` tokens with `head_dim`-wide heads
    /// reaches; falls back to the GEMM curve at the same shape, then to the constant.
    pub fn attention_efficiency(&self, seq: u64, head_dim: u64) -> f64 {
        self.table
            .as_ref()
            .and_then(|t| {
                t.attention(self.dtype, seq, head_dim)
                    .or_else(|| t.gemm(self.dtype, seq, seq, head_dim))
            })
            .map_or(self.fallback, |e| e * self.step_fraction)
    }

    /// Seconds of `flops` of attention core.
    pub fn attention_seconds(&self, flops: f64, seq: u64, head_dim: u64) -> f64 {
        flops / (self.peak * self.attention_efficiency(seq, head_dim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oar_ir::cluster::preset;
    use proptest::prelude::*;

    fn a100() -> KernelRates {
        let c = preset("a100").unwrap();
        KernelRates::of(&c.node_groups[0].device, 0.62, 0.85)
    }

    #[test]
    fn tables_make_wide_gemms_faster_per_flop_and_constants_stay_flat() {
        let r = a100();
        assert!(r.has_table());
        assert_eq!(r.dtype, DType::BF16);
        // Megatron-LM's 18B and 1T ffn1 GEMMs per tensor-parallel rank (tp 8, 2048 tokens).
        let small = r.gemm_efficiency(2048, 3072, 6144);
        let large = r.gemm_efficiency(2048, 12800, 25600);
        assert!(large > small * 1.05, "{small} {large}");
        assert!(small > 0.5 && large < 0.85 * 0.87, "{small} {large}");
        let v100 = preset("v100").unwrap();
        let flat = KernelRates::of(&v100.node_groups[0].device, 0.62, 0.8);
        assert!(!flat.has_table());
        assert_eq!(flat.dtype, DType::F16);
        assert_eq!(flat.gemm_efficiency(64, 64, 64), 0.62);
        assert_eq!(flat.gemm_efficiency(1 << 14, 1 << 14, 1 << 14), 0.62);
        let t = flat.gemm_seconds(1024, 1024, 1024);
        assert!((t - 2.0 * 1024f64.powi(3) / (125e12 * 0.62)).abs() < 1e-15);
    }

    proptest! {
        #[test]
        fn efficiency_is_monotone_in_size_and_within_the_table(
            m in 16u64..20000, n in 16u64..20000, k in 16u64..20000, grow in 1u64..8,
        ) {
            let r = a100();
            let e = r.gemm_efficiency(m, n, k);
            // The table's own range times the step fraction.
            prop_assert!((0.20 * 0.85 - 1e-12..=0.86 * 0.85 + 1e-12).contains(&e), "{}", e);
            // A larger problem in any dimension is at least as efficient (the table rises).
            prop_assert!(r.gemm_efficiency(m * grow, n, k) >= e - 1e-12);
            prop_assert!(r.gemm_efficiency(m, n, k * grow) >= e - 1e-12);
            let a = r.attention_efficiency(m, 128);
            prop_assert!(r.attention_efficiency(m * grow, 128) >= a - 1e-12);
        }
    }
}
