//! ONNX → IR. Walks the nodes in file order (ONNX requires topological order), keeping for
//! each ONNX value its IR value and, for small constants and shape arithmetic, its known
//! contents: shape sub-graphs (`Shape → Slice → Concat → Reshape`) fold while importing, with
//! dynamic dims carried as IR symbols.

mod attrs;
mod known;
mod nn;
mod pointwise;
mod shape_ops;

use super::error::OnnxError;
use super::proto::{ModelProto, NodeProto, ValueInfoProto};
use super::tensor::{decode_tensor, dtype_of, OnnxTensor};
use attrs::Attrs;
use known::Known;
use oar_ir::op::{Literal, ParamAttrs};
use oar_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};
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
        let tensor = decode_tensor(t, base).map_err(|message| OnnxError::Tensor {
            path: source.to_string(),
            tensor: t.name.clone(),
            message,
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

impl Importer {
    fn add_graph_input(&mut self, vi: &ValueInfoProto, opts: &ImportOptions) -> Result<(), String> {
        use super::proto::tensor_shape_proto::dimension::Value as D;
        use super::proto::type_proto::Value;
        let Some(Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err("only tensor inputs are supported".into());
        };
        let dtype = compute_dtype(
            dtype_of(tt.elem_type)
                .ok_or_else(|| format!("element type code {} is not supported", tt.elem_type))?,
        );
        let declared = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
        let dims: Vec<Dim> = match opts.input_shapes.get(&vi.name) {
            Some(given) => {
                if tt.shape.is_some() && given.len() != declared.len() {
                    return Err(format!(
                        "the model declares rank {} but the given shape {given:?} has rank {}",
                        declared.len(),
                        given.len()
                    ));
                }
                for (axis, (g, d)) in given.iter().zip(declared).enumerate() {
                    if let Some(D::DimValue(v)) = d.value {
                        if v > 0 && v as u64 != *g {
                            return Err(format!(
                                "dim {axis} is {v} in the model but {g} in the given shape {given:?}"
                            ));
                        }
                    }
                }
                given.iter().map(|&d| Dim::Static(d)).collect()
            }
            None if tt.shape.is_none() => {
                return Err(
                    "the input has no shape; pass one (--input-shape NAME=1x3x224x224)".into(),
                )
            }
            None => declared
                .iter()
                .enumerate()
                .map(|(axis, d)| match &d.value {
                    Some(D::DimValue(v)) if *v > 0 => Dim::Static(*v as u64),
                    Some(D::DimParam(p)) if !p.is_empty() && p != "?" => Dim::sym(&symbol_name(p)),
                    _ => Dim::sym(&symbol_name(&format!("{}_{axis}", vi.name))),
                })
                .collect(),
        };
        let name = self.unique(&vi.name);
        let v = self.g.add_input(name, TensorType::new(dtype, dims));
        self.vals.insert(vi.name.clone(), Val::ir(v));
        Ok(())
    }

    /// Float initializers are weights: always parameters (small ones also known, for
    /// attribute-like uses such as Clip bounds); integer ones are constants.
    fn add_initializer(&mut self, name: &str, t: OnnxTensor) -> Result<(), String> {
        let dtype = compute_dtype(t.dtype);
        let val = if dtype.is_float() && t.numel() <= PARAM_MIN_ELEMENTS {
            let known = Known::from_tensor(&t, dtype);
            let mut v = self.param(name, t, dtype)?;
            v.known = Some(known);
            v
        } else {
            self.tensor_val(name, t)?
        };
        self.vals.insert(name.to_string(), val);
        Ok(())
    }

    fn param(&mut self, name: &str, t: OnnxTensor, dtype: DType) -> Result<Val, String> {
        let ty = TensorType::new(dtype, t.dims.iter().map(|&d| Dim::Static(d)).collect());
        let node_name = self.unique(name);
        let id = self
            .g
            .add_node_typed(
                Op::Param(ParamAttrs {
                    name: name.to_string(),
                    init: None,
                }),
                vec![],
                vec![ty],
                Some(node_name),
            )
            .map_err(|e| e.detail().to_string())?;
        self.weights.insert(name.to_string(), t);
        Ok(Val::ir(id.into()))
    }

    /// A constant tensor as a value: a parameter when it is a large float tensor, otherwise
    /// known contents.
    pub(super) fn tensor_val(&mut self, name: &str, t: OnnxTensor) -> Result<Val, String> {
        let dtype = compute_dtype(t.dtype);
        if dtype.is_float() && t.numel() > PARAM_MIN_ELEMENTS {
            return self.param(name, t, dtype);
        }
        Ok(Val::known(Known::from_tensor(&t, dtype)))
    }

    fn convert(&mut self, node: &NodeProto, base: Option<&Path>) -> Result<(), String> {
        let cx = NodeCx {
            op_type: &node.op_type,
            inputs: &node.input,
            outputs: &node.output,
            attrs: Attrs(&node.attribute),
            base,
        };
        for i in node.input.iter().filter(|s| !s.is_empty()) {
            if !self.vals.contains_key(i) {
                return Err(format!("input `{i}` is not defined before this node"));
            }
        }
        let outs = match node.op_type.as_str() {
            op if pointwise::handles(op) => pointwise::convert(self, &cx)?,
            op if shape_ops::handles(op) => shape_ops::convert(self, &cx)?,
            _ => nn::convert(self, &cx)?,
        };
        for (name, val) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                self.vals.insert(name.clone(), val);
            }
        }
        Ok(())
    }

    /// A copy of the value (for aliases: Identity, Dropout).
    pub(super) fn val(&self, name: &str) -> Result<Val, String> {
        self.vals
            .get(name)
            .cloned()
            .ok_or_else(|| format!("value `{name}` is not defined"))
    }

    /// Binds a name to a value (temporaries of multi-step conversions).
    pub(super) fn set(&mut self, name: &str, v: Val) {
        self.vals.insert(name.to_string(), v);
    }

    /// The value's known contents, if any.
    pub(super) fn known(&self, name: &str) -> Option<&Known> {
        self.vals.get(name).and_then(|v| v.known.as_ref())
    }

    /// The value's type.
    pub(super) fn ty(&self, name: &str) -> Result<TensorType, String> {
        let v = self
            .vals
            .get(name)
            .ok_or_else(|| format!("value `{name}` is not defined"))?;
        match (&v.ir, &v.known) {
            (Some(r), _) => self
                .g
                .value_type(*r)
                .cloned()
                .ok_or_else(|| format!("value `{name}` has no type")),
            (None, Some(k)) => Ok(k.ty()),
            (None, None) => Err(format!("value `{name}` is empty")),
        }
    }

    /// The IR value, materializing known contents as a constant on first use.
    pub(super) fn ir(&mut self, name: &str) -> Result<ValueRef, String> {
        let v = self
            .vals
            .get(name)
            .ok_or_else(|| format!("value `{name}` is not defined"))?;
        if let Some(r) = v.ir {
            return Ok(r);
        }
        let k = v
            .known
            .clone()
            .ok_or_else(|| format!("value `{name}` is empty"))?;
        let lit = k.literal().ok_or_else(|| {
            format!(
                "`{name}` holds symbolic sizes ({}) and feeds a computation; give the inputs \
                 concrete shapes (--input-shape)",
                k.describe()
            )
        })?;
        let node_name = self.unique(name);
        let id = self
            .g
            .add_node_typed(Op::Constant(lit), vec![], vec![k.ty()], Some(node_name))
            .map_err(|e| e.detail().to_string())?;
        let r: ValueRef = id.into();
        if let Some(v) = self.vals.get_mut(name) {
            v.ir = Some(r);
        }
        Ok(r)
    }

    /// The IR value converted to `dtype` when it is a constant of another type (ONNX lets a
    /// `Pow` exponent or a `Clip` bound differ in type; the IR does not).
    pub(super) fn ir_as(&mut self, name: &str, dtype: DType) -> Result<ValueRef, String> {
        if let Some(k) = self.known(name) {
            if k.dtype != dtype && self.vals.get(name).is_some_and(|v| v.ir.is_none()) {
                let converted = k.cast(dtype);
                let alias = format!("{name}.{}", dtype.name());
                self.vals.insert(alias.clone(), Val::known(converted));
                return self.ir(&alias);
            }
        }
        let r = self.ir(name)?;
        let t = self.ty(name)?;
        if t.dtype == dtype {
            Ok(r)
        } else {
            self.add(Op::Cast { to: dtype }, vec![r], name)
        }
    }

    /// Static integer contents of an input (shapes, axes, pads).
    pub(super) fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        self.known(name)
            .and_then(Known::static_ints)
            .ok_or_else(|| format!("`{name}` must be a constant integer tensor"))
    }

    /// Static float contents of an input (scales, bounds).
    pub(super) fn floats(&self, name: &str) -> Result<Vec<f64>, String> {
        self.known(name)
            .map(Known::to_f64)
            .ok_or_else(|| format!("`{name}` must be a constant tensor"))
    }

    /// Adds an op with inferred output types; names it after `hint`.
    pub(super) fn add(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        hint: &str,
    ) -> Result<ValueRef, String> {
        Ok(self.add_multi(op, inputs, hint)?.into())
    }

    /// As [`Importer::add`], returning the node for multi-output ops.
    pub(super) fn add_multi(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        hint: &str,
    ) -> Result<oar_ir::NodeId, String> {
        let name = self.unique(hint);
        self.g
            .add_node(op, inputs, Some(name))
            .map_err(|e| e.detail().to_string())
    }

    /// A constant of the given type and contents.
    pub(super) fn constant(
        &mut self,
        ty: TensorType,
        lit: Literal,
        hint: &str,
    ) -> Result<ValueRef, String> {
        let name = self.unique(hint);
        Ok(self
            .g
            .add_node_typed(Op::Constant(lit), vec![], vec![ty], Some(name))
            .map_err(|e| e.detail().to_string())?
            .into())
    }

    /// A text-format node name derived from an ONNX name, unique in the graph.
    pub(super) fn unique(&mut self, hint: &str) -> String {
        let base = sanitize(hint);
        let mut name = base.clone();
        let mut k = 1;
        while !self.used_names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
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
