//! oar: a deep-learning compiler and distributed-training system. This facade re-exports the
//! workspace crates; the `oar` binary (src/main.rs) is the command-line front end.

pub use oar_codegen as codegen;
pub use oar_frontend as frontend;
pub use oar_ir as ir;
pub use oar_models as models;
pub use oar_passes as passes;
pub use oar_runtime as runtime;

pub mod onnx_io;

use std::collections::BTreeMap;
use std::path::Path;

/// A graph and, when the source carries them (ONNX), its weights.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub graph: ir::Graph,
    pub weights: Option<runtime::Weights>,
}

/// Where a graph comes from: a text IR / JSON file, or a zoo model by name.
pub fn load_graph(spec: &str) -> Result<ir::Graph, LoadError> {
    Ok(load_model(spec, &BTreeMap::new())?.graph)
}

/// Loads a text IR / JSON file, an `.onnx` model (with its weights; `input_shapes` fixes
/// dynamic input dims) or a zoo model by name.
pub fn load_model(
    spec: &str,
    input_shapes: &BTreeMap<String, Vec<u64>>,
) -> Result<LoadedModel, LoadError> {
    let path = Path::new(spec);
    if path.is_file() && is_onnx(path) {
        let opts = frontend::onnx::ImportOptions {
            input_shapes: input_shapes.clone(),
            ..Default::default()
        };
        let m = frontend::onnx::import_file(path, &opts)?;
        return Ok(LoadedModel {
            graph: m.graph,
            weights: Some(onnx_io::weights_to_host(&m.weights)),
        });
    }
    if !input_shapes.is_empty() {
        return Err(LoadError::InputShapes(spec.to_string()));
    }
    let graph = if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io(spec.to_string(), e))?;
        ir::read_graph(&text, spec)?
    } else {
        match models::build(spec) {
            Some(r) => r?,
            None => return Err(LoadError::NotFound(spec.to_string())),
        }
    };
    Ok(LoadedModel {
        graph,
        weights: None,
    })
}

/// `.onnx` by extension, or by content when the file is not text.
pub(crate) fn is_onnx(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return true;
    }
    // A protobuf model starts with field 1 (ir_version, varint): byte 0x08.
    std::fs::read(path)
        .ok()
        .is_some_and(|b| b.first() == Some(&0x08))
}

/// Why `load_model` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Read(#[from] ir::ReadError),
    #[error(transparent)]
    Onnx(#[from] frontend::onnx::OnnxError),
    #[error("building the model failed: {0}")]
    Build(#[from] frontend::BuildError),
    #[error("`{0}` is neither a graph file nor a zoo model (see `oar models`)")]
    NotFound(String),
    #[error("{0}: input shapes apply to ONNX models only (IR files and zoo models use symbols)")]
    InputShapes(String),
}
