//! `LlvmBuilder`: a thin layer over inkwell's builder for the code generators: typed helpers
//! for loops, branches, loads and stores, with LLVM's builder errors turned into strings.

use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::{BasicTypeEnum, FloatType, IntType, PointerType, VectorType};
use inkwell::values::{
    AsValueRef, BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatValue, FunctionValue,
    InstructionValue, IntValue, MetadataValue, PointerValue, VectorValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};
use std::cell::RefCell;

pub(crate) type R<T> = Result<T, String>;

pub(crate) trait OrMsg<T> {
    fn m(self) -> R<T>;
}

impl<T, E: std::fmt::Debug> OrMsg<T> for Result<T, E> {
    fn m(self) -> R<T> {
        self.map_err(|e| format!("LLVM builder: {e:?}"))
    }
}

pub(crate) struct LlvmBuilder<'a, 'ctx> {
    pub cx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub b: Builder<'ctx>,
    pub func: FunctionValue<'ctx>,
    /// f32 lanes of the vectors the hand-built loops use (the target's register width).
    pub lanes: u32,
    /// Buffer base pointers known not to overlap, with each one's `alias.scope` and
    /// `noalias` lists: without them LLVM must assume a kernel's output may overlap its
    /// inputs and gives up vectorizing loops that mix them.
    scopes: RefCell<Vec<(usize, MetadataValue<'ctx>, MetadataValue<'ctx>)>>,
}

impl<'a, 'ctx> LlvmBuilder<'a, 'ctx> {
    pub fn new(
        cx: &'ctx Context,
        module: &'a Module<'ctx>,
        func: FunctionValue<'ctx>,
        lanes: u32,
    ) -> LlvmBuilder<'a, 'ctx> {
        let b = cx.create_builder();
        let entry = cx.append_basic_block(func, "entry");
        b.position_at_end(entry);
        LlvmBuilder {
            cx,
            module,
            b,
            func,
            lanes,
            scopes: RefCell::new(Vec::new()),
        }
    }

