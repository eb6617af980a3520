//! oar-codegen: code generation from the IR. `mlir` writes a graph in MLIR's TOSA dialect and
//! checks it with MLIR's own verifier (through melior).

pub mod cpu;
pub mod jit;
pub mod kernel;
pub mod mlir;
pub mod package;
pub mod train;
