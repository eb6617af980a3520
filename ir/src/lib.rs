//! oar-ir: the one graph IR every stage of oar reads and writes — ops, types and shapes,
//! distribution attributes (meshes, placements, stages, device kinds), the cluster object,
//! the text format and the verifier.

pub mod analysis;
pub mod cluster;
pub mod dist;
pub mod dot;
pub mod graph;
pub mod mode;
pub mod op;
mod serde_f64;
pub mod stats;
pub mod text;
pub mod types;
pub mod verify;

pub use cluster::{Cluster, DeviceSpec, Link, NodeGroup};
pub use dist::{DeviceKind, DeviceRef, MeshError, OpDist, Placement, ProcessMesh, ReduceOp};
pub use graph::{Graph, Node, NodeError, NodeId, ValueRef};
pub use mode::ExecMode;
pub use op::Op;
pub use text::{parse, print, ParseError};
pub use types::{DType, Dim, Shape, TensorType};
pub use verify::{verify, VerifyError, VerifyErrors};

/// Reads a graph from text or JSON (JSON when the text starts with `{`), verified.
pub fn read_graph(text: &str, file: &str) -> Result<Graph, ReadError> {
    if text.trim_start().starts_with('{') {
        let g: Graph = serde_json::from_str(text).map_err(|e| ReadError::Json {
            file: file.into(),
            message: e.to_string(),
        })?;
        verify(&g).map_err(|e| ReadError::Invalid {
            file: file.into(),
            errors: e,
        })?;
        Ok(g)
    } else {
        parse(text).map_err(|e| ReadError::Text(Box::new(e.with_file(file))))
    }
}

/// Why a graph file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Text(Box<ParseError>),
    #[error("{file}: bad graph JSON: {message}")]
    Json { file: String, message: String },
    #[error("{file}: {errors}")]
    Invalid { file: String, errors: VerifyErrors },
}
