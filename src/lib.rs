//! oar: a deep-learning compiler and distributed-training system. This facade re-exports the
//! workspace crates; the `oar` binary (src/main.rs) is the command-line front end.

pub use oar_ir as ir;
