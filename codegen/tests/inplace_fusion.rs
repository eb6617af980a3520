//! In-place elementwise fusion (codegen's `pointwise::inline_plan`): an elementwise op read
//! once by an elementwise op of the same size is computed inside its reader's kernel. A
//! chain with a broadcast scalar, a comparison feeding `where`, unary ops and a value read
//! twice (which must stay stored) compiles to fewer kernels than ops and matches the
//! interpreter. Random inputs in [−1, 1); max |a − b| / max |b| ≤ 1e-4 (`common::TOL`).

mod common;

use common::{rel_err, TOL};
use oar_codegen::jit::JitModel;
use oar_ir::op::{BinaryOp, UnaryOp};
use oar_ir::{Graph, Op, TensorType, ValueRef};
use oar_runtime::{run, HostTensor, Weights};
use std::collections::BTreeMap;

fn rand(dims: &[usize], seed: u64) -> HostTensor {
    let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    common::rand_tensor(&dims, seed)
}

#[test]
fn an_elementwise_tree_runs_in_one_kernel_and_matches_the_interpreter() {
    let mut g = Graph::new("chain");
    let x = g.add_input("x", TensorType::f32(&[5, 37]));
    let y = g.add_input("y", TensorType::f32(&[5, 37]));
    let s = g.add_input("s", TensorType::f32(&[1]));
    let node = |g: &mut Graph, op: Op, ins: Vec<ValueRef>| -> ValueRef {
        g.add_node(op, ins, None).expect("node").into()
    };
    let a = node(&mut g, Op::Binary(BinaryOp::Mul), vec![x, y]);
    let b = node(&mut g, Op::Binary(BinaryOp::Add), vec![a, s]);
    let zero = node(&mut g, Op::Binary(BinaryOp::Sub), vec![s, s]);
    let c = node(&mut g, Op::Binary(BinaryOp::Greater), vec![b, zero]);
    let d = node(&mut g, Op::Where, vec![c, b, x]);
    let e = node(&mut g, Op::Unary(UnaryOp::Neg), vec![d]);
    let f = node(&mut g, Op::Unary(UnaryOp::Exp), vec![e]);
    // `f` is read twice: stored once, not recomputed.
    let h = node(&mut g, Op::Binary(BinaryOp::Mul), vec![f, f]);
    let k = node(&mut g, Op::Unary(UnaryOp::Sigmoid), vec![y]);
    let out = node(&mut g, Op::Binary(BinaryOp::Sub), vec![h, k]);
    g.set_outputs(vec![out]);
    let ins = [rand(&[5, 37], 1), rand(&[5, 37], 2), rand(&[1], 3)];
    let w = Weights::new();
    let want = run(&g, &ins, &w).expect("interpreter");
    let mut m = JitModel::new(&g, &BTreeMap::new(), &w, 2).expect("compiles");
    let got = m.run(&ins).expect("runs");
    let err = rel_err(&got[0], &want[0]);
    assert!(err <= TOL, "relative error {err:e} > {TOL:e}");
    // 10 ops, 4 kernels: `zero` is a [1] value read by a [5, 37] op (stored, not
    // recomputed per element); `b` is read twice, so a..b end in a stored `b`; c..f end in
    // the twice-read `f`; h, k and out form the last.
    let steps = m.executor().program().steps.len();
    assert_eq!(steps, 4, "kernels run: {steps}");
}
