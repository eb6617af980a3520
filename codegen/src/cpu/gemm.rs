//! The generated SGEMM: BLIS-style blocking (NC columns × KC depth panels of B packed into
//! per-thread scratch, MC-row blocks of A), an MR × NR register-blocked micro-kernel of
//! FMAs on the target's vectors (6 × 16 on AVX2: 12 accumulators; 14 × 32 on AVX-512: 28),
//! and the epilogue (bias, residual, activation) applied on the last depth panel as tiles
//! are stored. The blocking comes from the spec's [`Tiling`]. One routine is generated per
//! epilogue variant; the kernel wrapper calls it for its slice of column panels.

use super::builder::{LlvmBuilder, OrMsg, R};
use super::epilogue::Epilogue;
use super::lower::load_args;
use crate::kernel::{BiasMode, GemmAct, GemmSpec, Kernel, Tiling};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

#[path = "gemm_pack.rs"]
mod pack;

fn variant_name(s: &GemmSpec) -> String {
    let act = match s.act {
        GemmAct::None => "none".to_string(),
        GemmAct::Relu => "relu".into(),
        GemmAct::Clip(a, b) => format!("clip{:08x}_{:08x}", a.to_bits(), b.to_bits()),
        GemmAct::HardSwish => "hswish".into(),
        GemmAct::HardSigmoid(a, b) => format!("hsig{:08x}_{:08x}", a.to_bits(), b.to_bits()),
    };
    let a = if s.a_packed { "_apacked" } else { "" };
    let b = if reads_b_directly(s) { "_bdirect" } else { "" };
    let tr = match (s.trans_a, s.trans_b) {
        (false, false) => "",
        (true, false) => "_ta",
        (false, true) => "_tb",
        (true, true) => "_tatb",
    };
    let t = &s.tile;
    let tile = format!("{}x{}_{}_{}_{}", t.mr, t.nr, t.kc, t.mc, t.nc);
    format!(
        "oar_sgemm_{tile}_{:?}_{}_{act}{a}{b}{tr}",
        s.bias, s.residual as u8
    )
    .to_lowercase()
}

/// Shallow products (a 1×1 convolution with few input channels) read B's full panels in
/// place: an NR-column strip of at most 64 rows stays in L1 across the row tiles, and
/// packing it would cost about as much as the multiply-adds. Partial panels are packed.
/// A transposed B has no such rows: it is always packed.
fn reads_b_directly(s: &GemmSpec) -> bool {
    s.k <= 64 && !s.trans_b
}

