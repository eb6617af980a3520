//! Property tests: random small graphs give the same outputs through the LLVM path and the
//! interpreter (max |a − b| / max |b| ≤ 1e-4).

use oar_codegen::jit::JitModel;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, ConvAttrs, Init, MatMulAttrs, ParamAttrs, ReduceOverAxes, UnaryOp};
use oar_ir::{Graph, Op, TensorType, ValueRef};
use oar_runtime::{init::init_weights, run, HostTensor};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn param(g: &mut Graph, name: &str, dims: &[u64]) -> ValueRef {
    let op = Op::Param(ParamAttrs {
        name: name.into(),
        init: Some(Init::Uniform {
            low: -1.0,
            high: 1.0,
        }),
    });
    g.add_node_typed(op, vec![], vec![TensorType::f32(dims)], Some(name.into()))
        .unwrap()
        .into()
}

fn shape_of(g: &Graph, v: ValueRef) -> Vec<u64> {
    g.value_type(v).unwrap().shape.as_static().unwrap()
}

fn compare(g: &Graph) -> Result<(), TestCaseError> {
    let w = init_weights(g, 1).unwrap();
    let inputs: Vec<HostTensor> = g
        .inputs()
        .iter()
        .map(|&i| {
            let dims: Vec<usize> = g.node(i).outputs[0]
                .shape
                .as_static()
                .unwrap()
                .iter()
                .map(|&d| d as usize)
                .collect();
            let n: usize = dims.iter().product();
            HostTensor::f32(
                dims,
                (0..n)
                    .map(|k| ((k * 7919 % 200) as f32 / 100.0) - 1.0)
                    .collect(),
            )
        })
        .collect();
    let want = run(g, &inputs, &w).unwrap();
    let mut m = JitModel::new(g, &BTreeMap::new(), &w, 2)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let got = m.run(&inputs).unwrap();
    for (a, b) in got.iter().zip(&want) {
        let (x, y) = (a.to_f64(), b.to_f64());
        let scale = y.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        let err = x
            .iter()
            .zip(&y)
            .fold(0f64, |m, (p, q)| m.max((p - q).abs()))
            / scale;
        prop_assert!(err <= 1e-4, "rel err {err:.2e}\n{}", oar_ir::print(g));
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Step {
    Unary(u8),
    Binary(u8, u8),
    Softmax(u8),
    Reduce(u8, u8, bool),
    Transpose(u8),
    MatMul(u8),
    LayerNorm,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..10).prop_map(Step::Unary),
        (0u8..5, 0u8..3).prop_map(|(a, b)| Step::Binary(a, b)),
        (0u8..3).prop_map(Step::Softmax),
        (0u8..4, 0u8..3, any::<bool>()).prop_map(|(a, b, c)| Step::Reduce(a, b, c)),
        (0u8..6).prop_map(Step::Transpose),
        (1u8..7).prop_map(Step::MatMul),
        Just(Step::LayerNorm),
    ]
}

