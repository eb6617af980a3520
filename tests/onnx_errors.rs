//! Bad ONNX input gets a clear error naming the file, node and op — never a panic.

use oar::frontend::onnx::proto::*;
use oar::frontend::onnx::{import_bytes, import_file, ImportOptions};
use prost::Message;
use std::collections::BTreeMap;

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    use oar::frontend::onnx::proto::tensor_shape_proto::{dimension::Value, Dimension};
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(if d < 0 {
                                Value::DimParam("N".into())
                            } else {
                                Value::DimValue(d)
                            }),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: vec![value_info("x", &[-1, 4])],
            output: vec![value_info("y", &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn import_err(bytes: &[u8], opts: &ImportOptions) -> String {
    import_bytes(bytes, None, "model.onnx", opts)
        .unwrap_err()
        .to_string()
}

fn relu_model() -> Vec<u8> {
    model(vec![node("Relu", "act", &["x"], &["y"])], vec![])
}

#[test]
fn a_valid_model_imports() {
    let m = import_bytes(&relu_model(), None, "model.onnx", &Default::default()).unwrap();
    assert_eq!(oar::ir::print(&m.graph).lines().count(), 4);
}

#[test]
fn truncated_and_malformed_files() {
    let bytes = relu_model();
    insta::assert_snapshot!(
        "truncated",
        import_err(&bytes[..bytes.len() - 3], &Default::default())
    );
    insta::assert_snapshot!(
        "not_protobuf",
        import_err(b"\xff\xff\xff\xff garbage", &Default::default())
    );
    let e = import_file(
        std::path::Path::new("/nonexistent/model.onnx"),
        &Default::default(),
    )
    .unwrap_err();
    insta::assert_snapshot!("missing_file", e.to_string());
}

#[test]
fn every_unsupported_op_is_listed_at_once() {
    let bytes = model(
        vec![
            node("Relu", "a", &["x"], &["r"]),
            node("RoiAlign", "roi1", &["r"], &["s"]),
            node("Einsum", "e", &["s"], &["t"]),
            node("RoiAlign", "roi2", &["t"], &["y"]),
        ],
        vec![],
    );
    insta::assert_snapshot!("unsupported", import_err(&bytes, &Default::default()));
}

#[test]
fn a_bad_node_is_named() {
    let bytes = model(vec![node("MatMul", "proj", &["x", "x"], &["y"])], vec![]);
    insta::assert_snapshot!("bad_node", import_err(&bytes, &Default::default()));
    let bytes = model(vec![node("Relu", "act", &["nowhere"], &["y"])], vec![]);
    insta::assert_snapshot!("undefined_input", import_err(&bytes, &Default::default()));
}

#[test]
fn wrong_rank_input_shape() {
    let opts = ImportOptions {
        input_shapes: BTreeMap::from([("x".to_string(), vec![1, 3, 224, 224])]),
        ..Default::default()
    };
    insta::assert_snapshot!("wrong_rank", import_err(&relu_model(), &opts));
    let opts = ImportOptions {
        input_shapes: BTreeMap::from([("x".to_string(), vec![2, 5])]),
        ..Default::default()
    };
    insta::assert_snapshot!("wrong_dim", import_err(&relu_model(), &opts));
}

#[test]
fn external_data_may_not_leave_the_models_folder() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnx-external");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("w.bin"), [0u8; 16]).unwrap();
    let ext = |loc: &str| TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: data_type::FLOAT,
        data_location: 1,
        external_data: vec![StringStringEntryProto {
            key: "location".into(),
            value: loc.into(),
        }],
        ..Default::default()
    };
    let add = || vec![node("Add", "add", &["x", "w"], &["y"])];
    // Inside the folder: fine.
    std::fs::write(dir.join("sub/ok.onnx"), model(add(), vec![ext("w.bin")])).unwrap();
    std::fs::copy(dir.join("w.bin"), dir.join("sub/w.bin")).unwrap();
    import_file(&dir.join("sub/ok.onnx"), &Default::default()).unwrap();
    // Up and out: refused.
    std::fs::write(
        dir.join("sub/bad.onnx"),
        model(add(), vec![ext("../w.bin")]),
    )
    .unwrap();
    let e = import_file(&dir.join("sub/bad.onnx"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("leaves the model's folder") && e.contains("initializer `w`"),
        "{e}"
    );
}

/// Truncations and byte flips of a real exported model: every one imports or fails cleanly.
#[test]
fn corrupted_models_never_panic() {
    let g = oar::load_graph("lcnet_x0_25").unwrap();
    let w = oar::runtime::init::init_weights(&g, 0).unwrap();
    let bytes = oar::onnx_io::export_with_weights(&g, &w).unwrap();
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for k in 0..300 {
        let mut b = bytes.clone();
        if k % 2 == 0 {
            b.truncate((rnd() % bytes.len() as u64) as usize);
        } else {
            for _ in 0..4 {
                let i = (rnd() % b.len() as u64) as usize;
                b[i] = rnd() as u8;
            }
        }
        let r = std::panic::catch_unwind(|| {
            import_bytes(&b, None, "fuzz.onnx", &Default::default()).map(|_| ())
        });
        assert!(r.is_ok(), "case {k} panicked");
    }
}
