//! Inline math the vectorizer can widen. `llvm.exp` lowers to a scalar libm call per
//! element, which keeps softmax and sigmoid loops scalar; this exp is plain arithmetic.

use super::builder::{LlvmBuilder, OrMsg, R};
use inkwell::values::FloatValue;
use inkwell::FloatPredicate;

/// e^x in f32: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for an exact n·ln2), e^r
/// by the Cephes expf polynomial (≈ 1 ulp), 2^n assembled in the exponent bits. Below
/// −87.3 the result is 0 (f32 underflow, and e^−∞ = 0 in masked softmax), above 88.7 +∞,
/// NaN stays NaN.
pub(crate) fn exp_f32<'ctx>(
    ir: &LlvmBuilder<'_, 'ctx>,
    x: FloatValue<'ctx>,
) -> R<FloatValue<'ctx>> {
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    let b = &ir.b;
    let select = |c, a: FloatValue<'ctx>, z: FloatValue<'ctx>| -> R<FloatValue<'ctx>> {
        Ok(b.build_select(c, a, z, "sel").m()?.into_float_value())
    };
    let lt = ir.fcmp(FloatPredicate::OLT, x, ir.f(LO))?;
    let gt = ir.fcmp(FloatPredicate::OGT, x, ir.f(HI))?;
    let xc = select(lt, ir.f(LO), x)?;
    let xc = select(gt, ir.f(HI), xc)?;
    let mul = |a, c| b.build_float_mul(a, c, "m").m();
    let add = |a, c| b.build_float_add(a, c, "a").m();
    // n = round(x · log2 e)
    let t = mul(xc, ir.f(std::f32::consts::LOG2_E))?;
    let n = ir
        .intrinsic("llvm.rint", ir.f32t().into(), &[t.into()])?
        .into_float_value();
    let r = b.build_float_sub(xc, mul(n, ir.f(0.693_359_4))?, "r").m()?;
    let r = b
        .build_float_sub(r, mul(n, ir.f(-2.121_944_4e-4))?, "r")
        .m()?;
    let mut p = ir.f(1.987_569_1e-4);
    for c in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = add(mul(p, r)?, ir.f(c))?;
    }
    let p = add(add(mul(mul(p, r)?, r)?, r)?, ir.f(1.0))?;
    // 2^n from exponent bits, n ∈ [−126, 128] after the clamp: as 2^(n−1) · 2 when n > 0,
    // so that every exponent field stays in the normal range [1, 254].
    let i32t = ir.cx.i32_type();
    let ni = b.build_float_to_signed_int(n, i32t, "n").m()?;
    let pos = b
        .build_int_compare(inkwell::IntPredicate::SGT, ni, i32t.const_zero(), "pos")
        .m()?;
    let shift = b
        .build_select(
            pos,
            i32t.const_int(126, false),
            i32t.const_int(127, false),
            "bias",
        )
        .m()?
        .into_int_value();
    let bits = b.build_int_add(ni, shift, "e").m()?;
    let bits = b
        .build_left_shift(bits, i32t.const_int(23, false), "sh")
        .m()?;
    let scale = b
        .build_bit_cast(bits, ir.f32t(), "pow2")
        .m()?
        .into_float_value();
    let y = mul(mul(p, scale)?, select(pos, ir.f(2.0), ir.f(1.0))?)?;
    let y = select(lt, ir.f(0.0), y)?;
    let y = select(gt, ir.f(f32::INFINITY), y)?;
    let nan = ir.fcmp(FloatPredicate::UNO, x, x)?;
    select(nan, x, y)
}
