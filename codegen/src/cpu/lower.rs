//! Kernel IR loops → an LLVM function `void name(ptr args, i64 begin, i64 end, ptr scratch)`.
//! Index math is i64; floats are f32; LLVM's O3 pipeline vectorizes the inner loops.

use super::builder::{LlvmBuilder, OrMsg, R};
use crate::kernel::{Bin, Cond, Elem, Expr, IExpr, Kernel, Stmt, Un};
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::{FloatPredicate, IntPredicate};
use std::collections::HashMap;

/// Reassociation lets LLVM vectorize reductions (sums over k, over a row); contraction
/// lets it fuse multiply-adds. Both change rounding only within the tests' 1e-4 bound.
fn fast(v: FloatValue<'_>) -> R<FloatValue<'_>> {
    flagged(v, true)
}

/// Sets contraction, and reassociation when `reassoc`.
fn flagged(v: FloatValue<'_>, reassoc: bool) -> R<FloatValue<'_>> {
    use inkwell::values::{BasicValue, FastMathFlags};
    if let Some(i) = v.as_instruction_value() {
        let f = if reassoc {
            FastMathFlags::AllowReassoc | FastMathFlags::AllowContract
        } else {
            FastMathFlags::AllowContract
        };
        i.set_fast_math_flags(f).m()?;
    }
    Ok(v)
}

pub(crate) struct LoopCx<'a, 'b, 'ctx> {
    pub ir: &'a LlvmBuilder<'b, 'ctx>,
    pub bufs: Vec<PointerValue<'ctx>>,
    pub elems: Vec<Elem>,
    pub vars: HashMap<u32, IntValue<'ctx>>,
    pub locals: HashMap<u32, PointerValue<'ctx>>,
    pub begin: IntValue<'ctx>,
    pub end: IntValue<'ctx>,
}

/// Loads each buffer pointer from the argument array.
pub(crate) fn load_args<'ctx>(ir: &LlvmBuilder<'_, 'ctx>, n: usize) -> R<Vec<PointerValue<'ctx>>> {
    let args = ir
        .func
        .get_nth_param(0)
        .ok_or("kernel has no args")?
        .into_pointer_value();
    (0..n)
        .map(|k| {
            let p = ir.gep(ir.ptrt().into(), args, ir.i(k as i64))?;
            Ok(ir
                .b
                .build_load(ir.ptrt(), p, "buf")
                .m()?
                .into_pointer_value())
        })
        .collect()
}

pub(crate) fn lower_loops<'ctx>(ir: &LlvmBuilder<'_, 'ctx>, k: &Kernel, body: &[Stmt]) -> R<()> {
    let mut bufs = load_args(ir, k.params.len())?;
    // The per-thread scratch area is buffer `params.len()`.
    bufs.push(
        ir.func
            .get_nth_param(3)
            .ok_or("no scratch")?
            .into_pointer_value(),
    );
    ir.disjoint_buffers(&bufs);
    let begin = ir.func.get_nth_param(1).ok_or("no begin")?.into_int_value();
    let end = ir.func.get_nth_param(2).ok_or("no end")?.into_int_value();
    let mut cx = LoopCx {
        ir,
        bufs,
        elems: k.params.iter().map(|p| p.1).chain([Elem::F32]).collect(),
        vars: HashMap::new(),
        locals: HashMap::new(),
        begin,
        end,
    };
    for s in body {
        cx.stmt(s)?;
    }
    ir.b.build_return(None).m()?;
    Ok(())
}

