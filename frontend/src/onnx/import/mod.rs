//! ONNX → IR. Walks the nodes in file order (ONNX requires topological order), keeping for
//! each ONNX value its IR value and, for small constants and shape arithmetic, its known
//! contents: shape sub-graphs (`Shape → Slice → Concat → Reshape`) fold while importing, with
//! dynamic dims carried as IR symbols.

mod attrs;
mod detect;
mod importer;
mod known;
mod linalg_norm_pool;
mod pointwise;
mod shape_ops;

use super::error::OnnxError;
use super::proto::{ModelProto, NodeProto, ValueInfoProto};
use super::tensor::{decode_tensor, OnnxTensor};
use attrs::Attrs;
use known::Known;
use oar_ir::{DType, Graph, ValueRef};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Every ONNX op type the importer converts (default domain).
pub const SUPPORTED_OPS: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "DeformConv",
    "Div",
    "Dropout",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "MaxPool",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "Pow",
    "PRelu",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "ScatterElements",
    "Selu",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Softplus",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
];

/// How to read a model.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Concrete shapes for graph inputs, replacing the file's (dynamic) ones.
    pub input_shapes: BTreeMap<String, Vec<u64>>,
    /// Graph inputs frozen to values (as TVM's `freeze_params`): they become constants, so
    /// attribute-like inputs (axes, shapes, scales, bounds) fold.
    pub constant_inputs: BTreeMap<String, OnnxTensor>,
}

/// An imported model: the graph and the weights its `param` nodes name.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    pub graph: Graph,
    pub weights: BTreeMap<String, OnnxTensor>,
    /// The default-domain opset the file declares.
    pub opset: i64,
    pub producer: String,
}

/// Reads an `.onnx` file; external data is looked up beside it.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<OnnxModel, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })?;
    import_bytes(&bytes, path.parent(), &path.display().to_string(), opts)
}

/// The names of a model's graph inputs (initializers listed as inputs excluded).
pub fn input_names(path: &Path) -> Result<Vec<String>, OnnxError> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| OnnxError::Io {
        path: source.clone(),
        source: e,
    })?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| OnnxError::Decode {
        path: source.clone(),
        message: e.to_string(),
    })?;
    let graph = model.graph.ok_or_else(|| OnnxError::Model {
        path: source,
        message: "the model has no graph".into(),
    })?;
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(graph
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_str()))
        .map(|v| v.name.clone())
        .collect())
}

