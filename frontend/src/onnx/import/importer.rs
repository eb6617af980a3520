//! The importer's value table: graph inputs and initializers in, IR values (constants made
//! on first use) and known contents out, and the node-building helpers converters share.

use super::super::proto::{NodeProto, ValueInfoProto};
use super::super::tensor::{dtype_of, OnnxTensor};
use super::attrs::Attrs;
use super::known::Known;
use super::{
    compute_dtype, detect, linalg_norm_pool, pointwise, sanitize, shape_ops, symbol_name,
    ImportOptions, Importer, NodeCx, Val, PARAM_MIN_ELEMENTS,
};
use oar_ir::op::{Literal, ParamAttrs};
use oar_ir::{DType, Dim, Op, TensorType, ValueRef};
use std::path::Path;

impl Importer {
    pub(super) fn add_graph_input(
        &mut self,
        vi: &ValueInfoProto,
        opts: &ImportOptions,
    ) -> Result<(), String> {
        use super::super::proto::tensor_shape_proto::dimension::Value as D;
        use super::super::proto::type_proto::Value;
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
    pub(super) fn add_initializer(&mut self, name: &str, t: OnnxTensor) -> Result<(), String> {
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

    pub(super) fn param(&mut self, name: &str, t: OnnxTensor, dtype: DType) -> Result<Val, String> {
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

    pub(super) fn convert(&mut self, node: &NodeProto, base: Option<&Path>) -> Result<(), String> {
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
            op if detect::handles(op) => detect::convert(self, &cx)?,
            _ => linalg_norm_pool::convert(self, &cx)?,
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