impl<'ctx> LoopCx<'_, '_, 'ctx> {
    fn stmt(&mut self, s: &Stmt) -> R<()> {
        let ir = self.ir;
        match s {
            Stmt::For {
                var,
                extent,
                parallel,
                body,
            } => {
                let (lo, hi) = if *parallel {
                    (self.begin, self.end)
                } else {
                    (ir.i(0), ir.i(*extent))
                };
                let var = *var;
                let mut err = None;
                ir.for_loop(lo, hi, 1, &mut |_, i| {
                    self.vars.insert(var, i);
                    for b in body {
                        if let Err(e) = self.stmt(b) {
                            err = Some(e);
                            break;
                        }
                    }
                    Ok(())
                })?;
                if let Some(e) = err {
                    return Err(e);
                }
            }
            Stmt::Store { buf, idx, val } => {
                let i = self.iexpr(idx)?;
                let v = self.expr(val)?;
                if self.elems[*buf] == Elem::Bool {
                    // A bool buffer holds 0/1 bytes: the stored value's truth (non-zero).
                    let bit = ir.fcmp(FloatPredicate::UNE, v, ir.f(0.0))?;
                    ir.store_bool(self.bufs[*buf], i, bit)?;
                } else if self.elems[*buf] == Elem::I64 {
                    // An integer value stores exactly; any other converts (truncating).
                    let n = match val {
                        Expr::FromInt(e) => self.iexpr(e)?,
                        _ => ir.b.build_float_to_signed_int(v, ir.i64t(), "fi").m()?,
                    };
                    ir.store_i64(self.bufs[*buf], i, n)?;
                } else {
                    ir.store_f32(self.bufs[*buf], i, v)?;
                }
            }
            Stmt::Local { id, init } => {
                let slot = match self.locals.get(id) {
                    Some(p) => *p,
                    None => {
                        let p = ir.entry_alloca(ir.f32t().into(), &format!("t{id}"))?;
                        self.locals.insert(*id, p);
                        p
                    }
                };
                let v = self.expr(init)?;
                ir.b.build_store(slot, v).m()?;
            }
            Stmt::Assign { id, val } => {
                let v = self.expr(val)?;
                let slot = *self
                    .locals
                    .get(id)
                    .ok_or_else(|| format!("local t{id} used before its declaration"))?;
                ir.b.build_store(slot, v).m()?;
            }
        }
        Ok(())
    }

