//! oar-runtime: host tensors, tensors and weights on disk (`.npy`, safetensors), parameter
//! initialisation, and the reference interpreter — the numerical oracle for every other path.
//! Never depends on LLVM.

pub mod comm;
pub mod data;
pub mod index;
pub mod init;
pub mod interp;
pub mod io;
pub mod program;
pub mod ps;
pub mod tensor;
pub mod train;
pub mod vision;

pub use interp::{
    run, run_on_rank, run_with_options, train_step, InterpError, RunOptions, RunResult,
};
pub use io::weights::Weights;
pub use tensor::{HostTensor, TensorData};
