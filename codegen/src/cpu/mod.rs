//! Kernels → LLVM IR (inkwell) → machine code for the host CPU: JIT-compiled in process
//! (MCJIT, functions tagged with the host CPU and features, module optimized with LLVM's
//! O3 pipeline first) or emitted as an object file / text.

mod builder;
mod epilogue;
mod gemm;
mod gemv;
mod lower;
mod math;
mod target;

pub use target::{check_cpu_name, check_features, host_cpu, target_machine, CpuTarget};

use crate::kernel::{Body, Compiled, Kernel};
use builder::LlvmBuilder;
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::FileType;
use inkwell::OptimizationLevel;
use oar_runtime::program::KernelFn;

/// Why code generation failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("LLVM target: {0}")]
    Target(String),
    #[error("kernel {kernel}: {message}")]
    Lower { kernel: String, message: String },
    #[error("LLVM rejected the module: {0}")]
    Verify(String),
    #[error("JIT: {0}")]
    Jit(String),
}

/// Builds, verifies and optimizes the module holding every kernel of `compiled` for the
/// CPU of `t`.
pub fn build_module<'ctx>(
    cx: &'ctx Context,
    compiled: &Compiled,
    t: &CpuTarget,
) -> Result<Module<'ctx>, CpuError> {
    let kernels: &[Kernel] = &compiled.kernels;
    let lanes = compiled.tiling().lanes as u32;
    let module = cx.create_module("oar_kernels");
    module.set_triple(&t.machine.get_triple());
    module.set_data_layout(&t.machine.get_target_data().get_data_layout());
    let p = cx.ptr_type(inkwell::AddressSpace::default());
    let i = cx.i64_type();
    let sig = cx
        .void_type()
        .fn_type(&[p.into(), i.into(), i.into(), p.into()], false);
    for k in kernels {
        let f = module.add_function(&k.name, sig, None);
        let ir = LlvmBuilder::new(cx, &module, f, lanes);
        let res = match &k.body {
            Body::Loops(stmts) => lower::lower_loops(&ir, k, stmts),
            Body::Gemm(s) => gemm::lower_gemm_kernel(&ir, k, s),
            Body::Gemv(s) => gemv::lower_gemv_kernel(&ir, k, s),
        };
        res.map_err(|message| CpuError::Lower {
            kernel: k.name.clone(),
            message,
        })?;
    }
    // MCJIT takes the CPU from each function's attributes.
    let cpu_attr = cx.create_string_attribute("target-cpu", &t.cpu);
    let feat_attr = cx.create_string_attribute("target-features", &t.features);
    for f in module.get_functions() {
        if f.count_basic_blocks() > 0 {
            f.add_attribute(inkwell::attributes::AttributeLoc::Function, cpu_attr);
            if !t.features.is_empty() {
                f.add_attribute(inkwell::attributes::AttributeLoc::Function, feat_attr);
            }
        }
    }
    module
        .verify()
        .map_err(|e| CpuError::Verify(e.to_string()))?;
    module
        .run_passes("default<O3>", &t.machine, PassBuilderOptions::create())
        .map_err(|e| CpuError::Verify(e.to_string()))?;
    Ok(module)
}

/// What `--emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    LlvmIr,
    Asm,
    Object,
}

/// The optimized module as LLVM IR text, assembly or an object file, for the CPU the
/// kernels were built for (`compiled.cpu`).
pub fn emit(compiled: &Compiled, what: Emit) -> Result<Vec<u8>, CpuError> {
    let t = target_machine(&compiled.cpu)?;
    let cx = Context::create();
    let module = build_module(&cx, compiled, &t)?;
    Ok(match what {
        Emit::LlvmIr => module.print_to_string().to_bytes().to_vec(),
        Emit::Asm | Emit::Object => {
            let ft = if what == Emit::Asm {
                FileType::Assembly
            } else {
                FileType::Object
            };
            t.machine
                .write_to_memory_buffer(&module, ft)
                .map_err(|e| CpuError::Target(e.to_string()))?
                .as_slice()
                .to_vec()
        }
    })
}

/// JIT-compiled kernels. The LLVM context and engine live as long as this value.
pub struct JitKernels {
    pub kernels: Vec<KernelFn>,
    _engine: ExecutionEngine<'static>,
}

/// Compiles every kernel in process, for this CPU's instruction set whatever CPU the
/// kernels' blocking was chosen for (wider vectors than the host has are split by LLVM:
/// slower, still correct, which is how the tests run other CPUs' tilings here).
pub fn jit(compiled: &Compiled) -> Result<JitKernels, CpuError> {
    let t = target_machine(&host_cpu()?)?;
    // The engine borrows the context; one context per compiled program, kept for its
    // lifetime (a few KB), is simpler than a self-referential struct.
    let cx: &'static Context = Box::leak(Box::new(Context::create()));
    let module = build_module(cx, compiled, &t)?;
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Aggressive)
        .map_err(|e| CpuError::Jit(e.to_string()))?;
    let mut kernels = Vec::new();
    for k in &compiled.kernels {
        let addr = engine
            .get_function_address(&k.name)
            .map_err(|e| CpuError::Jit(format!("{}: {e:?}", k.name)))?;
        // Safety: every kernel was emitted with the KernelFn signature above.
        kernels.push(unsafe { std::mem::transmute::<usize, KernelFn>(addr) });
    }
    Ok(JitKernels {
        kernels,
        _engine: engine,
    })
}