/// `void f(A, B, C, bias, res, row_hi, N, K, lda, ldb, ldc, col_lo, col_hi, scratch, row_lo)`:
/// one batch, rows `[row_lo, row_hi)`, columns `[col_lo, col_hi)`.
fn sgemm<'ctx>(cx: &'ctx Context, module: &Module<'ctx>, s: &GemmSpec) -> R<FunctionValue<'ctx>> {
    let name = variant_name(s);
    if let Some(f) = module.get_function(&name) {
        return Ok(f);
    }
    let p = cx.ptr_type(inkwell::AddressSpace::default());
    let i = cx.i64_type();
    let ty = cx.void_type().fn_type(
        &[
            p.into(),
            p.into(),
            p.into(),
            p.into(),
            p.into(),
            i.into(),
            i.into(),
            i.into(),
            i.into(),
            i.into(),
            i.into(),
            i.into(),
            i.into(),
            p.into(),
            i.into(),
        ],
        false,
    );
    let f = module.add_function(&name, ty, Some(Linkage::Internal));
    let ir = LlvmBuilder::new(cx, module, f, s.tile.lanes as u32);
    let arg = |k: u32| f.get_nth_param(k).expect("declared above");
    let (a, bm, c, bias, res) = (
        arg(0).into_pointer_value(),
        arg(1).into_pointer_value(),
        arg(2).into_pointer_value(),
        arg(3).into_pointer_value(),
        arg(4).into_pointer_value(),
    );
    let [m, n, k, lda, ldb, ldc, col_lo, col_hi] =
        [5, 6, 7, 8, 9, 10, 11, 12].map(|q| arg(q).into_int_value());
    let scratch = arg(13).into_pointer_value();
    let row_lo = arg(14).into_int_value();
    let Tiling {
        mr, nr, kc, mc, nc, ..
    } = s.tile;
    let tmp = ir.entry_alloca(cx.f32_type().array_type((mr * nr) as u32).into(), "tile")?;
    let g = Gemm {
        ir: &ir,
        s,
        a,
        bm,
        c,
        bias,
        res,
        m,
        k,
        lda,
        ldb,
        ldc,
        scratch,
        tmp,
        row_lo,
    };
    ir.for_loop(col_lo, col_hi, nc, &mut |ir, jc| {
        let ncols = ir.min(ir.i(nc), ir.sub(col_hi, jc)?)?;
        ir.for_loop(ir.i(0), k, kc, &mut |ir, pc| {
            let depth = ir.min(ir.i(kc), ir.sub(k, pc)?)?;
            g.pack(jc, ncols, pc, depth)?;
            let first = ir.icmp(IntPredicate::EQ, pc, ir.i(0))?;
            let last = ir.icmp(IntPredicate::SGE, ir.add(pc, depth)?, k)?;
            ir.for_loop(row_lo, m, mc, &mut |ir, ic| {
                let ic_end = ir.min(ir.add(ic, ir.i(mc))?, m)?;
                if !s.a_packed {
                    g.pack_a(ic, ic_end, pc, depth)?;
                }
                ir.for_loop(ir.i(0), ncols, nr, &mut |ir, jr| {
                    ir.for_loop(ic, ic_end, mr, &mut |_, row| {
                        g.micro(row, jc, jr, ncols, pc, depth, first, last)
                    })
                })
            })
        })
    })?;
    let _ = n;
    ir.b.build_return(None).m()?;
    Ok(f)
}

/// Where one tile of C is stored and how: its first row and column, its valid rows and
/// columns (fewer at the edges), and whether this depth panel is the first (C not yet
/// written) and the last (apply the epilogue).
#[derive(Clone, Copy)]
struct TileAt<'ctx> {
    row: IntValue<'ctx>,
    col: IntValue<'ctx>,
    mr: IntValue<'ctx>,
    nr: IntValue<'ctx>,
    first: IntValue<'ctx>,
    last: IntValue<'ctx>,
}

struct Gemm<'a, 'b, 'ctx> {
    ir: &'a LlvmBuilder<'b, 'ctx>,
    s: &'a GemmSpec,
    a: PointerValue<'ctx>,
    bm: PointerValue<'ctx>,
    c: PointerValue<'ctx>,
    bias: PointerValue<'ctx>,
    res: PointerValue<'ctx>,
    m: IntValue<'ctx>,
    k: IntValue<'ctx>,
    lda: IntValue<'ctx>,
    ldb: IntValue<'ctx>,
    ldc: IntValue<'ctx>,
    scratch: PointerValue<'ctx>,
    tmp: PointerValue<'ctx>,
    row_lo: IntValue<'ctx>,
}

