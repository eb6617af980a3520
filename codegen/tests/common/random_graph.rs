//! Random small graphs: a chain of unary, binary (with a parameter of a broadcast shape),
//! softmax, reduce, transpose, matmul and layer-norm steps over one input. The property
//! tests draw the steps with proptest; the executor suite draws a fixed few from seeds.

use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, Init, MatMulAttrs, ParamAttrs, ReduceOverAxes, UnaryOp};
use oar_ir::{Graph, Op, TensorType, ValueRef};

pub fn param(g: &mut Graph, name: &str, dims: &[u64]) -> ValueRef {
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

pub fn shape_of(g: &Graph, v: ValueRef) -> Vec<u64> {
    g.value_type(v).unwrap().shape.as_static().unwrap()
}

#[derive(Debug, Clone)]
pub enum Step {
    Unary(u8),
    Binary(u8, u8),
    Softmax(u8),
    Reduce(u8, u8, bool),
    Transpose(u8),
    MatMul(u8),
    LayerNorm,
}

impl Step {
    /// A step from 32 random bits: the same spread of kinds as the property tests.
    pub fn from_bits(x: u32) -> Step {
        let (a, b, c) = ((x >> 8) as u8, (x >> 16) as u8, x >> 24 & 1 == 1);
        match x % 7 {
            0 => Step::Unary(a % 10),
            1 => Step::Binary(a % 5, b % 3),
            2 => Step::Softmax(a % 3),
            3 => Step::Reduce(a % 4, b % 3, c),
            4 => Step::Transpose(a % 6),
            5 => Step::MatMul(1 + a % 6),
            _ => Step::LayerNorm,
        }
    }
}

pub fn build(dims: [u64; 3], steps: &[Step]) -> Graph {
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
