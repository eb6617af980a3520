//! ONNX import and export. Models arrive as `.onnx` protobuf (opsets 11 and later); import
//! turns them into an `ir::Graph` plus named weights, export writes any graph of the ops
//! ONNX has back out at opset 17.
//!
//! Entry points: [`import_file`], [`import_bytes`], [`export_model`], [`SUPPORTED_OPS`].

mod error;
mod export;
mod import;
pub mod proto;
mod tensor;

pub use error::OnnxError;
pub use export::{export_model, EXPORT_OPSET};
pub use import::{import_bytes, import_file, input_names, ImportOptions, OnnxModel, SUPPORTED_OPS};
pub use tensor::{decode_tensor, encode_tensor, OnnxData, OnnxTensor, TensorError};
