//! oar-frontend: the Rust model DSL. A `ModelBuilder` hands out `Tensor` handles; methods read
//! like the math (`x.matmul(&w).relu()`); `nn` modules register named parameters; `finish()`
//! returns a verified `ir::Graph`. Misuse is reported with the user's file:line.

mod builder;
pub mod nn;
pub mod onnx;
mod tensor;

pub use builder::{BuildError, ModelBuilder};
pub use oar_ir::dist::{DeviceKind, Placement};
pub use oar_ir::op::ReshapeDim;
pub use tensor::Tensor;
