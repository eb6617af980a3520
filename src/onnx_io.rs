//! The bridge between ONNX tensors (frontend) and host tensors (runtime), which live in
//! crates that do not depend on each other.

use crate::frontend::onnx::{export_model, OnnxData, OnnxError, OnnxTensor};
use crate::ir::{DType, Graph};
use crate::runtime::{HostTensor, TensorData, Weights};
use std::collections::BTreeMap;

/// ONNX weights as host tensors (float data as f32, integer data as i64).
pub fn weights_to_host(w: &BTreeMap<String, OnnxTensor>) -> Weights {
    w.iter()
        .map(|(k, t)| (k.clone(), tensor_to_host(t)))
        .collect()
}

/// One ONNX tensor as a host tensor.
pub fn tensor_to_host(t: &OnnxTensor) -> HostTensor {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    match (&t.data, t.dtype) {
        (OnnxData::F32(v), _) => HostTensor::f32(shape, v.clone()),
        (OnnxData::I64(v), DType::Bool) => {
            HostTensor::bool(shape, v.iter().map(|&x| x != 0).collect())
        }
        (OnnxData::I64(v), _) => HostTensor::i64(shape, v.clone()),
    }
}

/// A host tensor as an ONNX tensor.
pub fn host_to_tensor(t: &HostTensor) -> OnnxTensor {
    let dims = t.shape.iter().map(|&d| d as u64).collect();
    let (dtype, data) = match &t.data {
        TensorData::F32(v) => (DType::F32, OnnxData::F32(v.clone())),
        // The ONNX tensor holds floats as f32; f64 weights exist only in gradient checks.
        TensorData::F64(v) => (
            DType::F32,
            OnnxData::F32(v.iter().map(|&x| x as f32).collect()),
        ),
        TensorData::I64(v) => (DType::I64, OnnxData::I64(v.clone())),
        TensorData::Bool(v) => (
            DType::Bool,
            OnnxData::I64(v.iter().map(|&b| b as i64).collect()),
        ),
    };
    OnnxTensor { dtype, dims, data }
}

/// Serializes a graph with host weights as ONNX.
pub fn export_with_weights(graph: &Graph, weights: &Weights) -> Result<Vec<u8>, OnnxError> {
    let w: BTreeMap<String, OnnxTensor> = weights
        .iter()
        .map(|(k, t)| (k.clone(), host_to_tensor(t)))
        .collect();
    export_model(graph, &w)
}

/// The graph input names of an ONNX file (initializers excluded); `None` for other files.
pub fn onnx_input_names(path: &std::path::Path) -> Result<Option<Vec<String>>, OnnxError> {
    if !path.is_file() || !crate::is_onnx(path) {
        return Ok(None);
    }
    crate::frontend::onnx::input_names(path).map(Some)
}