impl<'ctx> Gemm<'_, '_, 'ctx> {
    fn tail(&self) -> Epilogue<'_, '_, 'ctx> {
        Epilogue {
            ir: self.ir,
            s: self.s,
            bias: self.bias,
            res: self.res,
        }
    }

    /// One MR × NR tile of C at (row, jc + jr).
    #[allow(clippy::too_many_arguments)]
    fn micro(
        &self,
        row: IntValue<'ctx>,
        jc: IntValue<'ctx>,
        jr: IntValue<'ctx>,
        nc: IntValue<'ctx>,
        pc: IntValue<'ctx>,
        kc: IntValue<'ctx>,
        first: IntValue<'ctx>,
        last: IntValue<'ctx>,
    ) -> R<()> {
        let ir = self.ir;
        let Tiling {
            mr: tmr,
            nr: tnr,
            lanes,
            ..
        } = self.s.tile;
        let mr = ir.min(ir.i(tmr), ir.sub(self.m, row)?)?;
        let nr = ir.min(ir.i(tnr), ir.sub(nc, jr)?)?;
        let col = ir.add(jc, jr)?;
        let panel = ir.b.build_int_signed_div(jr, ir.i(tnr), "pn").m()?;
        let bp = ir.mul(ir.mul(panel, kc)?, ir.i(tnr))?;
        // This tile's packed A panel: MR consecutive values per k, either packed by the
        // prologue (whole depth; rows start at multiples of MR) or by `pack_a` in scratch.
        let (apanels, ap) = if self.s.a_packed {
            let p = ir.b.build_int_signed_div(row, ir.i(tmr), "ap").m()?;
            let at = ir.mul(ir.add(ir.mul(p, self.k)?, pc)?, ir.i(tmr))?;
            (self.a, at)
        } else {
            let ic_panel =
                ir.b.build_int_signed_div(ir.sub(row, self.ic_of(row)?)?, ir.i(tmr), "ap")
                    .m()?;
            let a0 = ir.i(self.s.tile.a_block_offset());
            let at = ir.add(ir.mul(ir.mul(ic_panel, kc)?, ir.i(tmr))?, a0)?;
            (self.scratch, at)
        };
        // This tile's B panel: packed in scratch, or (shallow products, full panels) B itself.
        let (bbase, boff, bstride) = if reads_b_directly(self.s) {
            let full = ir.icmp(IntPredicate::EQ, nr, ir.i(tnr))?;
            let pick = |a: IntValue<'ctx>, b: IntValue<'ctx>| -> R<IntValue<'ctx>> {
                Ok(ir.b.build_select(full, a, b, "bsel").m()?.into_int_value())
            };
            let base =
                ir.b.build_select(full, self.bm, self.scratch, "bbase")
                    .m()?
                    .into_pointer_value();
            let direct = ir.add(ir.mul(pc, self.ldb)?, col)?;
            (base, pick(direct, bp)?, pick(self.ldb, ir.i(tnr))?)
        } else {
            (self.scratch, bp, ir.i(tnr))
        };
        let b_panel = (bbase, boff, bstride);
        // C's tile is read (after the first depth panel) and written once the depth loop
        // ends: fetch its lines meanwhile.
        for r in 0..tmr {
            let at = ir.add(ir.mul(ir.add(row, ir.i(r))?, self.ldc)?, col)?;
            ir.prefetch_write(self.c, at)?;
            ir.prefetch_write(self.c, ir.add(at, ir.i(tnr - 1))?)?;
        }
        // A tail panel at most one vector wide (n = 49 leaves one column): a tile of one
        // vector per row, half the work of a full-width one.
        let tile = TileAt {
            row,
            col,
            mr,
            nr,
            first,
            last,
        };
        let narrow = ir.icmp(IntPredicate::SLE, nr, ir.i(lanes))?;
        ir.if_else(
            narrow,
            &mut |_| {
                let acc = self.kloop(1, (apanels, ap), b_panel, kc)?;
                self.store_edge(&acc, 1, tile)
            },
            &mut |_| {
                let vpr = self.s.tile.vectors_per_row();
                let acc = self.kloop(vpr, (apanels, ap), b_panel, kc)?;
                self.store_tile(&acc, tile)
            },
        )
    }

    /// Stores a full-width tile's accumulators: vector stores for full tiles (the first
    /// depth panel skips reading C) and for rows of full-width tiles, the edge path else.
    fn store_tile(&self, acc: &[VectorValue<'ctx>], tile: TileAt<'ctx>) -> R<()> {
        let ir = self.ir;
        let Tiling {
            mr: tmr,
            nr: tnr,
            lanes,
            ..
        } = self.s.tile;
        let vpr = self.s.tile.vectors_per_row();
        let TileAt {
            row,
            col,
            mr,
            nr,
            first,
            last,
        } = tile;
        let full =
            ir.b.build_and(
                ir.icmp(IntPredicate::EQ, mr, ir.i(tmr))?,
                ir.icmp(IntPredicate::EQ, nr, ir.i(tnr))?,
                "full",
            )
            .m()?;
        // Full tiles: vector stores; the first depth panel skips reading C.
        let store_row =
            |ir: &LlvmBuilder<'_, 'ctx>, r: usize, accumulate: Option<IntValue<'ctx>>| -> R<()> {
                let crow = ir.mul(ir.add(row, ir.i(r as i64))?, self.ldc)?;
                for v in 0..vpr {
                    let c0 = ir.add(col, ir.i(v as i64 * lanes))?;
                    let at = ir.add(crow, c0)?;
                    let t = acc[r * vpr + v];
                    let x = match accumulate {
                        Some(first) => {
                            let old = ir.load_v(self.c, at)?;
                            let sum = ir.b.build_float_add(t, old, "c").m()?;
                            ir.b.build_select(first, t, sum, "x")
                                .m()?
                                .into_vector_value()
                        }
                        None => t,
                    };
                    let e = self
                        .tail()
                        .vector(x, ir.add(row, ir.i(r as i64))?, c0, at)?;
                    let y = ir.b.build_select(last, e, x, "y").m()?.into_vector_value();
                    ir.store_v(self.c, at, y)?;
                }
                Ok(())
            };
        let store_full = |ir: &LlvmBuilder<'_, 'ctx>, accumulate: bool| -> R<()> {
            for r in 0..tmr as usize {
                store_row(ir, r, accumulate.then_some(ir.cx.bool_type().const_zero()))?;
            }
            Ok(())
        };
        // Full-width tiles with fewer rows (M not a multiple of MR): vector rows while r < mr.
        let wide = ir.icmp(IntPredicate::EQ, nr, ir.i(tnr))?;
        let store_wide = |ir: &LlvmBuilder<'_, 'ctx>| -> R<()> {
            for r in 0..tmr as usize {
                let has = ir.icmp(IntPredicate::SLT, ir.i(r as i64), mr)?;
                ir.if_else(
                    has,
                    &mut |ir| store_row(ir, r, Some(first)),
                    &mut |_| Ok(()),
                )?;
            }
            Ok(())
        };
        ir.if_else(
            full,
            &mut |ir| {
                ir.if_else(first, &mut |ir| store_full(ir, false), &mut |ir| {
                    store_full(ir, true)
                })
            },
            &mut |ir| {
                ir.if_else(wide, &mut |ir| store_wide(ir), &mut |_| {
                    self.store_edge(acc, vpr, tile)
                })
            },
        )
    }

    /// The depth loop of one tile: MR × `vpr` vector accumulators as phis, each step one
    /// broadcast of A per row times `vpr` vectors of B's panel row. `a` is A's packed panel
    /// (base, offset), `b` B's panel (base, offset, row stride).
    fn kloop(
        &self,
        vpr: usize,
        (apanels, ap): (PointerValue<'ctx>, IntValue<'ctx>),
        (bbase, boff, bstride): (PointerValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>),
        kc: IntValue<'ctx>,
    ) -> R<Vec<VectorValue<'ctx>>> {
        let ir = self.ir;
        let Tiling { mr: tmr, lanes, .. } = self.s.tile;
        let vt = ir.vt();
        let pre = ir.b.get_insert_block().ok_or("no block")?;
        let header = ir.block("kloop");
        let body = ir.block("kbody");
        let exit = ir.block("kexit");
        ir.b.build_unconditional_branch(header).m()?;
        ir.b.position_at_end(header);
        let kphi = ir.b.build_phi(ir.i64t(), "k").m()?;
        kphi.add_incoming(&[(&ir.i(0), pre)]);
        let zero = vt.const_zero();
        let mut accs = Vec::new();
        for _ in 0..tmr as usize * vpr {
            let phi = ir.b.build_phi(vt, "acc").m()?;
            phi.add_incoming(&[(&zero, pre)]);
            accs.push(phi);
        }
        let kk = kphi.as_basic_value().into_int_value();
        let cond = ir.icmp(IntPredicate::SLT, kk, kc)?;
        ir.b.build_conditional_branch(cond, body, exit).m()?;
        ir.b.position_at_end(body);
        let bidx = ir.add(boff, ir.mul(kk, bstride)?)?;
        let bv: Vec<VectorValue<'ctx>> = (0..vpr as i64)
            .map(|v| ir.load_v(bbase, ir.add(bidx, ir.i(v * lanes))?))
            .collect::<R<_>>()?;
        let mut next = Vec::new();
        for r in 0..tmr as usize {
            let a = ir.load_f32(
                apanels,
                ir.add(ap, ir.add(ir.mul(kk, ir.i(tmr))?, ir.i(r as i64))?)?,
            )?;
            let av = ir.splat(a)?;
            for v in 0..vpr {
                let acc = accs[r * vpr + v].as_basic_value().into_vector_value();
                let fma = ir
                    .intrinsic(
                        "llvm.fma",
                        vt.into(),
                        &[av.into(), bv[v].into(), acc.into()],
                    )?
                    .into_vector_value();
                next.push(fma);
            }
        }
        let knext = ir.add(kk, ir.i(1))?;
        let latch = ir.b.get_insert_block().ok_or("no block")?;
        kphi.add_incoming(&[(&knext, latch)]);
        for (phi, v) in accs.iter().zip(&next) {
            phi.add_incoming(&[(v, latch)]);
        }
        ir.b.build_unconditional_branch(header).m()?;
        ir.b.position_at_end(exit);
        let acc: Vec<VectorValue<'ctx>> = accs
            .iter()
            .map(|p| p.as_basic_value().into_vector_value())
            .collect();
        Ok(acc)
    }

    /// Tiles at the right edge (`vpr` vectors per row): through a stack tile, element by
    /// element.
    fn store_edge(&self, acc: &[VectorValue<'ctx>], vpr: usize, tile: TileAt<'ctx>) -> R<()> {
        let ir = self.ir;
        let TileAt {
            row,
            col,
            mr,
            nr,
            first,
            last,
        } = tile;
        let lanes = self.s.tile.lanes;
        let stride = ir.i(vpr as i64 * lanes);
        for (q, a) in acc.iter().enumerate() {
            ir.store_v(self.tmp, ir.i(q as i64 * lanes), *a)?;
        }
        ir.for_loop(ir.i(0), mr, 1, &mut |ir, r| {
            ir.for_loop(ir.i(0), nr, 1, &mut |ir, j| {
                let at = ir.add(ir.mul(ir.add(row, r)?, self.ldc)?, ir.add(col, j)?)?;
                let t = ir.load_f32(self.tmp, ir.add(ir.mul(r, stride)?, j)?)?;
                let old = ir.load_f32(self.c, at)?;
                let sum = ir.b.build_float_add(t, old, "c").m()?;
                let x =
                    ir.b.build_select(first, t, sum, "x")
                        .m()?
                        .into_float_value();
                let e = self
                    .tail()
                    .scalar(x, ir.add(row, r)?, ir.add(col, j)?, at)?;
                let y = ir.b.build_select(last, e, x, "y").m()?.into_float_value();
                ir.store_f32(self.c, at, y)
            })
        })
    }

    /// The start of the MC block holding `row` (blocks start at multiples of MC from row_lo).
    fn ic_of(&self, row: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        let ir = self.ir;
        let off = ir.sub(row, self.row_lo)?;
        let mc = self.s.tile.mc;
        let blk = ir.b.build_int_signed_div(off, ir.i(mc), "blk").m()?;
        ir.add(self.row_lo, ir.mul(blk, ir.i(mc))?)
    }
}

