//! Reduced-precision floats (bf16, f16) in an f32 interpreter.
//!
//! The interpreter stores every float as f32. A value whose graph type is bf16 or f16 is
//! stored as the f32 holding exactly the nearest value of that type: every op producing
//! such a value computes in f32 and rounds its result once, which is what a bf16/f16 kernel
//! with f32 accumulation produces (tensor cores and AMX accumulate in f32 and round on
//! store). Rounding is IEEE round-to-nearest-even, with f16's overflow to ±inf and its
//! subnormals; NaN stays NaN.

use oar_ir::DType;

/// The dtype the interpreter stores values of graph type `d` as.
pub fn stored_dtype(d: DType) -> DType {
    match d {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// Rounds `v` in place to the values of `d` when `d` is bf16 or f16 (others are untouched:
/// f32 needs no rounding and integers are not stored as f32).
pub fn round_to_dtype(d: DType, v: &mut [f32]) {
    let f: fn(f32) -> f32 = match d {
        DType::BF16 => round_bf16,
        DType::F16 => round_f16,
        _ => return,
    };
    for x in v {
        *x = f(*x);
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32. bf16 is f32's upper 16 bits,
/// so rounding is an integer add on the bits: values past bf16's largest finite value carry
/// into the exponent and become ±inf, as IEEE rounding does.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let b = x.to_bits();
    let lsb = (b >> 16) & 1;
    f32::from_bits(b.wrapping_add(0x7FFF + lsb) & 0xFFFF_0000)
}

/// f16's largest finite value, and the magnitude from which round-to-nearest-even gives inf
/// (halfway between 65504 and 2^16, which ties to the even 2^16 = inf).
const F16_MAX: f64 = 65504.0;
const F16_OVERFLOW: f64 = 65520.0;

/// `x` rounded to the nearest f16 (ties to even), as an f32: ±inf from 65520 on, subnormal
/// spacing 2^-24 below 2^-14.
pub fn round_f16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let a = f64::from(x).abs();
    if a >= F16_OVERFLOW {
        return f32::INFINITY.copysign(x);
    }
    // The spacing of f16 values around `a`: 2^(e − 10) for a normal f16 of exponent e,
    // 2^-24 for subnormals. Every f32 is exact in f64, so the division and the rounding
    // below are exact.
    let quantum = if a < 2f64.powi(-14) {
        2f64.powi(-24)
    } else {
        let e = ((x.to_bits() >> 23) & 0xff) as i32 - 127;
        2f64.powi(e - 10)
    };
    let r = (a / quantum).round_ties_even() * quantum;
    debug_assert!(r <= F16_MAX || r == 65536.0);
    let r = if r > F16_MAX { f64::INFINITY } else { r };
    (r as f32).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even 1.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to the even 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
    }

    #[test]
    fn f16_overflows_and_keeps_subnormals() {
        assert_eq!(round_f16(65504.0), 65504.0);
        assert_eq!(round_f16(65519.0), 65504.0);
        assert_eq!(round_f16(65520.0), f32::INFINITY);
        assert_eq!(round_f16(-1e6), f32::NEG_INFINITY);
        assert_eq!(round_f16(2f32.powi(-24)), 2f32.powi(-24));
        // Half the smallest subnormal ties to the even 0.
        assert_eq!(round_f16(2f32.powi(-25)), 0.0);
        assert_eq!(round_f16(1.0 + 2f32.powi(-11)), 1.0);
    }
}
