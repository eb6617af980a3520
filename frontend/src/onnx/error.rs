//! What can go wrong reading or writing ONNX, with the file, node and op named.

/// An import or export failure.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model (truncated or corrupted protobuf): {message}")]
    Decode { path: String, message: String },
    #[error("{path}: {message}")]
    Model { path: String, message: String },
    /// Every unsupported op type, each with the nodes that use it.
    #[error("{path}: unsupported ONNX ops: {}", list_unsupported(.ops))]
    Unsupported {
        path: String,
        ops: Vec<(String, Vec<String>)>,
    },
    #[error("{path}: node `{node}` ({op_type}): {message}")]
    Node {
        path: String,
        node: String,
        op_type: String,
        message: String,
    },
    #[error("{path}: initializer `{tensor}`: {message}")]
    Tensor {
        path: String,
        tensor: String,
        message: String,
    },
    #[error("{path}: input `{input}`: {message}")]
    Input {
        path: String,
        input: String,
        message: String,
    },
    #[error("export: node %{node} ({op}): {message}")]
    Export {
        node: String,
        op: String,
        message: String,
    },
}

fn list_unsupported(ops: &[(String, Vec<String>)]) -> String {
    ops.iter()
        .map(|(op, nodes)| {
            let shown: Vec<&str> = nodes.iter().take(5).map(String::as_str).collect();
            let more = if nodes.len() > 5 {
                format!(", … {} more", nodes.len() - 5)
            } else {
                String::new()
            };
            format!("{op} (nodes: {}{more})", shown.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
