//! Runs a [`Program`]: allocates its buffers (64-byte aligned), loads weights and
//! constants once, then per call copies the inputs in, runs the kernels in order (each
//! split across the pool's threads) and copies the outputs out. Collective and send/recv
//! steps go through the communicator given at construction.

use super::{BufferRole, KernelFn, Program, StepKind, ThreadPool};
use crate::comm::{shaped, CommError, Communicator};
use crate::io::weights::Weights;
use crate::tensor::{HostTensor, TensorData};
use oar_ir::DType;
use std::sync::Arc;

/// Why a program cannot be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("kernel table has {got} entries, the program names {want}")]
    Kernels { got: usize, want: usize },
    #[error("weight \"{name}\": {message}")]
    Weight { name: String, message: String },
    #[error("input {index} (`{name}`): {message}")]
    Input {
        index: usize,
        name: String,
        message: String,
    },
    #[error("buffer `{0}` has dtype {1}, which the executor does not hold")]
    Dtype(String, DType),
    #[error(
        "step {step} ({what}) moves data between ranks: build the executor with a \
         communicator (Executor::with_communicator)"
    )]
    NoCommunicator { step: usize, what: &'static str },
    #[error("step {step} ({what}): {message}")]
    Step {
        step: usize,
        what: &'static str,
        message: String,
    },
    #[error("step {step} ({what}): {source}")]
    Comm {
        step: usize,
        what: &'static str,
        source: CommError,
    },
}

/// Each step's kernel name and wall time in seconds.
pub type StepTimes = Vec<(String, f64)>;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A zeroed, 64-byte aligned byte buffer.
pub(super) struct Buffer {
    lines: Vec<Line>,
    len: usize,
}

impl Buffer {
    fn new(len: usize) -> Buffer {
        Buffer {
            lines: vec![Line([0; 64]); len.div_ceil(64).max(1)],
            len,
        }
    }
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // Safety: `lines` holds at least `len` initialized bytes.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
    pub(super) fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().cast()
    }
}

/// Raw pointers handed to worker threads; the executor guarantees kernels on different
/// threads write disjoint parts of their outputs.
#[derive(Clone, Copy)]
struct SendPtrs(*const *mut u8, *mut u8, usize);
unsafe impl Send for SendPtrs {}
unsafe impl Sync for SendPtrs {}

/// A program bound to its kernels, weights and threads.
pub struct Executor {
    pub(super) program: Program,
    kernels: Vec<KernelFn>,
    pub(super) buffers: Vec<Buffer>,
    scratch: Vec<Buffer>,
    pool: ThreadPool,
    /// Input buffer ids in graph-input order.
    inputs: Vec<usize>,
    comm: Option<Arc<dyn Communicator>>,
    /// Per step, the global ranks of its collective's group (empty for other steps).
    groups: Vec<Vec<u64>>,
}

/// What a step is, for messages and profiles.
fn step_what(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Kernel(_) => "kernel",
        StepKind::Collective { op, .. } => op.name(),
        StepKind::Send { .. } => "send",
        StepKind::Recv { .. } => "recv",
    }
}

/// A tensor's elements as the bytes the kernels read (host byte order), borrowed where the
/// layout already matches: copying a large input must cost one memcpy, not a conversion.
pub(super) fn tensor_bytes(t: &HostTensor, want: DType) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    match (&t.data, want) {
        (TensorData::F32(v), DType::F32) => Some(Cow::Borrowed(bytemuck::cast_slice(v))),
        (TensorData::I64(v), DType::I64) => Some(Cow::Borrowed(bytemuck::cast_slice(v))),
        (TensorData::Bool(v), DType::Bool) => {
            Some(Cow::Owned(v.iter().map(|&b| b as u8).collect()))
        }
        _ => None,
    }
}

impl Executor {
    /// Binds a program without collective or send/recv steps to its kernels and weights.
    pub fn new(
        program: Program,
        kernels: Vec<KernelFn>,
        weights: &Weights,
        threads: usize,
    ) -> Result<Executor, ExecError> {
        Self::build(program, kernels, weights, threads, None)
    }

