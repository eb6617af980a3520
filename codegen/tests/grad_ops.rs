//! The gradient ops (`conv2d_grad_weight`, `pool_grad`, `scatter_add`, `gather_grad`) and
//! `conv_transpose2d` (conv2d's data gradient) through the LLVM backend against the
//! interpreter, on random inputs: max |a − b| / max |b| ≤ 1e-4 (`common::TOL`; the kernels
//! sum in another order than the interpreter's loops).

mod common;

use common::{rand_tensor as rand, rel_err, TOL};
use oar_codegen::jit::JitModel;
use oar_ir::op::{
    infer_types, ConvAttrs, ConvTransposeAttrs, GradOp, InferCtx, Literal, PoolAttrs, PoolKind,
};
use oar_ir::{DType, Dim, Graph, Op, TensorType, ValueRef};
use oar_runtime::{run, HostTensor, Weights};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn ty(dims: &[u64]) -> TensorType {
    TensorType::f32(dims)
}

fn static_dims(t: &TensorType) -> Vec<u64> {
    t.shape.as_static().expect("static")
}

fn ids(g: &mut Graph, dims: &[u64], vals: Vec<i64>) -> ValueRef {
    let t = TensorType::new(DType::I64, dims.iter().map(|&d| Dim::Static(d)).collect());
    g.add_node_typed(Op::Constant(Literal::Ints(vals)), vec![], vec![t], None)
        .expect("constant")
        .into()
}

/// Runs `g` (f32 inputs `ins`) in the interpreter and through LLVM; returns the error.
fn compare(g: &Graph, ins: &[HostTensor]) -> Result<f64, String> {
    let w = Weights::new();
    let want = run(g, ins, &w).map_err(|e| e.to_string())?;
    let mut m = JitModel::new(g, &BTreeMap::new(), &w, 2).map_err(|e| e.to_string())?;
    let got = m.run(ins).map_err(|e| e.to_string())?;
    Ok(got
        .iter()
        .zip(&want)
        .map(|(a, b)| rel_err(a, b))
        .fold(0.0, f64::max))
}

fn forward_type(op: Op, ins: &[TensorType]) -> TensorType {
    infer_types(&op, ins, &[], &InferCtx::default()).expect("forward types")[0].clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// conv2d's data gradient (with the output padding autodiff picks) and plain use.
    #[test]
    fn conv_transpose2d_matches(s in 1u64..=2, p in 0u64..=1, d in 1u64..=2, gk in 0u8..=2,
                                hw in 3u64..=5, op in 0u64..=1, bias: bool, seed in 0u64..1000) {
        let c = 4;
        let groups = [1, 2, c][gk as usize];
        let og = if gk == 2 { 1 } else { 3 };
        let t = ConvTransposeAttrs {
            conv: ConvAttrs { stride: [s, s], padding: [p, p, p + 1, p], dilation: [d, d], groups },
            output_padding: [op.min(s - 1), 0],
        };
        let (xt, wt) = (ty(&[2, c, hw, hw + 1]), ty(&[c, og, 3, 2]));
        let mut g = Graph::new("g");
        let mut args = vec![g.add_input("x", xt.clone()), g.add_input("w", wt.clone())];
        let mut ins = vec![rand(&static_dims(&xt), seed), rand(&static_dims(&wt), seed + 1)];
        if bias {
            args.push(g.add_input("b", ty(&[og * groups])));
            ins.push(rand(&[og * groups], seed + 2));
        }
        let y: ValueRef = g.add_node(Op::ConvTranspose2d(t), args, None).unwrap().into();
        g.set_outputs(vec![y]);
        let err = compare(&g, &ins);
        prop_assert!(err.as_ref().is_ok_and(|e| *e <= TOL), "{:?}\n{}", err, oar_ir::print(&g));
    }

    #[test]
    fn conv2d_grad_weight_matches(s in 1u64..=2, p in 0u64..=1, d in 1u64..=2, gk in 0u8..=2,
                                  hw in 5u64..=8, seed in 0u64..1000) {
        let c = 4;
        let groups = [1, 2, c][gk as usize];
        let o = if gk == 2 { c } else { 6 };
        let conv = ConvAttrs { stride: [s, s], padding: [p, p, p + 1, p], dilation: [d, d], groups };
        let xt = ty(&[2, c, hw, hw + 1]);
        let dyt = forward_type(Op::Conv2d(conv.clone()), &[xt.clone(), ty(&[o, c / groups, 3, 2])]);
        let mut g = Graph::new("g");
        let x = g.add_input("x", xt.clone());
        let dy = g.add_input("dy", dyt.clone());
        let op = Op::Grad(GradOp::Conv2dWeight { conv, kernel: [3, 2] });
        let y: ValueRef = g.add_node(op, vec![x, dy], None).unwrap().into();
        g.set_outputs(vec![y]);
        let err = compare(&g, &[rand(&static_dims(&xt), seed), rand(&static_dims(&dyt), seed + 1)]);
        prop_assert!(err.as_ref().is_ok_and(|e| *e <= TOL), "{:?}\n{}", err, oar_ir::print(&g));
    }

    #[test]
    fn pool_grad_matches(k in 2u64..=3, s in 1u64..=3, p in 0u64..=1, ceil: bool, incl: bool,
                         max: bool, hw in 5u64..=8, seed in 0u64..1000) {
        let attrs = PoolAttrs {
            kind: if max { PoolKind::Max } else { PoolKind::Avg },
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p, 0, p],
            ceil_mode: ceil,
            count_include_pad: incl,
        };
        let xt = ty(&[2, 3, hw, hw + 1]);
        let dyt = forward_type(Op::Pool(attrs.clone()), std::slice::from_ref(&xt));
        let mut g = Graph::new("g");
        let x = g.add_input("x", xt.clone());
        let dy = g.add_input("dy", dyt.clone());
        let y: ValueRef = g.add_node(Op::Grad(GradOp::Pool(attrs)), vec![x, dy], None).unwrap().into();
        g.set_outputs(vec![y]);
        let err = compare(&g, &[rand(&static_dims(&xt), seed), rand(&static_dims(&dyt), seed + 1)]);
        prop_assert!(err.as_ref().is_ok_and(|e| *e <= TOL), "{:?}\n{}", err, oar_ir::print(&g));
    }
}