    fn iexpr(&self, e: &IExpr) -> R<IntValue<'ctx>> {
        let ir = self.ir;
        Ok(match e {
            IExpr::Var(v) => *self
                .vars
                .get(v)
                .ok_or_else(|| format!("index i{v} outside its loop"))?,
            IExpr::C(c) => ir.i(*c),
            IExpr::Add(a, b) => ir.add(self.iexpr(a)?, self.iexpr(b)?)?,
            IExpr::Mul(a, b) => ir.mul(self.iexpr(a)?, self.iexpr(b)?)?,
            IExpr::Div(a, b) => {
                ir.b.build_int_signed_div(self.iexpr(a)?, self.iexpr(b)?, "d")
                    .m()?
            }
            IExpr::Rem(a, b) => {
                ir.b.build_int_signed_rem(self.iexpr(a)?, self.iexpr(b)?, "r")
                    .m()?
            }
            IExpr::Load(buf, idx) => {
                let i = self.iexpr(idx)?;
                ir.load_elem(ir.i64t().into(), self.bufs[*buf], i)?
                    .into_int_value()
            }
            IExpr::Select(c, a, b) => {
                let (c, a, b) = (self.cond(c)?, self.iexpr(a)?, self.iexpr(b)?);
                ir.b.build_select(c, a, b, "isel").m()?.into_int_value()
            }
        })
    }

    fn cond(&self, c: &Cond) -> R<IntValue<'ctx>> {
        let ir = self.ir;
        Ok(match c {
            Cond::InRange(e, n) => {
                let v = self.iexpr(e)?;
                // One unsigned compare covers 0 <= v < n.
                ir.icmp(IntPredicate::ULT, v, ir.i(*n))?
            }
            Cond::Le(a, b) => ir.icmp(IntPredicate::SLE, self.iexpr(a)?, self.iexpr(b)?)?,
            Cond::Bool(buf, idx) => {
                let i = self.iexpr(idx)?;
                let v = ir
                    .load_elem(ir.cx.i8_type().into(), self.bufs[*buf], i)?
                    .into_int_value();
                ir.b.build_int_compare(IntPredicate::NE, v, ir.cx.i8_type().const_zero(), "nz")
                    .m()?
            }
            Cond::And(a, b) => ir.b.build_and(self.cond(a)?, self.cond(b)?, "and").m()?,
            Cond::Lt(a, b) => ir.fcmp(FloatPredicate::OLT, self.expr(a)?, self.expr(b)?)?,
        })
    }

    fn expr(&self, e: &Expr) -> R<FloatValue<'ctx>> {
        let ir = self.ir;
        let f32t = ir.f32t();
        Ok(match e {
            Expr::C(c) => ir.f(*c),
            Expr::Load(buf, idx) => {
                if self.elems[*buf] != Elem::F32 {
                    return Err(format!("b{buf} is not an f32 buffer"));
                }
                ir.load_f32(self.bufs[*buf], self.iexpr(idx)?)?
            }
            Expr::LoadIf(buf, idx, c) => {
                let ok = self.cond(c)?;
                let i = self.iexpr(idx)?;
                // Out-of-range reads go to element 0 and are discarded: no branch, no fault.
                let safe =
                    ir.b.build_select(ok, i, ir.i(0), "safe")
                        .m()?
                        .into_int_value();
                let v = ir.load_f32(self.bufs[*buf], safe)?;
                ir.b.build_select(ok, v, ir.f(0.0), "pad")
                    .m()?
                    .into_float_value()
            }
            Expr::Local(id) => {
                let slot = *self
                    .locals
                    .get(id)
                    .ok_or_else(|| format!("local t{id} used before its declaration"))?;
                ir.b.build_load(f32t, slot, "t").m()?.into_float_value()
            }
            Expr::Un(u, x) => {
                let x = self.expr(x)?;
                match u {
                    Un::Neg => ir.b.build_float_neg(x, "neg").m()?,
                    Un::Exp => super::math::exp_f32(ir, x)?,
                    Un::Log => ir
                        .intrinsic("llvm.log", f32t.into(), &[x.into()])?
                        .into_float_value(),
                    Un::Sqrt => ir
                        .intrinsic("llvm.sqrt", f32t.into(), &[x.into()])?
                        .into_float_value(),
                    Un::Abs => ir
                        .intrinsic("llvm.fabs", f32t.into(), &[x.into()])?
                        .into_float_value(),
                    Un::Tanh => ir.libm("tanhf", x)?,
                    Un::Erf => ir.libm("erff", x)?,
                }
            }
            Expr::Bin(b, x, y) => {
                let (x, y) = (self.expr(x)?, self.expr(y)?);
                match b {
                    Bin::Add => fast(ir.b.build_float_add(x, y, "add").m()?)?,
                    Bin::AddInOrder => flagged(ir.b.build_float_add(x, y, "add").m()?, false)?,
                    Bin::Sub => fast(ir.b.build_float_sub(x, y, "sub").m()?)?,
                    Bin::Mul => fast(ir.b.build_float_mul(x, y, "mul").m()?)?,
                    Bin::Div => ir.b.build_float_div(x, y, "div").m()?,
                    Bin::Max => {
                        let c = ir.fcmp(FloatPredicate::OGT, x, y)?;
                        ir.b.build_select(c, x, y, "max").m()?.into_float_value()
                    }
                    Bin::Min => {
                        let c = ir.fcmp(FloatPredicate::OLT, x, y)?;
                        ir.b.build_select(c, x, y, "min").m()?.into_float_value()
                    }
                    Bin::Pow => ir
                        .intrinsic("llvm.pow", f32t.into(), &[x.into(), y.into()])?
                        .into_float_value(),
                }
            }
            Expr::Select(c, a, b) => {
                let c = self.cond(c)?;
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                ir.b.build_select(c, a, b, "sel").m()?.into_float_value()
            }
            Expr::FromInt(i) => {
                ir.b.build_signed_int_to_float(self.iexpr(i)?, f32t, "f")
                    .m()?
            }
        })
    }
}