/// The kernel wrapper: for its slice `[begin, end)` of `batch × ⌈n/NR⌉` column panels,
/// calls the routine once per batch it touches.
pub(crate) fn lower_gemm_kernel<'ctx>(
    ir: &LlvmBuilder<'_, 'ctx>,
    k: &Kernel,
    s: &GemmSpec,
) -> R<()> {
    let f = sgemm(ir.cx, ir.module, s)?;
    let bufs = load_args(ir, k.params.len())?;
    let (a, b, c) = (bufs[0], bufs[1], bufs[2]);
    let mut next = 3;
    let null = ir.ptrt().const_null();
    let bias = if s.bias != BiasMode::None {
        next += 1;
        bufs[next - 1]
    } else {
        null
    };
    let res = if s.residual { bufs[next] } else { null };
    let begin = ir.func.get_nth_param(1).ok_or("no begin")?.into_int_value();
    let end = ir.func.get_nth_param(2).ok_or("no end")?.into_int_value();
    let scratch = ir
        .func
        .get_nth_param(3)
        .ok_or("no scratch")?
        .into_pointer_value();
    let Tiling { mr, nr, .. } = s.tile;
    let ncb = (s.n + nr - 1) / nr;
    let rc = s.row_chunks.max(1);
    // Rows per chunk, a multiple of the micro-tile height.
    let crow = ((s.m + rc - 1) / rc + mr - 1) / mr * mr;
    let q0 = ir.b.build_int_signed_div(begin, ir.i(ncb), "q0").m()?;
    let last = ir.sub(end, ir.i(1))?;
    let q1 = ir.add(
        ir.b.build_int_signed_div(last, ir.i(ncb), "q1").m()?,
        ir.i(1),
    )?;
    // Segment q = (batch q / rc, row chunk q % rc) over a run of column panels.
    ir.for_loop(q0, q1, 1, &mut |ir, q| {
        let bt = ir.b.build_int_signed_div(q, ir.i(rc), "bt").m()?;
        let chunk = ir.b.build_int_signed_rem(q, ir.i(rc), "rc").m()?;
        let row_lo = ir.min(ir.mul(chunk, ir.i(crow))?, ir.i(s.m))?;
        let row_hi = ir.min(ir.add(row_lo, ir.i(crow))?, ir.i(s.m))?;
        let base = ir.mul(q, ir.i(ncb))?;
        let lo = ir.sub(
            ir.b.build_select(ir.icmp(IntPredicate::SGT, begin, base)?, begin, base, "lo")
                .m()?
                .into_int_value(),
            base,
        )?;
        let hi_panel = ir.min(end, ir.add(base, ir.i(ncb))?)?;
        let hi = ir.sub(hi_panel, base)?;
        let col_lo = ir.mul(lo, ir.i(nr))?;
        let col_hi = ir.min(ir.mul(hi, ir.i(nr))?, ir.i(s.n))?;
        let off = |p: PointerValue<'ctx>, stride: i64| -> R<PointerValue<'ctx>> {
            if stride == 0 || p.is_null() {
                return Ok(p);
            }
            ir.gep(ir.f32t().into(), p, ir.mul(bt, ir.i(stride))?)
        };
        let args = [
            off(a, s.stride_a)?.into(),
            off(b, s.stride_b)?.into(),
            off(c, s.stride_c)?.into(),
            bias.into(),
            if s.residual {
                off(res, s.stride_c)?
            } else {
                res
            }
            .into(),
            row_hi.into(),
            ir.i(s.n).into(),
            ir.i(s.k).into(),
            ir.i(s.lda).into(),
            ir.i(s.ldb).into(),
            ir.i(s.ldc).into(),
            col_lo.into(),
            col_hi.into(),
            scratch.into(),
            row_lo.into(),
        ];
        ir.b.build_call(f, &args, "").m()?;
        Ok(())
    })?;
    ir.b.build_return(None).m()?;
    Ok(())
}
