//! `Program`: what a compiled graph is at run time — buffers and kernel calls in order — and
//! the executor that runs it on CPU threads. Kernels arrive as C-ABI function pointers (from
//! a JIT or a loaded object); the runtime never links LLVM.

mod exec;
mod pool;
mod storage;

pub use exec::{ExecError, Executor};
pub use pool::ThreadPool;

use oar_ir::DType;

/// Every kernel has this signature: buffer pointers in `Step::args` order, the slice
/// `[begin, end)` of its parallel extent to run, and a per-thread scratch area.
pub type KernelFn =
    unsafe extern "C" fn(args: *const *mut u8, begin: i64, end: i64, scratch: *mut u8);

/// What a buffer holds.
#[derive(Debug, Clone, PartialEq)]
pub enum BufferRole {
    /// Graph input `k`.
    Input(usize),
    /// A parameter, loaded from the weights by name.
    Weight(String),
    /// Data fixed at compile time (constants, folded shapes), little-endian.
    Constant(Vec<u8>),
    /// An intermediate or output value.
    Temp,
}

/// One buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferDecl {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub role: BufferRole,
}

impl BufferDecl {
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_bytes() as usize
    }
}

/// One kernel call.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Index into the kernel table.
    pub kernel: usize,
    pub args: Vec<usize>,
    /// The kernel's parallel extent; the executor splits it across threads.
    pub extent: i64,
    /// Smallest slice worth a thread (small kernels run on one).
    pub grain: i64,
}

/// A compiled graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    pub buffers: Vec<BufferDecl>,
    pub steps: Vec<Step>,
    /// The first `prologue` steps read only weights and constants: the executor runs them
    /// once, when the program is loaded (BatchNorm folded into weights, weight scaling),
    /// and every run starts after them.
    pub prologue: usize,
    /// Kernel symbol names, indexed by `Step::kernel`.
    pub kernels: Vec<String>,
    /// Buffers of the graph outputs, in order.
    pub outputs: Vec<usize>,
    /// Bytes of scratch each thread needs (GEMM packing, im2col).
    pub scratch_bytes: usize,
    /// Temporaries that keep their own zero-initialised memory: kernels write only part of
    /// them and read the rest as zero (a padded copy's border).
    pub zeroed: Vec<usize>,
    /// Per buffer, the buffer whose memory it uses ([`Program::plan_storage`]); empty
    /// means every buffer has its own.
    pub storage: Vec<usize>,
}
