//! Gradient ops in ONNX: `scatter_add` exports as ScatterElements(reduction=add) and reads
//! back as itself; the ops without an ONNX operator fail with an error naming them.

use oar_frontend::onnx::{export_model, import_bytes, ImportOptions};
use oar_ir::op::{ConvAttrs, GradOp, Literal};
use oar_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};
use std::collections::BTreeMap;

#[test]
fn scatter_add_round_trips_through_scatter_elements() {
    let mut g = Graph::new("g");
    let data = g.add_input("data", TensorType::f32(&[3, 4]));
    let upd = g.add_input("upd", TensorType::f32(&[2, 3]));
    let idx_t = TensorType::new(DType::I64, vec![Dim::Static(2), Dim::Static(3)]);
    let idx: ValueRef = g
        .add_node_typed(
            Op::Constant(Literal::Ints(vec![1, 0, 1, 3, 1, 0])),
            vec![],
            vec![idx_t],
            Some("idx".into()),
        )
        .unwrap()
        .into();
    let op = Op::Grad(GradOp::ScatterAdd { axis: 1 });
    let y: ValueRef = g
        .add_node(op.clone(), vec![data, idx, upd], None)
        .unwrap()
        .into();
    g.set_outputs(vec![y]);
    let bytes = export_model(&g, &BTreeMap::new()).unwrap();
    let m = import_bytes(&bytes, None, "test", &ImportOptions::default()).unwrap();
    let found: Vec<&Op> = m
        .graph
        .nodes()
        .iter()
        .map(|n| &n.op)
        .filter(|o| **o == op)
        .collect();
    assert_eq!(found.len(), 1, "{}", oar_ir::print(&m.graph));
}

#[test]
fn conv2d_grad_weight_has_no_onnx_form() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::f32(&[1, 2, 5, 5]));
    let dy = g.add_input("dy", TensorType::f32(&[1, 3, 3, 3]));
    let op = Op::Grad(GradOp::Conv2dWeight {
        conv: ConvAttrs::default(),
        kernel: [3, 3],
    });
    let y: ValueRef = g.add_node(op, vec![x, dy], None).unwrap().into();
    g.set_outputs(vec![y]);
    let e = export_model(&g, &BTreeMap::new()).unwrap_err().to_string();
    assert!(
        e.contains("conv2d_grad_weight") && e.contains("no ONNX operator"),
        "{e}"
    );
}
