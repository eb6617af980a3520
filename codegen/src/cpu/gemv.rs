//! Products with a single row or column of C's operand (a batch-1 linear layer, a 1×1
//! convolution of a pooled map). Packing buys nothing here — every element of the matrix
//! is read once — so each parallel unit streams its part of the matrix straight into
//! vector accumulators held in registers, and applies the epilogue while storing.

use super::builder::{LlvmBuilder, OrMsg, R};
use super::epilogue::Epilogue;
use super::lower::load_args;
use crate::kernel::{BiasMode, GemmSpec, Kernel, SUM_CHAINS};
use inkwell::values::{FloatValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// One batch's operands, offset from the kernel arguments.
struct Operands<'ctx> {
    a: PointerValue<'ctx>,
    b: PointerValue<'ctx>,
    c: PointerValue<'ctx>,
    bias: PointerValue<'ctx>,
    res: PointerValue<'ctx>,
}

pub(crate) fn lower_gemv_kernel<'ctx>(
    ir: &LlvmBuilder<'_, 'ctx>,
    k: &Kernel,
    s: &GemmSpec,
) -> R<()> {
    let bufs = load_args(ir, k.params.len())?;
    ir.disjoint_buffers(&bufs);
    let null = ir.ptrt().const_null();
    let bias = if s.bias != BiasMode::None {
        bufs[3]
    } else {
        null
    };
    let res = if s.residual {
        bufs[3 + (s.bias != BiasMode::None) as usize]
    } else {
        null
    };
    let begin = ir.func.get_nth_param(1).ok_or("no begin")?.into_int_value();
    let end = ir.func.get_nth_param(2).ok_or("no end")?.into_int_value();
    let per = s.gemv_units() / s.batch.max(1);
    ir.for_loop(begin, end, 1, &mut |ir, unit| {
        let bt = ir.b.build_int_signed_div(unit, ir.i(per), "bt").m()?;
        let blk = ir.b.build_int_signed_rem(unit, ir.i(per), "blk").m()?;
        let off = |p: PointerValue<'ctx>, stride: i64| -> R<PointerValue<'ctx>> {
            if stride == 0 || p.is_null() {
                return Ok(p);
            }
            ir.gep(ir.f32t().into(), p, ir.mul(bt, ir.i(stride))?)
        };
        let ops = Operands {
            a: off(bufs[0], s.stride_a)?,
            b: off(bufs[1], s.stride_b)?,
            c: off(bufs[2], s.stride_c)?,
            bias,
            res: off(res, s.stride_c)?,
        };
        let g = Gemv { ir, s, ops };
        if s.gemv_by_rows() {
            g.row_block(ir.mul(blk, ir.i(s.tile.gemv_rows()))?)
        } else {
            g.col_block(ir.mul(blk, ir.i(s.tile.gemv_cols()))?)
        }
    })?;
    ir.b.build_return(None).m()?;
    Ok(())
}

struct Gemv<'a, 'b, 'ctx> {
    ir: &'a LlvmBuilder<'b, 'ctx>,
    s: &'a GemmSpec,
    ops: Operands<'ctx>,
}