    /// As [`Executor::new`], for one rank's program: its collective and send/recv steps go
    /// through `comm`, whose rank picks this rank's groups.
    pub fn with_communicator(
        program: Program,
        kernels: Vec<KernelFn>,
        weights: &Weights,
        threads: usize,
        comm: Arc<dyn Communicator>,
    ) -> Result<Executor, ExecError> {
        Self::build(program, kernels, weights, threads, Some(comm))
    }

    fn build(
        program: Program,
        kernels: Vec<KernelFn>,
        weights: &Weights,
        threads: usize,
        comm: Option<Arc<dyn Communicator>>,
    ) -> Result<Executor, ExecError> {
        let mut groups = Vec::with_capacity(program.steps.len());
        for (i, step) in program.steps.iter().enumerate() {
            let what = step_what(&step.kind);
            if !step.communicates() {
                groups.push(Vec::new());
                continue;
            }
            let c = comm
                .as_ref()
                .ok_or(ExecError::NoCommunicator { step: i, what })?;
            let fail = |message: String| ExecError::Step {
                step: i,
                what,
                message,
            };
            if i < program.prologue {
                return Err(fail(
                    "a step that communicates cannot run in the prologue".into(),
                ));
            }
            let want = match step.kind {
                StepKind::Collective { .. } => 2,
                _ => 1,
            };
            if step.args.len() != want || step.args.iter().any(|&b| b >= program.buffers.len()) {
                return Err(fail(format!("names buffers {:?}", step.args)));
            }
            groups.push(match &step.kind {
                StepKind::Collective { mesh, axis, .. } => {
                    shaped::mesh_group(mesh, *axis, c.rank())
                        .map_err(|e| fail(e.to_string()))?
                        .0
                }
                _ => Vec::new(),
            });
        }
        if kernels.len() != program.kernels.len() {
            return Err(ExecError::Kernels {
                got: kernels.len(),
                want: program.kernels.len(),
            });
        }
        let mut buffers = Vec::with_capacity(program.buffers.len());
        let owned_bytes = program.storage_bytes();
        let mut inputs = Vec::new();
        for (id, b) in program.buffers.iter().enumerate() {
            if !matches!(b.dtype, DType::F32 | DType::I64 | DType::Bool) {
                return Err(ExecError::Dtype(b.name.clone(), b.dtype));
            }
            let mut buf = Buffer::new(owned_bytes[id]);
            match &b.role {
                BufferRole::Input(k) => {
                    if inputs.len() <= *k {
                        inputs.resize(*k + 1, usize::MAX);
                    }
                    inputs[*k] = id;
                }
                BufferRole::Weight(name) => {
                    let w = weights.get(name).ok_or_else(|| ExecError::Weight {
                        name: name.clone(),
                        message: "missing from the weights".into(),
                    })?;
                    if w.shape != b.shape {
                        return Err(ExecError::Weight {
                            name: name.clone(),
                            message: format!(
                                "has shape {:?}, the program needs {:?}",
                                w.shape, b.shape
                            ),
                        });
                    }
                    let bytes = tensor_bytes(w, b.dtype).ok_or_else(|| ExecError::Weight {
                        name: name.clone(),
                        message: format!(
                            "is {}, the program needs {}",
                            w.dtype().name(),
                            b.dtype.name()
                        ),
                    })?;
                    buf.bytes_mut().copy_from_slice(&bytes);
                }
                BufferRole::Constant(data) => buf.bytes_mut().copy_from_slice(data),
                // Temporaries start as NaN (all bits set), not zero: shared storage
                // holds an earlier value's data, so a kernel that read a temporary before
                // writing it would be wrong; poisoning makes such a bug fail every test.
                BufferRole::Temp if !program.zeroed.contains(&id) => buf.bytes_mut().fill(0xff),
                BufferRole::Temp => {}
            }
            buffers.push(buf);
        }
        let pool = ThreadPool::new(threads);
        let scratch = (0..pool.threads())
            .map(|_| Buffer::new(program.scratch_bytes))
            .collect();
        let mut exec = Executor {
            program,
            kernels,
            buffers,
            scratch,
            pool,
            inputs,
            comm,
            groups,
        };
        // Inference masks until a training run sets its step.
        exec.set_dropout(None);
        exec.run_steps(0..exec.program.prologue, None)?;
        Ok(exec)
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Input `k`'s buffer as f32 elements, to be filled in place before [`Executor::run_bound`]
    /// (no copy per run, like onnxruntime's I/O binding). `None` if there is no such f32 input.
    pub fn input_f32_mut(&mut self, k: usize) -> Option<&mut [f32]> {
        let id = *self.inputs.get(k)?;
        if self.program.buffers[id].dtype != DType::F32 {
            return None;
        }
        bytemuck::try_cast_slice_mut(self.buffers[id].bytes_mut()).ok()
    }

    /// Output `k`'s buffer as f32 elements, as the last run left it.
    pub fn output_f32(&self, k: usize) -> Option<&[f32]> {
        let id = *self.program.outputs.get(k)?;
        if self.program.buffers[id].dtype != DType::F32 {
            return None;
        }
        bytemuck::try_cast_slice(self.buffers[id].bytes()).ok()
    }

    /// Runs the program on whatever the input buffers hold (see [`Executor::input_f32_mut`]).
    /// Only a step that communicates can fail.
    pub fn run_bound(&mut self) -> Result<(), ExecError> {
        let steps = self.program.prologue..self.program.steps.len();
        self.run_steps(steps, None)
    }

    /// Runs the program on `inputs` (graph-input order).
    pub fn run(&mut self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, ExecError> {
        self.run_timed(inputs, None)
    }

    /// Runs once and returns the outputs with each step's kernel name and wall time (s).
    pub fn profile(
        &mut self,
        inputs: &[HostTensor],
    ) -> Result<(Vec<HostTensor>, StepTimes), ExecError> {
        let mut times = Vec::new();
        let out = self.run_timed(inputs, Some(&mut times))?;
        Ok((out, times))
    }

    fn run_timed(
        &mut self,
        inputs: &[HostTensor],
        times: Option<&mut Vec<(String, f64)>>,
    ) -> Result<Vec<HostTensor>, ExecError> {
        self.bind_inputs(inputs)?;
        let steps = self.program.prologue..self.program.steps.len();
        self.run_steps(steps, times)?;
        Ok(self
            .program
            .outputs
            .iter()
            .map(|&id| read_buffer(&self.program.buffers[id], self.buffers[id].bytes()))
            .collect())
    }

    /// Copies `inputs` (graph-input order) into their buffers.
    pub(super) fn bind_inputs(&mut self, inputs: &[HostTensor]) -> Result<(), ExecError> {
        if inputs.len() != self.inputs.len() {
            return Err(ExecError::Input {
                index: inputs.len(),
                name: String::new(),
                message: format!(
                    "{} inputs given, the program takes {}",
                    inputs.len(),
                    self.inputs.len()
                ),
            });
        }
        for (k, t) in inputs.iter().enumerate() {
            let id = self.inputs[k];
            let decl = &self.program.buffers[id];
            let fail = |message: String| ExecError::Input {
                index: k,
                name: decl.name.clone(),
                message,
            };
            if t.shape != decl.shape {
                return Err(fail(format!(
                    "shape {:?}, the program was compiled for {:?}",
                    t.shape, decl.shape
                )));
            }
            let bytes = tensor_bytes(t, decl.dtype).ok_or_else(|| {
                fail(format!(
                    "is {}, expected {}",
                    t.dtype().name(),
                    decl.dtype.name()
                ))
            })?;
            self.buffers[id].bytes_mut().copy_from_slice(&bytes);
        }
        Ok(())
    }

    /// Runs `steps` in order, each split across the pool; with `times`, records each one.
    pub(super) fn run_steps(
        &mut self,
        steps: std::ops::Range<usize>,
        mut times: Option<&mut StepTimes>,
    ) -> Result<(), ExecError> {
        let owned: Vec<*mut u8> = self.buffers.iter_mut().map(Buffer::ptr).collect();
        let ptrs: Vec<*mut u8> = (0..owned.len())
            .map(|b| owned[self.program.owner(b)])
            .collect();
        let scratch: Vec<*mut u8> = self.scratch.iter_mut().map(Buffer::ptr).collect();
        let threads = self.pool.threads();
        for i in steps {
            let step = &self.program.steps[i];
            let started = times.as_ref().map(|_| std::time::Instant::now());
            let Some(call) = step.kernel_call() else {
                self.communicate(i, &ptrs)?;
                if let (Some(t), Some(s)) = (times.as_mut(), started) {
                    t.push((step_what(&step.kind).into(), s.elapsed().as_secs_f64()));
                }
                continue;
            };
            let args: Vec<*mut u8> = step.args.iter().map(|&b| ptrs[b]).collect();
            let f = self.kernels[call.kernel];
            let parts = if threads > 1 && call.extent >= 2 * call.grain.max(1) {
                threads.min((call.extent / call.grain.max(1)) as usize)
            } else {
                1
            };
            if parts <= 1 {
                unsafe { f(args.as_ptr(), 0, call.extent, scratch[0]) };
            } else {
                self.dispatch(f, &args, &scratch, parts, call.extent);
            }
            if let (Some(t), Some(s)) = (times.as_mut(), started) {
                t.push((
                    self.program.kernels[call.kernel].clone(),
                    s.elapsed().as_secs_f64(),
                ));
            }
        }
        Ok(())
    }

    /// Runs step `i`, a collective or a send/recv, on the buffers at `ptrs`.
    fn communicate(&self, i: usize, ptrs: &[*mut u8]) -> Result<(), ExecError> {
        let step = &self.program.steps[i];
        let what = step_what(&step.kind);
        let comm = self
            .comm
            .as_deref()
            .ok_or(ExecError::NoCommunicator { step: i, what })?;
        let decl = |k: usize| &self.program.buffers[step.args[k]];
        // Safety: `build` checked the step names existing buffers; a collective's input and
        // output are live at the same step, so the storage plan gives them disjoint memory.
        let bytes = |k: usize| unsafe {
            std::slice::from_raw_parts(ptrs[step.args[k]].cast_const(), decl(k).bytes())
        };
        let bytes_mut = |k: usize| unsafe {
            std::slice::from_raw_parts_mut(ptrs[step.args[k]], decl(k).bytes())
        };
        let elem = decl(0).dtype.size_bytes() as usize;
        let res = match &step.kind {
            StepKind::Collective { op, shape, .. } => shaped::run(
                comm,
                &self.groups[i],
                op,
                shape,
                elem,
                bytes(0),
                bytes_mut(1),
            ),
            StepKind::Send { peer } => comm.send(*peer, bytes(0)),
            StepKind::Recv { peer } => comm.recv(*peer, bytes_mut(0)),
            StepKind::Kernel(_) => Ok(()),
        };
        res.map_err(|source| ExecError::Comm {
            step: i,
            what,
            source,
        })
    }

    fn dispatch(
        &self,
        f: KernelFn,
        args: &[*mut u8],
        scratch: &[*mut u8],
        parts: usize,
        extent: i64,
    ) {
        let shared = SendPtrs(
            args.as_ptr(),
            scratch.as_ptr().cast::<u8>().cast_mut(),
            parts,
        );
        self.pool.run(Arc::new(move |t| {
            let s = shared;
            if t >= s.2 {
                return;
            }
            let begin = extent * t as i64 / s.2 as i64;
            let end = extent * (t as i64 + 1) / s.2 as i64;
            // Safety: each thread gets its own scratch and a disjoint [begin, end).
            unsafe {
                let scratch = *(s.1 as *const *mut u8).add(t);
                f(s.0, begin, end, scratch)
            };
        }));
    }
}

pub(super) fn read_buffer(decl: &super::BufferDecl, bytes: &[u8]) -> HostTensor {
    let shape = decl.shape.clone();
    match decl.dtype {
        // Buffers are 64-byte aligned, so the casts cannot fail; the fallback never runs.
        DType::I64 => HostTensor::i64(
            shape,
            bytemuck::try_cast_slice(bytes)
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|_| bytemuck::pod_collect_to_vec(bytes)),
        ),
        DType::Bool => HostTensor::bool(shape, bytes.iter().map(|&b| b != 0).collect()),
        _ => HostTensor::f32(
            shape,
            bytemuck::try_cast_slice(bytes)
                .map(<[f32]>::to_vec)
                .unwrap_or_else(|_| bytemuck::pod_collect_to_vec(bytes)),
        ),
    }
}