fn build(dims: [u64; 3], steps: &[Step]) -> Graph {
    let mut g = Graph::new("random");
    let mut v = g.add_input("x", TensorType::f32(&dims));
    for (k, s) in steps.iter().enumerate() {
        let sh = shape_of(&g, v);
        let r = sh.len();
        let (op, extra): (Op, Vec<ValueRef>) = match s {
            Step::Unary(u) => {
                let u = [
                    UnaryOp::Relu,
                    UnaryOp::Sigmoid,
                    UnaryOp::Tanh,
                    UnaryOp::HardSwish,
                    UnaryOp::Gelu { tanh: false },
                    UnaryOp::Abs,
                    UnaryOp::Neg,
                    UnaryOp::Clip {
                        min: -0.5,
                        max: 0.7,
                    },
                    UnaryOp::LeakyRelu { alpha: 0.1 },
                    UnaryOp::Gelu { tanh: true },
                ][*u as usize];
                (Op::Unary(u), vec![])
            }
            Step::Binary(o, shape) => {
                let b = [
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Max,
                    BinaryOp::Min,
                ][*o as usize];
                let pshape: Vec<u64> = match shape {
                    0 => vec![sh[r - 1]],
                    1 if r >= 2 => vec![sh[r - 2], 1],
                    _ => sh.clone(),
                };
                (
                    Op::Binary(b),
                    vec![param(&mut g, &format!("p{k}"), &pshape)],
                )
            }
            Step::Softmax(a) => (
                Op::Softmax {
                    axis: (*a as usize % r) as i64,
                },
                vec![],
            ),
            Step::Reduce(o, a, keep) if r > 1 => {
                let op = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min][*o as usize];
                (
                    Op::Reduce(ReduceOverAxes {
                        op,
                        axes: vec![(*a as usize % r) as i64],
                        keepdims: *keep,
                    }),
                    vec![],
                )
            }
            Step::Reduce(..) => (Op::Unary(UnaryOp::Relu), vec![]),
            Step::Transpose(p) => {
                let perms: Vec<Vec<usize>> = if r == 3 {
                    vec![
                        vec![0, 2, 1],
                        vec![1, 0, 2],
                        vec![2, 1, 0],
                        vec![1, 2, 0],
                        vec![2, 0, 1],
                        vec![0, 1, 2],
                    ]
                } else {
                    vec![(0..r).rev().collect()]
                };
                (
                    Op::Transpose {
                        perm: perms[*p as usize % perms.len()].clone(),
                    },
                    vec![],
                )
            }
            Step::MatMul(n) if r >= 2 => (
                Op::MatMul(MatMulAttrs::default()),
                vec![param(&mut g, &format!("w{k}"), &[sh[r - 1], *n as u64 * 3])],
            ),
            Step::MatMul(_) => (Op::Unary(UnaryOp::Abs), vec![]),
            Step::LayerNorm => {
                let c = sh[r - 1];
                let s = param(&mut g, &format!("g{k}"), &[c]);
                let b = param(&mut g, &format!("b{k}"), &[c]);
                (
                    Op::LayerNorm {
                        axis: -1,
                        eps: 1e-5,
                    },
                    vec![s, b],
                )
            }
        };
        let mut ins = vec![v];
        ins.extend(extra);
        v = g.add_node(op, ins, None).unwrap().into();
    }
    g.set_outputs(vec![v]);
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_match(d0 in 1u64..4, d1 in 1u64..6, d2 in 1u64..20, steps in prop::collection::vec(step(), 1..6)) {
        compare(&build([d0, d1, d2], &steps))?;
    }

    #[test]
    fn random_convolutions_match(
        n in 1u64..3, c in 1u64..6, h in 1u64..12, w in 1u64..12, k in 1u64..4,
        stride in 1u64..3, pad in 0u64..3, depthwise in any::<bool>(), mult in 1u64..3, co in 1u64..20,
    ) {
        let (groups, co) = if depthwise { (c, c * mult) } else { (1, co) };
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let mut g = Graph::new("conv");
        let x = g.add_input("x", TensorType::f32(&[n, c, h, w]));
        let wt = param(&mut g, "w", &[co, c / groups, k, k]);
        let b = param(&mut g, "b", &[co]);
        let attrs = ConvAttrs { stride: [stride, stride], padding: [pad, pad, pad, pad], dilation: [1, 1], groups };
        let y = g.add_node(Op::Conv2d(attrs), vec![x, wt, b], None).unwrap();
        g.set_outputs(vec![y.into()]);
        compare(&g)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_pools_match(
        c in 1u64..4, h in 2u64..10, w in 2u64..10, k in 1u64..4, stride in 1u64..3,
        pad in 0u64..2, ceil in any::<bool>(), include in any::<bool>(), max in any::<bool>(),
    ) {
        use oar_ir::op::{PoolAttrs, PoolKind};
        prop_assume!(pad < k && h + 2 * pad >= k && w + 2 * pad >= k);
        let mut g = Graph::new("pool");
        let x = g.add_input("x", TensorType::f32(&[1, c, h, w]));
        let attrs = PoolAttrs {
            kind: if max { PoolKind::Max } else { PoolKind::Avg },
            kernel: [k, k],
            stride: [stride, stride],
            padding: [pad; 4],
            ceil_mode: ceil,
            count_include_pad: include,
        };
        let y = g.add_node(Op::Pool(attrs), vec![x], None).unwrap();
        g.set_outputs(vec![y.into()]);
        compare(&g)?;
    }
}
