//! IR → ONNX (opset 17). Every op the zoo uses has a mapping; ops ONNX lacks at opset 17
//! (GELU, SiLU, causal masks, fused epilogues) are written as their compositions. Weights
//! become initializers named as the graph's parameters.

mod ops;

use super::error::OnnxError;
use super::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, AttributeType, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::tensor::{code_of, encode_tensor, OnnxData, OnnxTensor};
use oar_ir::op::Literal;
use oar_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};
use prost::Message;
use std::collections::BTreeMap;

/// The opset exported models declare.
pub const EXPORT_OPSET: i64 = 17;

/// Serializes `graph` with `weights` (by parameter name) as an ONNX model.
pub fn export_model(
    graph: &Graph,
    weights: &BTreeMap<String, OnnxTensor>,
) -> Result<Vec<u8>, OnnxError> {
    let mut ex = Exporter {
        graph,
        nodes: Vec::new(),
        inits: Vec::new(),
        names: BTreeMap::new(),
        fresh: 0,
    };
    let mut inputs = Vec::new();
    for (id, node) in graph.iter() {
        let fail = |message: String| OnnxError::Export {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            message,
        };
        match &node.op {
            Op::Input => {
                let name = node.name.clone();
                inputs.push(value_info(&name, &node.outputs[0]));
                ex.names.insert(ValueRef::new(id, 0), name);
            }
            Op::Param(p) => {
                let t = weights
                    .get(&p.name)
                    .ok_or_else(|| fail(format!("no weights for parameter \"{}\"", p.name)))?;
                let want = node.outputs[0].shape.as_static().unwrap_or_default();
                if t.dims != want {
                    return Err(fail(format!(
                        "weights \"{}\" have dims {:?}, the graph declares {}",
                        p.name, t.dims, node.outputs[0]
                    )));
                }
                ex.inits.push(encode_tensor(&p.name, t));
                ex.names.insert(ValueRef::new(id, 0), p.name.clone());
            }
            Op::Constant(lit) => {
                let name = node.name.clone();
                let t = literal_tensor(lit, &node.outputs[0]).map_err(fail)?;
                ex.inits.push(encode_tensor(&name, &t));
                ex.names.insert(ValueRef::new(id, 0), name);
            }
            Op::Recv { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::Dropout { .. }
            | Op::MatMul(_)
            | Op::Conv2d(_)
            | Op::ConvTranspose2d(_)
            | Op::BatchNorm { .. }
            | Op::LayerNorm { .. }
            | Op::CausalMask { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reduce(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::Resize(_)
            | Op::Nms(_)
            | Op::DeformConv2d(_)
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice(_)
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
            | Op::BroadcastTo { .. }
            | Op::Gather { .. }
            | Op::GatherElements { .. }
            | Op::Embedding
            | Op::Shape
            | Op::AllReduce { .. }
            | Op::AllGather { .. }
            | Op::ReduceScatter { .. }
            | Op::AllToAll { .. }
            | Op::Broadcast { .. }
            | Op::FusedConv2d { .. }
            | Op::FusedMatMul { .. }
            | Op::Fused { .. }
            | Op::Grad(_)
            | Op::Send { .. } => ops::emit(&mut ex, id).map_err(fail)?,
        }
    }
    let mut outputs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, &o) in graph.outputs().iter().enumerate() {
        let ty = graph
            .value_type(o)
            .cloned()
            .unwrap_or_else(|| TensorType::f32(&[]));
        let mut name = ex.name(o);
        // ONNX outputs need distinct names: an output repeated or also an input gets a copy.
        if !seen.insert(name.clone()) || graph.inputs().iter().any(|&i| ValueRef::from(i) == o) {
            let copy = format!("output_{k}");
            ex.node("Identity", vec![name], vec![copy.clone()], vec![]);
            name = copy;
            seen.insert(name.clone());
        }
        outputs.push(value_info(&name, &ty));
    }
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: EXPORT_OPSET,
        }],
        producer_name: "oar".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            node: ex.nodes,
            name: graph.name.clone(),
            initializer: ex.inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

fn literal_tensor(lit: &Literal, ty: &TensorType) -> Result<OnnxTensor, String> {
    let dims = ty
        .shape
        .as_static()
        .ok_or_else(|| format!("constant of symbolic type {ty}"))?;
    let data = match lit {
        Literal::Floats(v) if ty.dtype.is_float() => {
            OnnxData::F32(v.iter().map(|&x| x as f32).collect())
        }
        Literal::Floats(v) => OnnxData::I64(v.iter().map(|&x| x as i64).collect()),
        Literal::Ints(v) if ty.dtype.is_float() => {
            OnnxData::F32(v.iter().map(|&x| x as f32).collect())
        }
        Literal::Ints(v) => OnnxData::I64(v.clone()),
    };
    Ok(OnnxTensor {
        dtype: ty.dtype,
        dims,
        data,
    })
}

fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let dim = ty
        .shape
        .0
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Static(v) => dimension::Value::DimValue(*v as i64),
                Dim::Sym(_) => dimension::Value::DimParam(d.to_string()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: code_of(ty.dtype),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

/// An attribute value for [`Exporter::node`].
pub(super) enum A {
    I(i64),
    F(f32),
    S(&'static str),
    Ints(Vec<i64>),
    T(Box<TensorProto>),
}

pub(super) struct Exporter<'g> {
    graph: &'g Graph,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    names: BTreeMap<ValueRef, String>,
    fresh: usize,
}

impl Exporter<'_> {
    /// The ONNX name of an IR value (its node's name; `name:port` for later outputs).
    pub(super) fn name(&self, v: ValueRef) -> String {
        self.names.get(&v).cloned().unwrap_or_else(|| {
            let n = &self.graph.node(v.node).name;
            if v.port == 0 {
                n.clone()
            } else {
                format!("{n}:{}", v.port)
            }
        })
    }

    /// A new intermediate name derived from `base`.
    pub(super) fn tmp(&mut self, base: &str) -> String {
        self.fresh += 1;
        format!("{base}/t{}", self.fresh)
    }

    pub(super) fn node(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<(&str, A)>,
    ) {
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: name.to_string(),
                    ..Default::default()
                };
                let ty = match a {
                    A::I(v) => {
                        p.i = v;
                        AttributeType::Int
                    }
                    A::F(v) => {
                        p.f = v;
                        AttributeType::Float
                    }
                    A::S(v) => {
                        p.s = v.as_bytes().to_vec();
                        AttributeType::String
                    }
                    A::Ints(v) => {
                        p.ints = v;
                        AttributeType::Ints
                    }
                    A::T(t) => {
                        p.t = Some(*t);
                        AttributeType::Tensor
                    }
                };
                p.r#type = ty as i32;
                p
            })
            .collect();
        let name = outputs.first().cloned().unwrap_or_default();
        self.nodes.push(NodeProto {
            input: inputs,
            output: outputs,
            name,
            op_type: op_type.to_string(),
            attribute,
            ..Default::default()
        });
    }

    /// A one-output node with a fresh name.
    pub(super) fn op(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, A)>,
        base: &str,
    ) -> String {
        let out = self.tmp(base);
        self.node(op_type, inputs, vec![out.clone()], attrs);
        out
    }

    /// An initializer holding constants (axes, shapes, scalars).
    pub(super) fn ints(&mut self, base: &str, v: Vec<i64>) -> String {
        let name = self.tmp(base);
        let t = OnnxTensor {
            dtype: DType::I64,
            dims: vec![v.len() as u64],
            data: OnnxData::I64(v),
        };
        self.inits.push(encode_tensor(&name, &t));
        name
    }

    /// A scalar f32 as a `Constant` node, not an initializer: importers (oar's included)
    /// take float initializers for weights, and a scale is not one.
    pub(super) fn scalar(&mut self, base: &str, v: f64) -> String {
        let t = OnnxTensor {
            dtype: DType::F32,
            dims: vec![],
            data: OnnxData::F32(vec![v as f32]),
        };
        self.op(
            "Constant",
            vec![],
            vec![("value", A::T(Box::new(encode_tensor("", &t))))],
            base,
        )
    }

    pub(super) fn graph(&self) -> &Graph {
        self.graph
    }
}