/// Repeated and negative indices accumulate, along every axis.
#[test]
fn gather_grad_and_scatter_add_match() {
    for axis in [0i64, 1, -1] {
        let mut g = Graph::new("g");
        let idx = ids(&mut g, &[2, 3], vec![3, 0, 3, 1, -1, 3]);
        let data = [4u64, 4, 4];
        let a = axis.rem_euclid(3) as usize;
        let mut dyd = data[..a].to_vec();
        dyd.extend([2, 3]);
        dyd.extend(&data[a + 1..]);
        let dy = g.add_input("dy", ty(&dyd));
        let op = Op::Grad(GradOp::Gather { axis, rows: 4 });
        let y: ValueRef = g.add_node(op, vec![idx, dy], None).unwrap().into();
        g.set_outputs(vec![y]);
        let err = compare(&g, &[rand(&dyd, 7 + a as u64)]).unwrap();
        assert!(err <= TOL, "gather_grad axis {axis}: {err:.2e}");
    }
    for axis in [0i64, 1] {
        let mut g = Graph::new("g");
        let data = g.add_input("data", ty(&[3, 4]));
        let upd = g.add_input("upd", ty(&[2, 3]));
        let idx = ids(&mut g, &[2, 3], vec![1, 0, 1, -1, 1, 0]);
        let op = Op::Grad(GradOp::ScatterAdd { axis });
        let y: ValueRef = g.add_node(op, vec![data, idx, upd], None).unwrap().into();
        g.set_outputs(vec![y]);
        let err = compare(&g, &[rand(&[3, 4], 3), rand(&[2, 3], 4)]).unwrap();
        assert!(err <= TOL, "scatter_add axis {axis}: {err:.2e}");
    }
}

/// The backward autodiff emits for a fused conv (bias, residual, an activation) and a max
/// pool compiles and matches the interpreter: conv_transpose2d, conv2d_grad_weight,
/// pool_grad, the bias reduction and the activation derivative's greater/less/where.
#[test]
fn conv_and_pool_backward_compiles() {
    use oar_ir::op::{Epilogue, UnaryOp};
    use oar_passes::autodiff::rules::vjp;
    use oar_passes::autodiff::GradCx;
    let conv = ConvAttrs {
        stride: [2, 2],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 2,
    };
    let mut g = Graph::new("g");
    let x = g.add_input("x", ty(&[2, 4, 7, 7]));
    let w = g.add_input("w", ty(&[6, 2, 3, 3]));
    let b = g.add_input("b", ty(&[6]));
    let r = g.add_input("r", ty(&[2, 6, 4, 4]));
    let epilogue = Epilogue {
        bias: true,
        residual: true,
        activation: Some(UnaryOp::Relu6),
    };
    let y: ValueRef = g
        .add_node(Op::FusedConv2d { conv, epilogue }, vec![x, w, b, r], None)
        .unwrap()
        .into();
    let pool = PoolAttrs {
        kind: PoolKind::Max,
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1, 1, 1],
        ceil_mode: true,
        count_include_pad: false,
    };
    let p: ValueRef = g.add_node(Op::Pool(pool), vec![y], None).unwrap().into();
    let mut cx = GradCx::for_graph(g.clone());
    let pt = g.value_type(p).unwrap().clone();
    let n = pt.shape.numel().as_static().unwrap() as usize;
    let u = rand(&static_dims(&pt), 9).to_f64();
    assert_eq!(u.len(), n);
    let u = cx.constant(u, pt, p.node).unwrap();
    let gy = vjp(&mut cx, p.node, &[Some(u)], &[true]).unwrap()[0].unwrap();
    let grads = vjp(&mut cx, y.node, &[Some(gy)], &[true; 4]).unwrap();
    let mut bg = cx.finish();
    bg.set_outputs(grads.into_iter().map(|v| v.unwrap()).collect());
    let ins: Vec<HostTensor> = [[2, 4, 7, 7].as_slice(), &[6, 2, 3, 3], &[6], &[2, 6, 4, 4]]
        .iter()
        .enumerate()
        .map(|(k, d)| rand(d, 20 + k as u64))
        .collect();
    let err = compare(&bg, &ins).unwrap();
    assert!(
        err <= TOL,
        "backward: rel err {err:.2e}\n{}",
        oar_ir::print(&bg)
    );
}
