//! Shape and dtype inference, one test per op family, broadcasting and symbolic dims included.

use oar_ir::dist::{ProcessMesh, ReduceOp};
use oar_ir::op::*;
use oar_ir::{DType, Dim, TensorType};
use std::collections::BTreeMap;

/// `f32[N,3,2*N]` → TensorType.
fn t(s: &str) -> TensorType {
    let (dt, rest) = s.split_once('[').expect("type has [");
    let dims = rest.trim_end_matches(']');
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(',')
            .map(|d| Dim::parse(d).expect("dim"))
            .collect()
    };
    TensorType::new(DType::from_name(dt).expect("dtype"), dims)
}

fn meshes() -> BTreeMap<String, ProcessMesh> {
    BTreeMap::from([(
        "m".to_string(),
        ProcessMesh::new(vec![2, 4], vec!["dp".into(), "tp".into()]),
    )])
}

fn infer(op: Op, inputs: &[&str]) -> Result<String, String> {
    let m = meshes();
    let ctx = InferCtx {
        meshes: Some(&m),
        functions: None,
    };
    let ins: Vec<TensorType> = inputs.iter().map(|s| t(s)).collect();
    infer_types(&op, &ins, &[], &ctx)
        .map(|ts| {
            ts.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .map_err(|e| e.0)
}

fn ok(op: Op, inputs: &[&str], want: &str) {
    assert_eq!(
        infer(op.clone(), inputs),
        Ok(want.to_string()),
        "{op:?} on {inputs:?}"
    );
}

fn bad(op: Op, inputs: &[&str], needle: &str) {
    match infer(op.clone(), inputs) {
        Err(e) => assert!(
            e.contains(needle),
            "{op:?} on {inputs:?}: error `{e}` lacks `{needle}`"
        ),
        Ok(t) => panic!("{op:?} on {inputs:?} should fail, gave {t}"),
    }
}

#[test]
fn elementwise_broadcasting() {
    let add = Op::Binary(BinaryOp::Add);
    ok(add.clone(), &["f32[4,1,3]", "f32[5,1]"], "f32[4,5,3]");
    ok(add.clone(), &["f32[]", "f32[2,3]"], "f32[2,3]");
    ok(add.clone(), &["f32[N,seq,8]", "f32[8]"], "f32[N,seq,8]");
    ok(add.clone(), &["f32[N,1]", "f32[1,seq]"], "f32[N,seq]");
    bad(add.clone(), &["f32[N,4]", "f32[M,4]"], "do not broadcast");
    bad(add.clone(), &["f32[3]", "f32[4]"], "dim 3 vs 4");
    bad(add, &["f32[3]", "i64[3]"], "one dtype");
    ok(
        Op::Binary(BinaryOp::Less),
        &["f32[2,3]", "f32[3]"],
        "bool[2,3]",
    );
    ok(Op::Where, &["bool[N,1]", "f32[4]", "f32[1]"], "f32[N,4]");
    bad(Op::Where, &["f32[4]", "f32[4]", "f32[4]"], "bool condition");
    ok(
        Op::Unary(UnaryOp::Gelu { tanh: false }),
        &["f32[N,7]"],
        "f32[N,7]",
    );
    bad(Op::Unary(UnaryOp::Relu), &["i64[3]"], "float operand");
    ok(Op::Cast { to: DType::F16 }, &["f32[N,2]"], "f16[N,2]");
    bad(
        Op::Unary(UnaryOp::Exp),
        &["f32[2]", "f32[2]"],
        "takes 1 inputs, found 2",
    );
}

#[test]
fn matmul_batches_and_transposes() {
    let mm = |a, b| {
        Op::MatMul(MatMulAttrs {
            transpose_a: a,
            transpose_b: b,
        })
    };
    ok(
        mm(false, false),
        &["f32[N,784]", "f32[784,256]"],
        "f32[N,256]",
    );
    ok(
        mm(false, false),
        &["f32[N,12,seq,64]", "f32[N,12,64,seq]"],
        "f32[N,12,seq,seq]",
    );
    ok(
        mm(false, true),
        &["f32[N,12,seq,64]", "f32[N,12,seq,64]"],
        "f32[N,12,seq,seq]",
    );
    ok(mm(true, false), &["f32[5,3]", "f32[5,7]"], "f32[3,7]");
    ok(
        mm(false, false),
        &["f32[2,1,4,5]", "f32[3,5,6]"],
        "f32[2,3,4,6]",
    );
    bad(
        mm(false, false),
        &["f32[N,784]", "f32[700,256]"],
        "inner dimensions differ",
    );
    bad(mm(false, false), &["f32[4]", "f32[4,2]"], "rank ≥ 2");
}

#[test]
fn convolution_strides_padding_dilation_groups() {
    let conv = |s: u64, p: u64, d: u64, g: u64| {
        Op::Conv2d(ConvAttrs {
            stride: [s, s],
            padding: [p; 4],
            dilation: [d, d],
            groups: g,
        })
    };
    ok(
        conv(1, 1, 1, 1),
        &["f32[N,3,32,32]", "f32[16,3,3,3]"],
        "f32[N,16,32,32]",
    );
    ok(
        conv(2, 1, 1, 1),
        &["f32[N,3,224,224]", "f32[16,3,3,3]"],
        "f32[N,16,112,112]",
    );
    ok(
        conv(1, 2, 2, 1),
        &["f32[1,8,10,10]", "f32[8,8,3,3]"],
        "f32[1,8,10,10]",
    );
    ok(
        conv(1, 0, 1, 8),
        &["f32[1,8,10,10]", "f32[8,1,3,3]", "f32[8]"],
        "f32[1,8,8,8]",
    );
    ok(
        conv(1, 1, 1, 1),
        &["f32[N,3,H,W]", "f32[4,3,3,3]"],
        "f32[N,4,H,W]",
    );
    bad(
        conv(2, 1, 1, 1),
        &["f32[N,3,H,W]", "f32[4,3,3,3]"],
        "give a static height",
    );
    bad(
        conv(1, 0, 1, 1),
        &["f32[1,4,8,8]", "f32[2,3,3,3]"],
        "input has 4 channels",
    );
    bad(
        conv(1, 0, 1, 1),
        &["f32[1,3,8,8]", "f32[2,3,3,3]", "f32[3]"],
        "bias must be [2]",
    );
    bad(
        conv(1, 0, 1, 1),
        &["f32[1,3,2,2]", "f32[2,3,3,3]"],
        "larger than padded",
    );
    let tconv = |s: u64, k_pad: u64, op: u64| {
        Op::ConvTranspose2d(ConvTransposeAttrs {
            conv: ConvAttrs {
                stride: [s, s],
                padding: [k_pad; 4],
                ..Default::default()
            },
            output_padding: [op, op],
        })
    };
    ok(
        tconv(2, 0, 0),
        &["f32[N,8,H,W]", "f32[8,4,2,2]"],
        "f32[N,4,2*H,2*W]",
    );
    ok(
        tconv(2, 1, 1),
        &["f32[1,8,5,5]", "f32[8,4,3,3]"],
        "f32[1,4,10,10]",
    );
}

#[test]
fn pooling_and_resize() {
    let pool = |k: u64, s: u64, p: u64, ceil: bool| {
        Op::Pool(PoolAttrs {
            kind: PoolKind::Max,
            kernel: [k, k],
            stride: [s, s],
            padding: [p; 4],
            ceil_mode: ceil,
            count_include_pad: false,
        })
    };
    ok(
        pool(3, 2, 1, false),
        &["f32[N,64,112,112]"],
        "f32[N,64,56,56]",
    );
    ok(pool(2, 2, 0, false), &["f32[1,1,5,5]"], "f32[1,1,2,2]");
    ok(pool(2, 2, 0, true), &["f32[1,1,5,5]"], "f32[1,1,3,3]");
    // ceil mode never starts a window in the trailing padding
    ok(pool(2, 2, 1, true), &["f32[1,1,4,4]"], "f32[1,1,3,3]");
    ok(
        Op::GlobalPool(PoolKind::Avg),
        &["f32[N,1280,7,7]"],
        "f32[N,1280,1,1]",
    );
    bad(Op::GlobalPool(PoolKind::Avg), &["f32[5]"], "rank ≥ 3");
    let resize = Op::Resize(ResizeAttrs {
        mode: ResizeMode::Bilinear,
        coord: CoordMode::HalfPixel,
        size: [Dim::Static(64), Dim::Static(48)],
    });
    ok(resize.clone(), &["f32[N,3,32,32]"], "f32[N,3,64,48]");
    bad(resize, &["f32[3,32,32]"], "rank 4");
}

#[test]
fn normalisation_and_reductions() {
    ok(
        Op::BatchNorm {
            eps: 1e-5,
            momentum: None,
        },
        &["f32[N,16,8,8]", "f32[16]", "f32[16]", "f32[16]", "f32[16]"],
        "f32[N,16,8,8]",
    );
    bad(
        Op::BatchNorm {
            eps: 1e-5,
            momentum: None,
        },
        &["f32[N,16,8,8]", "f32[16]", "f32[15]", "f32[16]", "f32[16]"],
        "bias must be [16]",
    );
    ok(
        Op::LayerNorm {
            axis: -1,
            eps: 1e-5,
        },
        &["f32[N,seq,768]", "f32[768]", "f32[768]"],
        "f32[N,seq,768]",
    );
    ok(
        Op::LayerNorm { axis: 1, eps: 1e-5 },
        &["f32[2,3,4]", "f32[3,4]", "f32[3,4]"],
        "f32[2,3,4]",
    );
    bad(
        Op::LayerNorm {
            axis: -1,
            eps: 1e-5,
        },
        &["f32[N,8]", "f32[7]", "f32[8]"],
        "scale must be [8]",
    );
    ok(
        Op::Softmax { axis: -1 },
        &["f32[N,12,seq,seq]"],
        "f32[N,12,seq,seq]",
    );
    bad(
        Op::Softmax { axis: 3 },
        &["f32[2,3]"],
        "axis 3 is out of range",
    );
    let red = |axes: Vec<i64>, keep| {
        Op::Reduce(ReduceOverAxes {
            op: ReduceOp::Mean,
            axes,
            keepdims: keep,
        })
    };
    ok(red(vec![-1], false), &["f32[N,seq,8]"], "f32[N,seq]");
    ok(red(vec![1, 2], true), &["f32[N,3,4,5]"], "f32[N,1,1,5]");
    ok(red(vec![], false), &["f32[N,3]"], "f32[]");
    bad(red(vec![0, -2], false), &["f32[2,3]"], "repeats an axis");
}

#[test]
fn shape_ops() {
    ok(
        Op::Concat { axis: 1 },
        &["f32[N,3]", "f32[N,5]"],
        "f32[N,8]",
    );
    ok(
        Op::Concat { axis: 0 },
        &["f32[N,3]", "f32[N,3]"],
        "f32[2*N,3]",
    );
    bad(
        Op::Concat { axis: 0 },
        &["f32[N,3]", "f32[4,3]"],
        "not a single size",
    );
    bad(Op::Concat { axis: 1 }, &["f32[N,3]", "f32[2,3]"], "differ");
    ok(
        Op::Split {
            axis: -1,
            sizes: vec![2, 6],
        },
        &["f32[N,8]"],
        "f32[N,2], f32[N,6]",
    );
    bad(
        Op::Split {
            axis: 1,
            sizes: vec![2, 2],
        },
        &["f32[N,8]"],
        "add up to 4",
    );
    let slice = |a: i64, s: i64, e: i64, st: i64| {
        Op::Slice(SliceAttrs {
            axes: vec![a],
            starts: vec![s],
            ends: vec![e],
            steps: vec![st],
        })
    };
    ok(slice(1, 1, -1, 1), &["f32[N,10]"], "f32[N,8]");
    ok(slice(1, 0, 100, 3), &["f32[N,10]"], "f32[N,4]");
    ok(slice(0, -1, i64::MIN, -1), &["f32[5]"], "f32[5]");
    ok(slice(0, 0, i64::MAX, 1), &["f32[N]"], "f32[N]");
    bad(slice(0, 1, i64::MAX, 1), &["f32[N]"], "no symbolic size");
    ok(slice(1, 0, 1, 1), &["f32[N,seq,8]"], "f32[N,1,8]");
    ok(slice(1, 2, 9, 3), &["f32[N,seq,8]"], "f32[N,3,8]");
    let reshape = |d: Vec<ReshapeDim>| Op::Reshape { shape: d };
    let sym = |s: &str| ReshapeDim::Dim(Dim::parse(s).unwrap());
    ok(
        reshape(vec![sym("N"), sym("seq"), sym("12"), sym("64")]),
        &["f32[N,seq,768]"],
        "f32[N,seq,12,64]",
    );
    ok(
        reshape(vec![ReshapeDim::Infer, sym("768")]),
        &["f32[N,seq,768]"],
        "f32[N*seq,768]",
    );
    ok(reshape(vec![ReshapeDim::Infer]), &["f32[2,3,4]"], "f32[24]");
    bad(
        reshape(vec![ReshapeDim::Infer, sym("5")]),
        &["f32[2,3,4]"],
        "not a multiple of 5",
    );
    bad(
        reshape(vec![sym("5"), sym("5")]),
        &["f32[2,3,4]"],
        "the target has 25",
    );
    ok(
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &["f32[N,seq,12,64]"],
        "f32[N,12,seq,64]",
    );
    bad(
        Op::Transpose { perm: vec![0, 0] },
        &["f32[2,3]"],
        "not a permutation",
    );
    ok(Op::Squeeze { axes: vec![-1] }, &["f32[N,3,1]"], "f32[N,3]");
    ok(Op::Squeeze { axes: vec![] }, &["f32[1,3,1]"], "f32[3]");
    bad(Op::Squeeze { axes: vec![1] }, &["f32[N,3]"], "is not 1");
    ok(
        Op::Unsqueeze { axes: vec![0, -1] },
        &["f32[N,3]"],
        "f32[1,N,3,1]",
    );
    ok(
        Op::Flatten { axis: 2 },
        &["f32[N,seq,768]"],
        "f32[N*seq,768]",
    );
    ok(Op::Flatten { axis: 0 }, &["f32[2,3]"], "f32[1,6]");
}

#[test]
fn broadcast_to() {
    let to = |dims: &[Dim]| Op::BroadcastTo {
        shape: dims.to_vec(),
    };
    let (n, s) = (Dim::sym("N"), Dim::Static);
    ok(to(&[n.clone(), s(3), s(4)]), &["f32[3,1]"], "f32[N,3,4]");
    ok(to(&[s(2), s(3)]), &["f32[]"], "f32[2,3]");
    bad(to(&[s(3)]), &["f32[2,3]"], "more dims");
    bad(to(&[s(2), s(4)]), &["f32[2,3]"], "neither 1 nor");
}

#[test]
fn gathers() {
    ok(
        Op::Gather { axis: 1 },
        &["f32[N,10,4]", "i64[2,3]"],
        "f32[N,2,3,4]",
    );
    ok(Op::Gather { axis: 0 }, &["f32[10]", "i64[]"], "f32[]");
    bad(
        Op::Gather { axis: 0 },
        &["f32[10]", "f32[2]"],
        "integer indices",
    );
    ok(
        Op::Embedding,
        &["f32[40000,768]", "i64[N,seq]"],
        "f32[N,seq,768]",
    );
    bad(Op::Embedding, &["f32[40000]", "i64[N,seq]"], "rank 2");
    ok(Op::Shape, &["f32[N,seq,768]"], "i64[3]");
    ok(
        Op::GatherElements { axis: -1 },
        &["f32[N,seq,40000]", "i64[N,seq,1]"],
        "f32[N,seq,1]",
    );
    bad(
        Op::GatherElements { axis: -1 },
        &["f32[N,seq,9]", "i64[N,1]"],
        "the data's rank",
    );
    bad(
        Op::GatherElements { axis: 0 },
        &["f32[3,4]", "i64[2,5]"],
        "dims 1",
    );
}

#[test]
fn collectives_use_the_mesh_axis_size() {
    let g = |axis| CommGroup {
        mesh: "m".into(),
        axis,
    };
    ok(
        Op::AllReduce {
            op: ReduceOp::Sum,
            group: g(1),
        },
        &["f32[N,10]"],
        "f32[N,10]",
    );
    ok(
        Op::AllGather {
            axis: 0,
            group: g(1),
        },
        &["f32[N,10]"],
        "f32[4*N,10]",
    );
    ok(
        Op::ReduceScatter {
            op: ReduceOp::Sum,
            axis: 1,
            group: g(0),
        },
        &["f32[N,10]"],
        "f32[N,5]",
    );
    bad(
        Op::ReduceScatter {
            op: ReduceOp::Sum,
            axis: 1,
            group: g(1),
        },
        &["f32[N,10]"],
        "does not divide evenly over 4",
    );
    ok(
        Op::AllToAll {
            split_axis: 1,
            concat_axis: 0,
            group: g(1),
        },
        &["f32[2,8]"],
        "f32[8,2]",
    );
    ok(
        Op::Broadcast {
            root: 0,
            group: g(0),
        },
        &["f32[3]"],
        "f32[3]",
    );
    bad(
        Op::AllReduce {
            op: ReduceOp::Sum,
            group: g(2),
        },
        &["f32[3]"],
        "no axis 2",
    );
    bad(
        Op::AllReduce {
            op: ReduceOp::Sum,
            group: CommGroup {
                mesh: "q".into(),
                axis: 0,
            },
        },
        &["f32[3]"],
        "unknown mesh @q",
    );
    ok(Op::Send { peer: 1 }, &["f32[3]"], "");
}

#[test]
fn fused_kernels_check_their_epilogue() {
    let conv = ConvAttrs {
        padding: [1; 4],
        ..Default::default()
    };
    let ep = |bias, residual, act: Option<UnaryOp>| Epilogue {
        bias,
        residual,
        activation: act,
    };
    let fc = |e| Op::FusedConv2d {
        conv: conv.clone(),
        epilogue: e,
    };
    ok(
        fc(ep(true, true, Some(UnaryOp::Relu))),
        &["f32[N,3,8,8]", "f32[4,3,3,3]", "f32[4]", "f32[N,4,8,8]"],
        "f32[N,4,8,8]",
    );
    bad(
        fc(ep(true, false, None)),
        &["f32[N,3,8,8]", "f32[4,3,3,3]", "f32[5]"],
        "bias f32[5] does not fit",
    );
    bad(
        fc(ep(false, true, None)),
        &["f32[N,3,8,8]", "f32[4,3,3,3]", "f32[N,4,8,7]"],
        "residual",
    );
    bad(
        fc(ep(true, true, None)),
        &["f32[N,3,8,8]", "f32[4,3,3,3]", "f32[4]"],
        "takes 4 inputs, found 3",
    );
    let fm = |e| Op::FusedMatMul {
        mm: MatMulAttrs::default(),
        epilogue: e,
    };
    ok(
        fm(ep(true, false, Some(UnaryOp::Gelu { tanh: false }))),
        &["f32[N,seq,8]", "f32[8,16]", "f32[16]"],
        "f32[N,seq,16]",
    );
    bad(
        fm(ep(true, false, None)),
        &["f32[N,seq,8]", "f32[8,16]", "f32[N,seq,16,2]"],
        "does not fit",
    );
    bad(
        Op::Fused { func: "f".into() },
        &["f32[2]"],
        "unknown function @f",
    );
}

#[test]
fn gradient_ops() {
    let conv = ConvAttrs {
        stride: [2, 2],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 2,
    };
    let gw = Op::Grad(GradOp::Conv2dWeight {
        conv: conv.clone(),
        kernel: [3, 3],
    });
    ok(
        gw.clone(),
        &["f32[2,4,8,8]", "f32[2,6,4,4]"],
        "f32[6,2,3,3]",
    );
    bad(
        gw.clone(),
        &["f32[2,4,8,8]", "f32[2,6,5,4]"],
        "not the type of conv2d's output",
    );
    bad(gw, &["f32[2,3,8,8]", "f32[2,6,4,4]"], "groups");
    let pool = PoolAttrs {
        kind: PoolKind::Max,
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1, 1, 1],
        ceil_mode: true,
        count_include_pad: false,
    };
    let pg = Op::Grad(GradOp::Pool(pool));
    ok(
        pg.clone(),
        &["f32[1,3,7,7]", "f32[1,3,4,4]"],
        "f32[1,3,7,7]",
    );
    bad(pg, &["f32[1,3,7,7]", "f32[1,3,3,3]"], "pooling's output");
    let sa = Op::Grad(GradOp::ScatterAdd { axis: 1 });
    ok(
        sa.clone(),
        &["f32[3,5]", "i64[3,2]", "f32[3,2]"],
        "f32[3,5]",
    );
    bad(sa, &["f32[3,5]", "i64[3,2]", "f32[2,2]"], "one shape");
    let gg = Op::Grad(GradOp::Gather { axis: 1, rows: 10 });
    ok(gg.clone(), &["i64[2,3]", "f32[N,2,3,4]"], "f32[N,10,4]");
    bad(gg, &["i64[2,3]", "f32[N,3,2,4]"], "does not hold indices");
    ok(
        Op::Grad(GradOp::Gather {
            axis: 0,
            rows: 40000,
        }),
        &["i64[N,seq]", "f32[N,seq,768]"],
        "f32[40000,768]",
    );
}
