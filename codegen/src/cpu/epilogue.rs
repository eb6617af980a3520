//! What the contraction kernels apply to a result before storing it: bias (per row or per
//! column), residual, then the activation, on whole vectors or single floats.

use super::builder::{LlvmBuilder, OrMsg, R};
use crate::kernel::{BiasMode, GemmAct, GemmSpec};
use inkwell::values::{FloatValue, IntValue, PointerValue, VectorValue};
use inkwell::FloatPredicate;

/// The epilogue of one contraction: its spec's bias mode, residual and activation, and the
/// bias and residual buffers (already offset to the current batch).
pub(crate) struct Epilogue<'a, 'b, 'ctx> {
    pub ir: &'a LlvmBuilder<'b, 'ctx>,
    pub s: &'a GemmSpec,
    pub bias: PointerValue<'ctx>,
    pub res: PointerValue<'ctx>,
}

impl<'ctx> Epilogue<'_, '_, 'ctx> {
    /// One vector of results at C row `row`, columns `col..col + lanes`, stored at `at`.
    pub fn vector(
        &self,
        x: VectorValue<'ctx>,
        row: IntValue<'ctx>,
        col: IntValue<'ctx>,
        at: IntValue<'ctx>,
    ) -> R<VectorValue<'ctx>> {
        let ir = self.ir;
        let mut x = x;
        match self.s.bias {
            BiasMode::None => {}
            BiasMode::PerRow => {
                let b = ir.splat(ir.load_f32(self.bias, row)?)?;
                x = ir.b.build_float_add(x, b, "b").m()?;
            }
            BiasMode::PerCol => {
                let b = ir.load_v(self.bias, col)?;
                x = ir.b.build_float_add(x, b, "b").m()?;
            }
        }
        if self.s.residual {
            x = ir.b.build_float_add(x, ir.load_v(self.res, at)?, "r").m()?;
        }
        act_vector(ir, self.s.act, x)
    }

    /// One result at C row `row`, column `col`, stored at element `at`.
    pub fn scalar(
        &self,
        x: FloatValue<'ctx>,
        row: IntValue<'ctx>,
        col: IntValue<'ctx>,
        at: IntValue<'ctx>,
    ) -> R<FloatValue<'ctx>> {
        let ir = self.ir;
        let mut x = x;
        match self.s.bias {
            BiasMode::None => {}
            BiasMode::PerRow => {
                x =
                    ir.b.build_float_add(x, ir.load_f32(self.bias, row)?, "b")
                        .m()?
            }
            BiasMode::PerCol => {
                x =
                    ir.b.build_float_add(x, ir.load_f32(self.bias, col)?, "b")
                        .m()?
            }
        }
        if self.s.residual {
            x =
                ir.b.build_float_add(x, ir.load_f32(self.res, at)?, "r")
                    .m()?;
        }
        act_scalar(ir, self.s.act, x)
    }
}

/// The epilogue activation on a scalar or vector.
pub(crate) fn act_scalar<'ctx>(
    ir: &LlvmBuilder<'_, 'ctx>,
    a: GemmAct,
    x: FloatValue<'ctx>,
) -> R<FloatValue<'ctx>> {
    let max = |a: FloatValue<'ctx>, b: FloatValue<'ctx>| -> R<FloatValue<'ctx>> {
        let c = ir.fcmp(FloatPredicate::OGT, a, b)?;
        Ok(ir.b.build_select(c, a, b, "mx").m()?.into_float_value())
    };
    let min = |a: FloatValue<'ctx>, b: FloatValue<'ctx>| -> R<FloatValue<'ctx>> {
        let c = ir.fcmp(FloatPredicate::OLT, a, b)?;
        Ok(ir.b.build_select(c, a, b, "mn").m()?.into_float_value())
    };
    let hsig = |x: FloatValue<'ctx>, al: f32, be: f32| -> R<FloatValue<'ctx>> {
        let t = ir.b.build_float_mul(x, ir.f(al), "t").m()?;
        let t = ir.b.build_float_add(t, ir.f(be), "t").m()?;
        min(max(t, ir.f(0.0))?, ir.f(1.0))
    };
    match a {
        GemmAct::None => Ok(x),
        GemmAct::Relu => max(x, ir.f(0.0)),
        GemmAct::Clip(lo, hi) => min(max(x, ir.f(lo))?, ir.f(hi)),
        GemmAct::HardSwish => {
            let h = hsig(x, 1.0 / 6.0, 0.5)?;
            ir.b.build_float_mul(x, h, "hs").m()
        }
        GemmAct::HardSigmoid(al, be) => hsig(x, al, be),
    }
}

pub(crate) fn act_vector<'ctx>(
    ir: &LlvmBuilder<'_, 'ctx>,
    a: GemmAct,
    x: VectorValue<'ctx>,
) -> R<VectorValue<'ctx>> {
    let sp = |v: f32| ir.splat(ir.f(v));
    let max = |a: VectorValue<'ctx>, b: VectorValue<'ctx>| -> R<VectorValue<'ctx>> {
        let c =
            ir.b.build_float_compare(FloatPredicate::OGT, a, b, "c")
                .m()?;
        Ok(ir.b.build_select(c, a, b, "mx").m()?.into_vector_value())
    };
    let min = |a: VectorValue<'ctx>, b: VectorValue<'ctx>| -> R<VectorValue<'ctx>> {
        let c =
            ir.b.build_float_compare(FloatPredicate::OLT, a, b, "c")
                .m()?;
        Ok(ir.b.build_select(c, a, b, "mn").m()?.into_vector_value())
    };
    let hsig = |x: VectorValue<'ctx>, al: f32, be: f32| -> R<VectorValue<'ctx>> {
        let t = ir.b.build_float_mul(x, sp(al)?, "t").m()?;
        let t = ir.b.build_float_add(t, sp(be)?, "t").m()?;
        min(max(t, sp(0.0)?)?, sp(1.0)?)
    };
    match a {
        GemmAct::None => Ok(x),
        GemmAct::Relu => max(x, sp(0.0)?),
        GemmAct::Clip(lo, hi) => min(max(x, sp(lo)?)?, sp(hi)?),
        GemmAct::HardSwish => {
            let h = hsig(x, 1.0 / 6.0, 0.5)?;
            ir.b.build_float_mul(x, h, "hs").m()
        }
        GemmAct::HardSigmoid(al, be) => hsig(x, al, be),
    }
}
