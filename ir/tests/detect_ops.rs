//! Shape inference and text round-trip of the detector ops (`nms`, `matrix_nms`,
//! `deform_conv2d`, `deform_conv2d_grad`).

use oar_ir::op::*;
use oar_ir::{parse, print, DType, Dim, TensorType};

fn t(s: &str) -> TensorType {
    let (dt, rest) = s.split_once('[').expect("type has [");
    let dims = rest.trim_end_matches(']');
    let dims = dims
        .split(',')
        .map(|d| Dim::parse(d).expect("dim"))
        .collect();
    TensorType::new(DType::from_name(dt).expect("dtype"), dims)
}

fn infer(op: &Op, inputs: &[&str]) -> Result<String, String> {
    let ins: Vec<TensorType> = inputs.iter().map(|s| t(s)).collect();
    infer_types(op, &ins, &[], &InferCtx::default())
        .map(|ts| {
            ts.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .map_err(|e| e.0)
}

fn hard() -> Op {
    Op::Nms(NmsAttrs {
        kind: NmsKind::Hard { iou_threshold: 0.5 },
        score_threshold: 0.05,
        nms_top_k: Some(1000),
        max_per_class: None,
        keep_top_k: 100,
        background: None,
        normalized: true,
    })
}

fn deform(dg: u64) -> Op {
    Op::DeformConv2d(DeformConvAttrs {
        conv: ConvAttrs {
            stride: [2, 2],
            padding: [1; 4],
            ..ConvAttrs::default()
        },
        deform_groups: dg,
    })
}

#[test]
fn nms_outputs_are_padded_to_keep_top_k() {
    assert_eq!(
        infer(&hard(), &["f32[N,3549,4]", "f32[N,80,3549]"]),
        Ok("f32[N,100,6], i64[N,100,3], i64[N]".into())
    );
    let e = infer(&hard(), &["f32[N,3549,4]", "f32[N,80,3548]"]).unwrap_err();
    assert!(e.contains("box counts"), "{e}");
    let e = infer(&hard(), &["f32[N,3549,5]", "f32[N,80,3549]"]).unwrap_err();
    assert!(e.contains("[N, M, 4]"), "{e}");
    let e = infer(&hard(), &["f32[N,3549,4]"]).unwrap_err();
    assert!(e.contains("takes 2 inputs"), "{e}");
}

#[test]
fn deform_conv_checks_offset_and_mask() {
    let x = "f32[N,8,16,16]";
    let w = "f32[4,8,3,3]";
    assert_eq!(
        infer(
            &deform(2),
            &[x, "f32[N,36,8,8]", "f32[N,18,8,8]", w, "f32[4]"]
        ),
        Ok("f32[N,4,8,8]".into())
    );
    let e = infer(&deform(1), &[x, "f32[N,36,8,8]", "f32[N,9,8,8]", w]).unwrap_err();
    assert!(e.contains("offset must be f32[N,18,8,8]"), "{e}");
    let e = infer(&deform(3), &[x, "f32[N,54,8,8]", "f32[N,27,8,8]", w]).unwrap_err();
    assert!(e.contains("deformable groups"), "{e}");
    let g = Op::Grad(GradOp::DeformConv2d(DeformConvAttrs {
        conv: ConvAttrs::default(),
        deform_groups: 1,
    }));
    assert_eq!(
        infer(
            &g,
            &[x, "f32[N,18,14,14]", "f32[N,9,14,14]", w, "f32[N,4,14,14]"]
        ),
        Ok("f32[N,8,16,16], f32[N,18,14,14], f32[N,9,14,14], f32[4,8,3,3]".into())
    );
}

#[test]
fn text_round_trip() {
    let text = r#"graph @det(%b: f32[N,50,4], %s: f32[N,3,50], %x: f32[N,4,9,9], %o: f32[N,18,5,5], %m: f32[N,9,5,5]) -> (f32[N,10,6], i64[N,10,3], i64[N], f32[N,20,6], f32[N,2,5,5], f32[N,4,9,9]) {
  %w = param "dcn.weight" : f32[2,4,3,3]
  %n = nms(%b, %s) {iou_threshold=0.45, score_threshold=0.025, keep_top_k=10, nms_top_k=30, max_per_class=5, background=0, normalized=false} : (f32[N,10,6], i64[N,10,3], i64[N])
  %mn = matrix_nms(%b, %s) {post_threshold=0.01, gaussian=true, sigma=3.0, score_threshold=0.01, keep_top_k=20} : (f32[N,20,6], i64[N,20,3], i64[N])
  %y = deform_conv2d(%x, %o, %m, %w) {stride=[2, 2], padding=[1, 1, 1, 1]} : f32[N,2,5,5]
  %g = deform_conv2d_grad(%x, %o, %m, %w, %y) {stride=[2, 2], padding=[1, 1, 1, 1]} : (f32[N,4,9,9], f32[N,18,5,5], f32[N,9,5,5], f32[2,4,3,3])
  return %n, %n#1, %n#2, %mn, %y, %g
}
"#;
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let printed = print(&g);
    let again = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(g, again);
    assert!(printed.contains("matrix_nms(%b, %s) {post_threshold=0.01, gaussian=true, sigma=3.0"));
    assert!(printed.contains("max_per_class=5, background=0, normalized=false}"));
    let e = parse(&text.replace("iou_threshold=0.45, ", "")).unwrap_err();
    assert!(
        e.to_string()
            .contains("`nms` needs attribute `iou_threshold`"),
        "{e}"
    );
}
