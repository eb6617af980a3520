//! Packing for the generated SGEMM: B's NR-wide depth panels (plain and read through a
//! transpose) and A's MR-row blocks of a transposed A, into per-thread scratch. A child of
//! `gemm` so it extends `Gemm` with its private fields.

use super::*;

impl<'ctx> Gemm<'_, '_, 'ctx> {
    /// Packs B[pc..pc+kc, jc..jc+nc] as NR-wide panels, `scratch[(p·kc + kk)·NR + j]`,
    /// zero-filling columns past `nc`.
    pub(super) fn pack(
        &self,
        jc: IntValue<'ctx>,
        nc: IntValue<'ctx>,
        pc: IntValue<'ctx>,
        kc: IntValue<'ctx>,
    ) -> R<()> {
        let ir = self.ir;
        let (nr, lanes) = (self.s.tile.nr, self.s.tile.lanes);
        if self.s.trans_b {
            return self.pack_bt(jc, nc, pc, kc);
        }
        let start = if reads_b_directly(self.s) {
            let full = ir.b.build_int_signed_div(nc, ir.i(nr), "full").m()?;
            ir.mul(full, ir.i(nr))?
        } else {
            ir.i(0)
        };
        ir.for_loop(start, nc, nr, &mut |ir, j0| {
            let panel = ir.b.build_int_signed_div(j0, ir.i(nr), "panel").m()?;
            let dst0 = ir.mul(ir.mul(panel, kc)?, ir.i(nr))?;
            let full = ir.icmp(IntPredicate::SLE, ir.add(j0, ir.i(nr))?, nc)?;
            ir.for_loop(ir.i(0), kc, 1, &mut |ir, kk| {
                let src = ir.add(ir.mul(ir.add(pc, kk)?, self.ldb)?, ir.add(jc, j0)?)?;
                let dst = ir.add(dst0, ir.mul(kk, ir.i(nr))?)?;
                ir.if_else(
                    full,
                    &mut |ir| {
                        for v in 0..nr / lanes {
                            let x = ir.load_v(self.bm, ir.add(src, ir.i(v * lanes))?)?;
                            ir.store_v(self.scratch, ir.add(dst, ir.i(v * lanes))?, x)?;
                        }
                        Ok(())
                    },
                    &mut |ir| {
                        for j in 0..nr {
                            let inside = ir.icmp(IntPredicate::SLT, ir.add(j0, ir.i(j))?, nc)?;
                            let at = ir.add(src, ir.i(j))?;
                            let x = ir.load_f32_or_zero(self.bm, inside, at, ir.i(0))?;
                            ir.store_f32(self.scratch, ir.add(dst, ir.i(j))?, x)?;
                        }
                        Ok(())
                    },
                )
            })
        })
    }

    /// [`Gemm::pack`] for a B stored transposed (`B[kk, j]` at `j·ldb + kk`): each of a
    /// panel's NR columns is one contiguous row of the stored matrix, read once.
    pub(super) fn pack_bt(
        &self,
        jc: IntValue<'ctx>,
        nc: IntValue<'ctx>,
        pc: IntValue<'ctx>,
        kc: IntValue<'ctx>,
    ) -> R<()> {
        let ir = self.ir;
        let nr = self.s.tile.nr;
        ir.for_loop(ir.i(0), nc, nr, &mut |ir, j0| {
            let panel = ir.b.build_int_signed_div(j0, ir.i(nr), "panel").m()?;
            let dst0 = ir.mul(ir.mul(panel, kc)?, ir.i(nr))?;
            for j in 0..nr {
                let inside = ir.icmp(IntPredicate::SLT, ir.add(j0, ir.i(j))?, nc)?;
                // Columns past nc read column jc (in range) and store zero.
                let col = ir.select_i(inside, ir.add(jc, ir.add(j0, ir.i(j))?)?, jc)?;
                let src = ir.add(ir.mul(col, self.ldb)?, pc)?;
                ir.for_loop(ir.i(0), kc, 1, &mut |ir, kk| {
                    let x = ir.zero_unless(inside, ir.load_f32(self.bm, ir.add(src, kk)?)?)?;
                    ir.store_f32(
                        self.scratch,
                        ir.add(dst0, ir.add(ir.mul(kk, ir.i(nr))?, ir.i(j))?)?,
                        x,
                    )
                })?;
            }
            Ok(())
        })
    }

