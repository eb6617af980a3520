//! `Program`: what a compiled graph is at run time — buffers and kernel calls in order — and
//! the executor that runs it on CPU threads. Kernels arrive as C-ABI function pointers (from
//! a JIT or a loaded object); the runtime never links LLVM. Per-rank programs also hold
//! collective and send/recv steps, which the executor runs through a `Communicator`.

mod exec;
mod pool;
mod state;
mod storage;

pub use exec::{ExecError, Executor};
pub use pool::ThreadPool;
pub use state::dropout_keep_fast;

pub use crate::comm::shaped::Collective;
use oar_ir::{DType, ProcessMesh};

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

/// One step of a program: what it does and the buffers it names (kernel parameters in
/// order; `[input, output]` for a collective; `[input]` for a send; `[output]` for a recv).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub args: Vec<usize>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// A kernel call.
    Kernel(KernelCall),
    /// A collective over the group of this rank along one mesh axis; the executor resolves
    /// the group from the communicator's rank, so every rank can run the same program.
    Collective {
        op: Collective,
        mesh: ProcessMesh,
        axis: usize,
        /// The operand's shape (its buffer may be a view's source, declared otherwise).
        shape: Vec<usize>,
    },
    /// Sends the input buffer to global rank `peer`.
    Send { peer: u64 },
    /// Receives the output buffer from global rank `peer`.
    Recv { peer: u64 },
}

/// A kernel call's kernel and parallel extent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelCall {
    /// Index into the kernel table.
    pub kernel: usize,
    /// The kernel's parallel extent; the executor splits it across threads.
    pub extent: i64,
    /// Smallest slice worth a thread (small kernels run on one).
    pub grain: i64,
}

impl Step {
    /// A kernel call on `args`.
    pub fn kernel(kernel: usize, args: Vec<usize>, extent: i64, grain: i64) -> Step {
        Step {
            kind: StepKind::Kernel(KernelCall {
                kernel,
                extent,
                grain,
            }),
            args,
        }
    }

    /// The kernel call, if this step is one.
    pub fn kernel_call(&self) -> Option<&KernelCall> {
        match &self.kind {
            StepKind::Kernel(k) => Some(k),
            StepKind::Collective { .. } | StepKind::Send { .. } | StepKind::Recv { .. } => None,
        }
    }

    /// Whether the step moves data between ranks (and so needs a communicator).
    pub fn communicates(&self) -> bool {
        self.kernel_call().is_none()
    }
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
    /// Kernel symbol names, indexed by `KernelCall::kernel`.
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
    /// A training step's state updates: `(from, to)` copies buffer `from` (the new value,
    /// a graph output) into the weight buffer `to` when the caller commits a run
    /// ([`Executor::commit_state`]).
    pub updates: Vec<(usize, usize)>,
    /// Training dropout's masks, which the executor fills on the host before a run
    /// ([`Executor::set_dropout`]).
    pub masks: Vec<MaskDecl>,
}

/// A dropout mask buffer (f32, the dropped tensor's shape): element `i` is `keep` where
/// the interpreter's `dropout_keep(seed, step, stream, p, i)` keeps it, else 0; `infer` in
/// every element at inference.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskDecl {
    pub buf: usize,
    /// The node whose mask this is (a backward dropout replays its forward's stream).
    pub stream: String,
    pub p: f64,
    pub keep: f32,
    pub infer: f32,
}
