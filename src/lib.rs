//! oar: a deep-learning compiler and distributed-training system. This facade re-exports the
//! workspace crates; the `oar` binary (src/main.rs) is the command-line front end.

pub use oar_frontend as frontend;
pub use oar_ir as ir;
pub use oar_models as models;
pub use oar_passes as passes;
pub use oar_runtime as runtime;

use std::path::Path;

/// Where a graph comes from: a text IR / JSON file, or a zoo model by name.
pub fn load_graph(spec: &str) -> Result<ir::Graph, LoadError> {
    let path = Path::new(spec);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io(spec.to_string(), e))?;
        return Ok(ir::read_graph(&text, spec)?);
    }
    match models::build(spec) {
        Some(r) => Ok(r?),
        None => Err(LoadError::NotFound(spec.to_string())),
    }
}

/// Why `load_graph` failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Read(#[from] ir::ReadError),
    #[error("building the model failed: {0}")]
    Build(#[from] frontend::BuildError),
    #[error("`{0}` is neither a graph file nor a zoo model (see `oar models`)")]
    NotFound(String),
}
