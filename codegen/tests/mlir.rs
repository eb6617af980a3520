//! Every exportable zoo model and example becomes a TOSA module that MLIR's verifier accepts.

use oar_codegen::mlir::{to_tosa, verify};
use std::collections::BTreeMap;

fn example(name: &str) -> oar_ir::Graph {
    let path = format!("{}/../examples/{name}.oir", env!("CARGO_MANIFEST_DIR"));
    oar_ir::read_graph(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

fn verified(g: &oar_ir::Graph, bindings: &BTreeMap<String, u64>) -> String {
    let text = to_tosa(g, bindings).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    verify(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", g.name))
}

#[test]
fn mlp_module_snapshot() {
    let b = BTreeMap::from([("N".to_string(), 4)]);
    insta::assert_snapshot!(verified(&example("mlp"), &b));
}

#[test]
fn examples_verify() {
    for name in ["mlp", "convnet", "transformer"] {
        let out = verified(&example(name), &BTreeMap::new());
        assert!(out.contains("tosa."), "{name}");
    }
}

#[test]
fn every_lcnet_scale_verifies() {
    for e in oar_models::zoo().iter().filter(|e| e.family == "PP-LCNet") {
        let g = oar_models::build(e.name).unwrap().unwrap();
        let out = verified(&g, &e.bindings());
        assert!(out.contains("tosa.depthwise_conv2d"), "{}", e.name);
    }
}

#[test]
fn optimized_lcnet_with_fused_kernels_verifies() {
    use oar_passes::{PassContext, Pipeline};
    let g = oar_models::build("lcnet_x0_5").unwrap().unwrap();
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let cx = PassContext::new(cluster.node_groups[0].device.clone());
    let (opt, _) = Pipeline::named("inference", &[])
        .unwrap()
        .run(g, &cx, |_, _| {})
        .unwrap();
    assert!(oar_ir::print(&opt).contains("fused"));
    verified(&opt, &BTreeMap::from([("N".to_string(), 1)]));
}

#[test]
fn invalid_text_is_rejected_with_mlirs_message() {
    let e = verify("module { func.func @f() { %0 = tosa.add } }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("MLIR rejected"), "{e}");
}

#[test]
fn ernie_with_losses_verifies() {
    // Embeddings, attention with a causal mask, GELU, and the losses' gather_elements
    // (linalg.generic, since TOSA has no such op).
    let g = oar_models::build("ernie-3.0-titan-tiny").unwrap().unwrap();
    let out = verified(
        &g,
        &BTreeMap::from([("N".to_string(), 2), ("seq".to_string(), 8)]),
    );
    assert!(out.contains("linalg.generic") && out.contains("tosa.gather"));
}

#[test]
fn unsupported_ops_name_the_node() {
    let e = to_tosa(&example("mesh_2x2"), &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(all_reduce)") && e.contains("has no TOSA lowering"),
        "{e}"
    );
}

/// The verifier checks shapes, not only syntax: a convolution with a wrong output size fails.
#[test]
fn a_shape_error_is_caught() {
    let text = r#"module {
  func.func @f(%x: tensor<1x8x8x3xf32>, %w: tensor<4x3x3x3xf32>, %b: tensor<4xf32>) -> tensor<1x7x8x4xf32> {
    %z = "tosa.const"() {values = dense<0.0> : tensor<1xf32>} : () -> tensor<1xf32>
    %y = tosa.conv2d %x, %w, %b, %z, %z {acc_type = f32, pad = array<i64: 1, 1, 1, 1>, stride = array<i64: 1, 1>, dilation = array<i64: 1, 1>} : (tensor<1x8x8x3xf32>, tensor<4x3x3x3xf32>, tensor<4xf32>, tensor<1xf32>, tensor<1xf32>) -> tensor<1x7x8x4xf32>
    return %y : tensor<1x7x8x4xf32>
  }
}"#;
    let e = oar_codegen::mlir::verify(text).unwrap_err().to_string();
    assert!(e.contains("calculated output height did not match"), "{e}");
}

#[test]
fn broadcast_to_lowers_to_a_verified_tile() {
    let g = oar_ir::parse(
        "graph @b(%x: f32[3,1]) -> (f32[2,3,4]) {\n  %y = broadcast_to(%x) {shape=[2, 3, 4]} : f32[2,3,4]\n  return %y\n}\n",
    )
    .unwrap();
    let out = verified(&g, &BTreeMap::new());
    assert!(out.contains("tosa.tile"), "{out}");
}