    /// [`Gemm::pack_a`] for an A stored transposed (`A[row, kk]` at `kk·lda + row`): per
    /// depth step, each panel's MR rows are MR consecutive values of a stored row.
    pub(super) fn pack_at(
        &self,
        ic: IntValue<'ctx>,
        ic_end: IntValue<'ctx>,
        pc: IntValue<'ctx>,
        kc: IntValue<'ctx>,
    ) -> R<()> {
        let ir = self.ir;
        let mr = self.s.tile.mr;
        let rows = ir.sub(ic_end, ic)?;
        let a0 = ir.i(self.s.tile.a_block_offset());
        ir.for_loop(ir.i(0), rows, mr, &mut |ir, i0| {
            let p = ir.b.build_int_signed_div(i0, ir.i(mr), "p").m()?;
            let base = ir.add(ir.mul(ir.mul(p, kc)?, ir.i(mr))?, a0)?;
            let insides: Vec<IntValue<'ctx>> = (0..mr)
                .map(|r| ir.icmp(IntPredicate::SLT, ir.add(i0, ir.i(r))?, rows))
                .collect::<R<_>>()?;
            ir.for_loop(ir.i(0), kc, 1, &mut |ir, kk| {
                let src = ir.add(ir.mul(ir.add(pc, kk)?, self.lda)?, ir.add(ic, i0)?)?;
                let dst = ir.add(base, ir.mul(kk, ir.i(mr))?)?;
                for (r, &inside) in insides.iter().enumerate() {
                    let r = r as i64;
                    // Rows past ic_end read the block's first row (in range) and store zero.
                    let x = ir.load_f32_or_zero(self.a, inside, ir.add(src, ir.i(r))?, src)?;
                    ir.store_f32(self.scratch, ir.add(dst, ir.i(r))?, x)?;
                }
                Ok(())
            })
        })
    }

    /// Packs A[ic..ic_end, pc..pc+kc] as MR-row panels after B's panel in scratch:
    /// `Ap[(p·kc + kk)·MR + r]`, rows past `ic_end` zero.
    pub(super) fn pack_a(
        &self,
        ic: IntValue<'ctx>,
        ic_end: IntValue<'ctx>,
        pc: IntValue<'ctx>,
        kc: IntValue<'ctx>,
    ) -> R<()> {
        if self.s.trans_a {
            return self.pack_at(ic, ic_end, pc, kc);
        }
        let ir = self.ir;
        let mr = self.s.tile.mr;
        let rows = ir.sub(ic_end, ic)?;
        let padded = ir.mul(
            ir.b.build_int_signed_div(ir.add(rows, ir.i(mr - 1))?, ir.i(mr), "pr")
                .m()?,
            ir.i(mr),
        )?;
        ir.for_loop(ir.i(0), padded, 1, &mut |ir, i| {
            let inside = ir.icmp(IntPredicate::SLT, i, rows)?;
            let src_row = ir.select_i(inside, ir.add(ic, i)?, ic)?;
            let p = ir.b.build_int_signed_div(i, ir.i(mr), "p").m()?;
            let r = ir.b.build_int_signed_rem(i, ir.i(mr), "r").m()?;
            let a0 = ir.i(self.s.tile.a_block_offset());
            let base = ir.add(ir.mul(ir.mul(p, kc)?, ir.i(mr))?, ir.add(r, a0)?)?;
            let src = ir.add(ir.mul(src_row, self.lda)?, pc)?;
            ir.for_loop(ir.i(0), kc, 1, &mut |ir, kk| {
                let x = ir.zero_unless(inside, ir.load_f32(self.a, ir.add(src, kk)?)?)?;
                ir.store_f32(self.scratch, ir.add(base, ir.mul(kk, ir.i(mr))?)?, x)
            })
        })
    }
}
