//! DSL misuse is reported at the user's line, with the op and both shapes.

use oar_frontend::nn::{Conv2dConfig, LinearConfig};
use oar_frontend::{ModelBuilder, Placement};
use oar_ir::dist::ProcessMesh;

fn error_of(b: ModelBuilder) -> String {
    b.finish(&[])
        .expect_err("misuse must be an error")
        .to_string()
}

#[test]
fn matmul_with_mismatched_inner_dims() {
    let b = ModelBuilder::new("m");
    let x = b.input("x", "f32[N,784]");
    let w = b.param("w", &[700, 256], oar_ir::op::Init::Constant(0.0));
    let _y = x.matmul(&w).relu();
    insta::assert_snapshot!(error_of(b));
}

#[test]
fn conv_with_the_wrong_channel_count() {
    let b = ModelBuilder::new("m");
    let x = b.input("x", "f32[N,3,32,32]");
    let conv = Conv2dConfig::new(4, 8, 3).init(&b, "stem");
    let _y = conv.forward(&x);
    insta::assert_snapshot!(error_of(b));
}

#[test]
fn shard_on_a_missing_mesh_axis() {
    let b = ModelBuilder::new("m");
    b.mesh(
        "m",
        ProcessMesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]),
    );
    let x = b.input("x", "f32[N,16]");
    let fc = LinearConfig::new(16, 32).init(&b, "fc");
    let _y = fc.forward(&x).shard_along("m", "pp", 1);
    insta::assert_snapshot!(error_of(b));
}

#[test]
fn shard_with_too_many_placements() {
    let b = ModelBuilder::new("m");
    b.mesh(
        "m",
        ProcessMesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]),
    );
    let x = b.input("x", "f32[N,16]");
    let _y = x.relu().shard(
        "m",
        &[
            Placement::Shard(0),
            Placement::Replicate,
            Placement::Replicate,
        ],
    );
    insta::assert_snapshot!(error_of(b));
}

#[test]
fn the_first_error_wins_and_later_ops_are_inert() {
    let b = ModelBuilder::new("m");
    let x = b.input("x", "f32[N,4]");
    let bad = x.reshape(vec![5.into()]);
    let _more = bad.relu().softmax(-1);
    let e = b.finish(&[]).unwrap_err();
    assert_eq!(e.op, "reshape");
    assert!(e.location.contains("misuse.rs:"), "{e}");
}

#[test]
fn hints_land_in_the_ir() {
    let b = ModelBuilder::new("m");
    b.mesh(
        "m",
        ProcessMesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]),
    );
    let x = b.input("x", "f32[N,16]");
    let y = b.stage(1, || {
        let fc = LinearConfig::new(16, 32).init(&b, "fc");
        fc.forward(&x)
            .shard_along("m", "tp", 1)
            .relu()
            .place(oar_frontend::DeviceKind::Cpu)
    });
    let g = b.finish(&[&y]).unwrap();
    let text = oar_ir::print(&g);
    assert!(
        text.contains("#dist<mesh=@m, [R, S(1)], stage=1>"),
        "{text}"
    );
    assert!(text.contains("#device<cpu>"), "{text}");
    assert!(text.contains("param \"fc.weight\""), "{text}");
    assert_eq!(oar_ir::parse(&text).unwrap(), g);
}