/// Reads a serialized model; `base` is the folder external data is relative to, `source`
/// names the model in errors.
pub fn import_bytes(
    bytes: &[u8],
    base: Option<&Path>,
    source: &str,
    opts: &ImportOptions,
) -> Result<OnnxModel, OnnxError> {
    let model_err = |message: String| OnnxError::Model {
        path: source.to_string(),
        message,
    };
    let model = ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        path: source.to_string(),
        message: e.to_string(),
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| model_err("the model has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| model_err("no opset for the default ONNX domain".into()))?;
    if opset < 11 {
        return Err(model_err(format!(
            "opset {opset}: oar imports opset 11 and later (convert with onnx.version_converter)"
        )));
    }
    check_supported(&graph.node, source)?;
    let mut imp = Importer {
        g: Graph::new(sanitize(if graph.name.is_empty() {
            "onnx"
        } else {
            &graph.name
        })),
        vals: HashMap::new(),
        weights: BTreeMap::new(),
        opset,
        used_names: HashSet::new(),
    };
    let init_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for (name, t) in &opts.constant_inputs {
        imp.add_initializer(name, t.clone())
            .map_err(|message| OnnxError::Input {
                path: source.to_string(),
                input: name.clone(),
                message,
            })?;
    }
    let is_graph_input = |v: &&ValueInfoProto| {
        !init_names.contains(v.name.as_str()) && !opts.constant_inputs.contains_key(&v.name)
    };
    for vi in graph.input.iter().filter(is_graph_input) {
        imp.add_graph_input(vi, opts)
            .map_err(|message| OnnxError::Input {
                path: source.to_string(),
                input: vi.name.clone(),
                message,
            })?;
    }
    for t in &graph.initializer {
        let tensor = decode_tensor(t, base).map_err(|e| OnnxError::Tensor {
            path: source.to_string(),
            tensor: t.name.clone(),
            message: e.to_string(),
        })?;
        imp.add_initializer(&t.name, tensor)
            .map_err(|message| OnnxError::Tensor {
                path: source.to_string(),
                tensor: t.name.clone(),
                message,
            })?;
    }
    for (k, node) in graph.node.iter().enumerate() {
        imp.convert(node, base).map_err(|mut message| {
            if message.contains("symbolic") {
                message += &format!(" (fix the input shapes: {})", input_shape_hint(&imp.g));
            }
            OnnxError::Node {
                path: source.to_string(),
                node: node_label(node, k),
                op_type: node.op_type.clone(),
                message,
            }
        })?;
    }
    let mut outs = Vec::new();
    for o in &graph.output {
        outs.push(
            imp.ir(&o.name)
                .map_err(|m| model_err(format!("output `{}`: {m}", o.name)))?,
        );
    }
    imp.g.set_outputs(outs);
    oar_ir::verify(&imp.g).map_err(|e| model_err(format!("the imported graph is invalid: {e}")))?;
    Ok(OnnxModel {
        graph: imp.g,
        weights: imp.weights,
        opset,
        producer: model.producer_name,
    })
}

/// `--input-shape x=1x3x224x224` with the graph's inputs, symbols shown as 1.
fn input_shape_hint(g: &Graph) -> String {
    g.inputs()
        .iter()
        .map(|&i| {
            let n = g.node(i);
            let dims: Vec<String> = n.outputs[0]
                .shape
                .0
                .iter()
                .map(|d| d.as_static().unwrap_or(1).to_string())
                .collect();
            format!("--input-shape {}={}", n.name, dims.join("x"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn node_label(node: &NodeProto, k: usize) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else if let Some(o) = node.output.first() {
        o.clone()
    } else {
        format!("#{k}")
    }
}

/// One error for every unsupported op type, listing its nodes.
fn check_supported(nodes: &[NodeProto], source: &str) -> Result<(), OnnxError> {
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, n) in nodes.iter().enumerate() {
        let default_domain = n.domain.is_empty() || n.domain == "ai.onnx";
        if !default_domain || !SUPPORTED_OPS.contains(&n.op_type.as_str()) {
            let op = if default_domain {
                n.op_type.clone()
            } else {
                format!("{}::{}", n.domain, n.op_type)
            };
            missing.entry(op).or_default().push(node_label(n, k));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(OnnxError::Unsupported {
            path: source.to_string(),
            ops: missing.into_iter().collect(),
        })
    }
}

/// An ONNX value: its IR value (made on first use for constants) and known contents.
#[derive(Debug, Clone, Default)]
pub(super) struct Val {
    ir: Option<ValueRef>,
    known: Option<Known>,
}

impl Val {
    pub(super) fn ir(v: ValueRef) -> Val {
        Val {
            ir: Some(v),
            known: None,
        }
    }

    pub(super) fn known(k: Known) -> Val {
        Val {
            ir: None,
            known: Some(k),
        }
    }
}

/// Float tensors larger than this become named parameters (weights); smaller ones and all
/// integer tensors stay constants, so shape arithmetic and attribute-like inputs fold.
const PARAM_MIN_ELEMENTS: usize = 16;

pub(super) struct Importer {
    pub(super) g: Graph,
    vals: HashMap<String, Val>,
    weights: BTreeMap<String, OnnxTensor>,
    pub(super) opset: i64,
    used_names: HashSet<String>,
}

/// What a converter sees of one node.
pub(super) struct NodeCx<'n> {
    pub(super) op_type: &'n str,
    pub(super) inputs: &'n [String],
    pub(super) outputs: &'n [String],
    pub(super) attrs: Attrs<'n>,
    pub(super) base: Option<&'n Path>,
}

impl NodeCx<'_> {
    /// The name of input `k` when present (ONNX marks skipped optional inputs with "").
    pub(super) fn input(&self, k: usize) -> Option<&str> {
        self.inputs
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Input `k`, which must be present.
    pub(super) fn need(&self, k: usize) -> Result<&str, String> {
        self.input(k)
            .ok_or_else(|| format!("{} needs input {k}", self.op_type))
    }

    /// A hint for IR node names: the first output.
    pub(super) fn hint(&self) -> &str {
        self.outputs.first().map(String::as_str).unwrap_or("v")
    }
}

/// ONNX names may hold any character; IR names are `[A-Za-z0-9_.]+`.
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "v".into()
    } else {
        out
    }
}

/// A dim_param as an IR symbol (letters, digits, `_`; not starting with a digit).
fn symbol_name(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match out.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => out,
        _ => format!("d{out}"),
    }
}

/// The IR computes in f32, i64 and bool: other float types read as f32, other integer types
/// as i64 (their values are exact in i64).
pub(super) fn compute_dtype(d: DType) -> DType {
    match d {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => DType::F32,
        DType::I64 | DType::I32 | DType::I8 | DType::U8 => DType::I64,
        DType::Bool => DType::Bool,
    }
}