impl<'ctx> Gemv<'_, '_, 'ctx> {
    fn tail(&self) -> Epilogue<'_, '_, 'ctx> {
        Epilogue {
            ir: self.ir,
            s: self.s,
            bias: self.ops.bias,
            res: self.ops.res,
        }
    }

    /// `count` zeroed vector accumulators (entry-block slots that mem2reg keeps in registers).
    fn accumulators(&self, count: usize) -> R<Vec<PointerValue<'ctx>>> {
        let ir = self.ir;
        (0..count)
            .map(|_| {
                let p = ir.entry_alloca(ir.vt().into(), "acc")?;
                ir.b.build_store(p, ir.splat(ir.f(0.0))?).m()?;
                Ok(p)
            })
            .collect()
    }

    fn fma(&self, slot: PointerValue<'ctx>, x: VectorValue<'ctx>, y: VectorValue<'ctx>) -> R<()> {
        let ir = self.ir;
        let acc = ir.b.build_load(ir.vt(), slot, "a").m()?;
        let r = ir.intrinsic(
            "llvm.fma",
            ir.vt().into(),
            &[x.into(), y.into(), acc.into()],
        )?;
        ir.b.build_store(slot, r).m()?;
        Ok(())
    }

    fn get(&self, slot: PointerValue<'ctx>) -> R<VectorValue<'ctx>> {
        let ir = self.ir;
        Ok(ir.b.build_load(ir.vt(), slot, "a").m()?.into_vector_value())
    }

    /// Columns `[c0, c0 + gemv_cols)` of every row of C (fewer in the last block).
    fn col_block(&self, c0: IntValue<'ctx>) -> R<()> {
        let ir = self.ir;
        let n = ir.i(self.s.n);
        let (cols, lanes) = (self.s.tile.gemv_cols(), self.s.tile.lanes);
        ir.for_loop(ir.i(0), ir.i(self.s.m), 1, &mut |ir, i| {
            let full = ir.icmp(IntPredicate::SLE, ir.add(c0, ir.i(cols))?, n)?;
            ir.if_else(
                full,
                &mut |_| self.cols(i, c0, c0, (cols / lanes) as usize),
                &mut |ir| {
                    // The last block: whole vectors, then single columns.
                    let groups =
                        ir.b.build_int_signed_div(ir.sub(n, c0)?, ir.i(lanes), "g")
                            .m()?;
                    ir.for_loop(ir.i(0), groups, 1, &mut |ir, g| {
                        self.cols(i, c0, ir.add(c0, ir.mul(g, ir.i(lanes))?)?, 1)
                    })?;
                    let rest = ir.add(c0, ir.mul(groups, ir.i(lanes))?)?;
                    ir.for_loop(rest, n, 1, &mut |_, j| self.col(i, c0, j))
                },
            )
        })
    }

    /// Where B's column `j` (in the block starting at `c0`) starts, and B's row stride:
    /// the packed block (see `GemmSpec::b_packed`) or B itself.
    fn b_column(&self, c0: IntValue<'ctx>, j: IntValue<'ctx>) -> R<(IntValue<'ctx>, i64)> {
        let ir = self.ir;
        let s = self.s;
        if s.b_packed {
            let cols = s.tile.gemv_cols();
            let blk = ir.b.build_int_signed_div(c0, ir.i(cols), "bb").m()?;
            let base = ir.mul(blk, ir.i(s.k * cols))?;
            Ok((ir.add(base, ir.sub(j, c0)?)?, cols))
        } else {
            Ok((j, s.ldb))
        }
    }

    /// `C[i, j..j + lanes·vecs]` (in the block at `c0`): a broadcast of A[i, k] times `vecs`
    /// vectors of B's row k.
    fn cols(&self, i: IntValue<'ctx>, c0: IntValue<'ctx>, j: IntValue<'ctx>, vecs: usize) -> R<()> {
        let ir = self.ir;
        let s = self.s;
        let acc = self.accumulators(vecs)?;
        let arow = ir.mul(i, ir.i(s.lda))?;
        let (b0, ldb) = self.b_column(c0, j)?;
        let lanes = s.tile.lanes;
        ir.for_loop(ir.i(0), ir.i(s.k), 1, &mut |ir, kk| {
            let x = ir.splat(ir.load_f32(self.ops.a, ir.add(arow, kk)?)?)?;
            let brow = ir.add(ir.mul(kk, ir.i(ldb))?, b0)?;
            for (v, slot) in acc.iter().enumerate() {
                let y = ir.load_v(self.ops.b, ir.add(brow, ir.i(v as i64 * lanes))?)?;
                self.fma(*slot, x, y)?;
            }
            Ok(())
        })?;
        let crow = ir.mul(i, ir.i(s.ldc))?;
        for (v, slot) in acc.iter().enumerate() {
            let col = ir.add(j, ir.i(v as i64 * lanes))?;
            let at = ir.add(crow, col)?;
            let y = self.tail().vector(self.get(*slot)?, i, col, at)?;
            ir.store_v(self.ops.c, at, y)?;
        }
        Ok(())
    }

    /// `C[i, j]` alone (in the block at `c0`).
    fn col(&self, i: IntValue<'ctx>, c0: IntValue<'ctx>, j: IntValue<'ctx>) -> R<()> {
        let ir = self.ir;
        let s = self.s;
        let (b0, ldb) = self.b_column(c0, j)?;
        let sum = self.dot(ir.mul(i, ir.i(s.lda))?, 1, b0, ldb, ir.i(0))?;
        let at = ir.add(ir.mul(i, ir.i(s.ldc))?, j)?;
        let y = self.tail().scalar(sum, i, j, at)?;
        ir.store_f32(self.ops.c, at, y)
    }

    /// `Σ_k A[a0 + k·sa] · B[b0 + k·sb]` for `k` in `[k0, K)`, one float at a time.
    fn dot(
        &self,
        a0: IntValue<'ctx>,
        sa: i64,
        b0: IntValue<'ctx>,
        sb: i64,
        k0: IntValue<'ctx>,
    ) -> R<FloatValue<'ctx>> {
        let ir = self.ir;
        let slot = ir.entry_alloca(ir.f32t().into(), "s")?;
        ir.b.build_store(slot, ir.f(0.0)).m()?;
        ir.for_loop(k0, ir.i(self.s.k), 1, &mut |ir, kk| {
            let x = ir.load_f32(self.ops.a, ir.add(a0, ir.mul(kk, ir.i(sa))?)?)?;
            let y = ir.load_f32(self.ops.b, ir.add(b0, ir.mul(kk, ir.i(sb))?)?)?;
            let t =
                ir.b.build_load(ir.f32t(), slot, "t")
                    .m()?
                    .into_float_value();
            let r = ir.intrinsic(
                "llvm.fma",
                ir.f32t().into(),
                &[x.into(), y.into(), t.into()],
            )?;
            ir.b.build_store(slot, r).m()?;
            Ok(())
        })?;
        Ok(ir
            .b
            .build_load(ir.f32t(), slot, "s")
            .m()?
            .into_float_value())
    }

    /// Rows `[r0, r0 + gemv_rows)` of the single column of C (fewer in the last block).
    fn row_block(&self, r0: IntValue<'ctx>) -> R<()> {
        let ir = self.ir;
        if self.s.a_packed {
            return self.packed_rows(r0);
        }
        let rows = self.s.tile.gemv_rows();
        let m = ir.i(self.s.m);
        let full = ir.icmp(IntPredicate::SLE, ir.add(r0, ir.i(rows))?, m)?;
        ir.if_else(full, &mut |_| self.rows(r0, rows as usize), &mut |ir| {
            ir.for_loop(r0, m, 1, &mut |_, r| self.rows(r, 1))
        })
    }

    /// The row block at `r0` from A packed in row panels (see `GemmSpec::a_packed`): each k
    /// is one vector of the block's rows times a broadcast of B[k], into [`SUM_CHAINS`]
    /// accumulators over k (independent FMA chains); the vector's lanes are then the
    /// block's results.
    fn packed_rows(&self, r0: IntValue<'ctx>) -> R<()> {
        let ir = self.ir;
        let s = self.s;
        let lanes = s.tile.lanes;
        let chains = SUM_CHAINS as i64;
        let acc = self.accumulators(SUM_CHAINS)?;
        // r0 is a multiple of the panel width: the panel starts at r0 · K.
        let base = ir.mul(r0, ir.i(s.k))?;
        let step = |ir: &LlvmBuilder<'_, 'ctx>, kk: IntValue<'ctx>, slot: PointerValue<'ctx>| {
            let w = ir.load_v(self.ops.a, ir.add(base, ir.mul(kk, ir.i(lanes))?)?)?;
            let x = ir.splat(ir.load_f32(self.ops.b, kk)?)?;
            self.fma(slot, w, x)
        };
        let whole = s.k / chains * chains;
        ir.for_loop(ir.i(0), ir.i(whole), chains, &mut |ir, kk| {
            for (c, slot) in acc.iter().enumerate() {
                step(ir, ir.add(kk, ir.i(c as i64))?, *slot)?;
            }
            Ok(())
        })?;
        ir.for_loop(ir.i(whole), ir.i(s.k), 1, &mut |ir, kk| {
            step(ir, kk, acc[0])
        })?;
        let mut v = self.get(acc[0])?;
        for slot in &acc[1..] {
            v = ir.b.build_float_add(v, self.get(*slot)?, "s").m()?;
        }
        for l in 0..lanes {
            let row = ir.add(r0, ir.i(l))?;
            let inside = ir.icmp(IntPredicate::SLT, row, ir.i(s.m))?;
            ir.if_else(
                inside,
                &mut |ir| {
                    let x = ir
                        .b
                        .build_extract_element(v, ir.cx.i32_type().const_int(l as u64, false), "e")
                        .m()?
                        .into_float_value();
                    let at = ir.mul(row, ir.i(s.ldc))?;
                    let y = self.tail().scalar(x, row, ir.i(0), at)?;
                    ir.store_f32(self.ops.c, at, y)
                },
                &mut |_| Ok(()),
            )?;
        }
        Ok(())
    }

    /// `C[r0..r0 + rows, 0]`: dot products of A's rows with B's column, a vector of k at
    /// a time.
    fn rows(&self, r0: IntValue<'ctx>, rows: usize) -> R<()> {
        let ir = self.ir;
        let s = self.s;
        let lanes = s.tile.lanes;
        let acc = self.accumulators(rows)?;
        let kv = s.k / lanes * lanes;
        let arow = |r: usize| ir.mul(ir.add(r0, ir.i(r as i64))?, ir.i(s.lda));
        ir.for_loop(ir.i(0), ir.i(kv), lanes, &mut |ir, kk| {
            let x = ir.load_v(self.ops.b, kk)?;
            for (r, slot) in acc.iter().enumerate() {
                let y = ir.load_v(self.ops.a, ir.add(arow(r)?, kk)?)?;
                self.fma(*slot, y, x)?;
            }
            Ok(())
        })?;
        for (r, slot) in acc.iter().enumerate() {
            let v = self.get(*slot)?;
            let mut sum = self.dot(arow(r)?, 1, ir.i(0), 1, ir.i(kv))?;
            for l in 0..lanes as u64 {
                let e =
                    ir.b.build_extract_element(v, ir.cx.i32_type().const_int(l, false), "e")
                        .m()?
                        .into_float_value();
                sum = ir.b.build_float_add(sum, e, "h").m()?;
            }
            let row = ir.add(r0, ir.i(r as i64))?;
            let at = ir.mul(row, ir.i(s.ldc))?;
            let y = self.tail().scalar(sum, row, ir.i(0), at)?;
            ir.store_f32(self.ops.c, at, y)?;
        }
        Ok(())
    }
}