    /// Declares `bases` as pairwise disjoint buffers: later loads and stores through them
    /// carry scoped no-alias metadata. Only for the program's buffers, which never overlap
    /// when one is written (a kernel writes its own output; views are only read).
    pub fn disjoint_buffers(&self, bases: &[PointerValue<'ctx>]) {
        let domain = self
            .cx
            .metadata_node(&[self.cx.metadata_string("oar.buffers").into()]);
        let scopes: Vec<MetadataValue<'ctx>> = (0..bases.len())
            .map(|k| {
                self.cx.metadata_node(&[
                    self.cx.metadata_string(&format!("oar.b{k}")).into(),
                    domain.into(),
                ])
            })
            .collect();
        let mut table = self.scopes.borrow_mut();
        table.clear();
        for (k, base) in bases.iter().enumerate() {
            let own = self.cx.metadata_node(&[scopes[k].into()]);
            let others: Vec<BasicMetadataValueEnum<'ctx>> = scopes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .map(|(_, s)| (*s).into())
                .collect();
            let others = self.cx.metadata_node(&others);
            table.push((base.as_value_ref() as usize, own, others));
        }
    }

    /// Attaches the scope metadata of `base`'s buffer to a load or store through it.
    pub fn tag(&self, base: PointerValue<'ctx>, inst: InstructionValue<'ctx>) -> R<()> {
        let key = base.as_value_ref() as usize;
        if let Some((_, own, others)) = self.scopes.borrow().iter().find(|e| e.0 == key) {
            inst.set_metadata(*own, self.cx.get_kind_id("alias.scope"))
                .m()?;
            inst.set_metadata(*others, self.cx.get_kind_id("noalias"))
                .m()?;
        }
        Ok(())
    }

    /// A load of `ty` at element `idx` of `base`, tagged with its buffer's scope.
    pub fn load_elem(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> R<BasicValueEnum<'ctx>> {
        let p = self.gep(ty, base, idx)?;
        let v = self.b.build_load(ty, p, "x").m()?;
        if let Some(i) = v.as_instruction_value() {
            self.tag(base, i)?;
        }
        Ok(v)
    }

    pub fn f32t(&self) -> FloatType<'ctx> {
        self.cx.f32_type()
    }
    pub fn i64t(&self) -> IntType<'ctx> {
        self.cx.i64_type()
    }
    pub fn ptrt(&self) -> PointerType<'ctx> {
        self.cx.ptr_type(AddressSpace::default())
    }
    /// A vector of `lanes` floats.
    pub fn vt(&self) -> VectorType<'ctx> {
        self.cx.f32_type().vec_type(self.lanes)
    }
    pub fn i(&self, v: i64) -> IntValue<'ctx> {
        self.i64t().const_int(v as u64, true)
    }
    pub fn f(&self, v: f32) -> FloatValue<'ctx> {
        self.f32t().const_float(v as f64)
    }

    pub fn block(&self, name: &str) -> BasicBlock<'ctx> {
        self.cx.append_basic_block(self.func, name)
    }

    /// Address of element `idx` of `ty` elements at `base`.
    pub fn gep(
        &self,
        ty: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
    ) -> R<PointerValue<'ctx>> {
        unsafe { self.b.build_in_bounds_gep(ty, base, &[idx], "p").m() }
    }

    pub fn load_f32(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self
            .load_elem(self.f32t().into(), base, idx)?
            .into_float_value())
    }

    /// `a` where `cond`, else `b`: keeps a padded lane's index in range.
    pub fn select_i(
        &self,
        cond: IntValue<'ctx>,
        a: IntValue<'ctx>,
        b: IntValue<'ctx>,
    ) -> R<IntValue<'ctx>> {
        Ok(self.b.build_select(cond, a, b, "sel").m()?.into_int_value())
    }

    /// `x` where `cond`, else 0.0.
    pub fn zero_unless(&self, cond: IntValue<'ctx>, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self
            .b
            .build_select(cond, x, self.f(0.0), "z")
            .m()?
            .into_float_value())
    }

    /// `base[at]` where `inside`, else 0.0 — read from `base[fallback]` (in range), so the
    /// load stays unconditional and a packing loop has no branch.
    pub fn load_f32_or_zero(
        &self,
        base: PointerValue<'ctx>,
        inside: IntValue<'ctx>,
        at: IntValue<'ctx>,
        fallback: IntValue<'ctx>,
    ) -> R<FloatValue<'ctx>> {
        let x = self.load_f32(base, self.select_i(inside, at, fallback)?)?;
        self.zero_unless(inside, x)
    }

    pub fn store_f32(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        v: FloatValue<'ctx>,
    ) -> R<()> {
        let p = self.gep(self.f32t().into(), base, idx)?;
        let st = self.b.build_store(p, v).m()?;
        self.tag(base, st)
    }

    pub fn store_i64(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        v: IntValue<'ctx>,
    ) -> R<()> {
        let p = self.gep(self.i64t().into(), base, idx)?;
        let st = self.b.build_store(p, v).m()?;
        self.tag(base, st)
    }

    /// Stores an i1 as a 0/1 byte (bool buffers).
    pub fn store_bool(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        bit: IntValue<'ctx>,
    ) -> R<()> {
        let i8t = self.cx.i8_type();
        let byte = self.b.build_int_z_extend(bit, i8t, "b").m()?;
        let p = self.gep(i8t.into(), base, idx)?;
        let st = self.b.build_store(p, byte).m()?;
        self.tag(base, st)
    }

    /// An unaligned load of `lanes` floats at element `idx`.
    pub fn load_v(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> R<VectorValue<'ctx>> {
        let p = self.gep(self.f32t().into(), base, idx)?;
        let v = self.b.build_load(self.vt(), p, "v").m()?;
        if let Some(inst) = v.as_instruction_value() {
            inst.set_alignment(4).m()?;
            self.tag(base, inst)?;
        }
        Ok(v.into_vector_value())
    }

    pub fn store_v(
        &self,
        base: PointerValue<'ctx>,
        idx: IntValue<'ctx>,
        v: VectorValue<'ctx>,
    ) -> R<()> {
        let p = self.gep(self.f32t().into(), base, idx)?;
        let st = self.b.build_store(p, v).m()?;
        st.set_alignment(4).m()?;
        self.tag(base, st)
    }

    pub fn splat(&self, x: FloatValue<'ctx>) -> R<VectorValue<'ctx>> {
        let undef = self.vt().get_poison();
        let v = self
            .b
            .build_insert_element(undef, x, self.cx.i32_type().const_zero(), "s")
            .m()?;
        let mask =
            VectorType::const_vector(&vec![self.cx.i32_type().const_zero(); self.lanes as usize]);
        self.b.build_shuffle_vector(v, undef, mask, "splat").m()
    }

    pub fn add(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        self.b.build_int_nsw_add(a, b, "a").m()
    }
    pub fn mul(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        self.b.build_int_nsw_mul(a, b, "m").m()
    }
    pub fn sub(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        self.b.build_int_nsw_sub(a, b, "s").m()
    }
    pub fn icmp(&self, p: IntPredicate, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        self.b.build_int_compare(p, a, b, "c").m()
    }
    pub fn min(&self, a: IntValue<'ctx>, b: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        let c = self.icmp(IntPredicate::SLT, a, b)?;
        Ok(self.b.build_select(c, a, b, "min").m()?.into_int_value())
    }
    pub fn fcmp(
        &self,
        p: FloatPredicate,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> R<IntValue<'ctx>> {
        self.b.build_float_compare(p, a, b, "fc").m()
    }

    /// Calls an overloaded intrinsic (`llvm.fma`, `llvm.maxnum`, …) on values of type `ty`.
    pub fn intrinsic(
        &self,
        name: &str,
        ty: BasicTypeEnum<'ctx>,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> R<BasicValueEnum<'ctx>> {
        let i = Intrinsic::find(name).ok_or_else(|| format!("no intrinsic {name}"))?;
        let f = i
            .get_declaration(self.module, &[ty])
            .ok_or_else(|| format!("cannot declare {name}"))?;
        self.b
            .build_call(f, args, "r")
            .m()?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| format!("{name} returned nothing"))
    }

    /// Prefetches the cache line holding element `idx` of `base` for writing.
    pub fn prefetch_write(&self, base: PointerValue<'ctx>, idx: IntValue<'ctx>) -> R<()> {
        let i = Intrinsic::find("llvm.prefetch").ok_or("no llvm.prefetch")?;
        let f = i
            .get_declaration(self.module, &[self.ptrt().into()])
            .ok_or("cannot declare llvm.prefetch")?;
        // Not `inbounds`: the address may lie past a partial tile, and a prefetch never faults.
        let p = unsafe { self.b.build_gep(self.f32t(), base, &[idx], "pf").m()? };
        let i32t = self.cx.i32_type();
        let args = [
            p.into(),
            i32t.const_int(1, false).into(),
            i32t.const_int(3, false).into(),
            i32t.const_int(1, false).into(),
        ];
        self.b.build_call(f, &args, "").m()?;
        Ok(())
    }

    /// Calls `float name(float)` from the C math library.
    pub fn libm(&self, name: &str, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let f = match self.module.get_function(name) {
            Some(f) => f,
            None => {
                let ty = self.f32t().fn_type(&[self.f32t().into()], false);
                self.module.add_function(name, ty, None)
            }
        };
        Ok(self
            .b
            .build_call(f, &[x.into()], "m")
            .m()?
            .try_as_basic_value()
            .basic()
            .ok_or("libm call returned nothing")?
            .into_float_value())
    }

    /// `for i in lo..hi step step { body(i) }`, leaving the builder after the loop.
    pub fn for_loop(
        &self,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        step: i64,
        body: &mut dyn FnMut(&Self, IntValue<'ctx>) -> R<()>,
    ) -> R<()> {
        let pre = self.b.get_insert_block().ok_or("builder has no block")?;
        let header = self.block("loop");
        let inner = self.block("body");
        let exit = self.block("exit");
        self.b.build_unconditional_branch(header).m()?;
        self.b.position_at_end(header);
        let phi = self.b.build_phi(self.i64t(), "i").m()?;
        phi.add_incoming(&[(&lo, pre)]);
        let i = phi.as_basic_value().into_int_value();
        let c = self.icmp(IntPredicate::SLT, i, hi)?;
        self.b.build_conditional_branch(c, inner, exit).m()?;
        self.b.position_at_end(inner);
        body(self, i)?;
        let next = self.add(i, self.i(step))?;
        let latch = self.b.get_insert_block().ok_or("builder has no block")?;
        phi.add_incoming(&[(&next, latch)]);
        self.b.build_unconditional_branch(header).m()?;
        self.b.position_at_end(exit);
        Ok(())
    }

    /// `if c { then() } else { other() }`.
    pub fn if_else(
        &self,
        c: IntValue<'ctx>,
        then: &mut dyn FnMut(&Self) -> R<()>,
        other: &mut dyn FnMut(&Self) -> R<()>,
    ) -> R<()> {
        let t = self.block("then");
        let e = self.block("else");
        let j = self.block("join");
        self.b.build_conditional_branch(c, t, e).m()?;
        self.b.position_at_end(t);
        then(self)?;
        self.b.build_unconditional_branch(j).m()?;
        self.b.position_at_end(e);
        other(self)?;
        self.b.build_unconditional_branch(j).m()?;
        self.b.position_at_end(j);
        Ok(())
    }

    /// An alloca in the entry block (so mem2reg promotes it).
    pub fn entry_alloca(&self, ty: BasicTypeEnum<'ctx>, name: &str) -> R<PointerValue<'ctx>> {
        let entry = self
            .func
            .get_first_basic_block()
            .ok_or("function has no entry")?;
        let tmp = self.cx.create_builder();
        match entry.get_first_instruction() {
            Some(i) => tmp.position_before(&i),
            None => tmp.position_at_end(entry),
        }
        tmp.build_alloca(ty, name).m()
    }
}
