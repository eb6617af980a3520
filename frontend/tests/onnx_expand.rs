//! `broadcast_to` exports as ONNX `Expand` with a constant shape and imports back to the
//! same op (ONNX's two-way broadcasting resolved against the input's dims).

use oar_frontend::onnx::{export_model, import_bytes, ImportOptions};
use oar_ir::op::Op;
use std::collections::BTreeMap;

#[test]
fn broadcast_to_round_trips_through_expand() {
    let g = oar_ir::parse(
        "graph @b(%x: f32[N,1,4]) -> (f32[N,3,4]) {\n  %y = broadcast_to(%x) {shape=[N, 3, 4]} : f32[N,3,4]\n  return %y\n}\n",
    )
    .unwrap();
    // Symbolic targets cannot be a constant shape: a clear error.
    let err = export_model(&g, &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("symbolic"), "{err}");

    let g = oar_ir::parse(
        "graph @b(%x: f32[2,1,4]) -> (f32[5,2,3,4]) {\n  %y = broadcast_to(%x) {shape=[5, 2, 3, 4]} : f32[5,2,3,4]\n  return %y\n}\n",
    )
    .unwrap();
    let bytes = export_model(&g, &BTreeMap::new()).unwrap();
    let m = import_bytes(&bytes, None, "b.onnx", &ImportOptions::default()).unwrap();
    let ops: Vec<&Op> = m.graph.iter().map(|(_, n)| &n.op).collect();
    assert!(
        ops.iter().any(|op| matches!(op, Op::BroadcastTo { .. })),
        "{}",
        oar_ir::print(&m.graph)
    );
    let out = m
        .graph
        .value_type(m.graph.outputs()[0])
        .unwrap()
        .to_string();
    assert_eq!(out, "f32[5,2,3,4]");
}
