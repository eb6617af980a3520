//! oar-runtime: host tensors, tensors and weights on disk (`.npy`, safetensors), parameter
//! initialisation, and the reference interpreter — the numerical oracle for every other path.
//! Never depends on LLVM.

pub mod init;
pub mod interp;
pub mod io;
pub mod tensor;

pub use interp::{run, InterpError};
pub use io::weights::Weights;
pub use tensor::{HostTensor, TensorData};
