//! The fast convolution gradients (codegen's `conv_grad`: the data gradient as a forward
//! convolution of the zero-inserted cotangent with the flipped weight, the dense weight
//! gradient as im2colᵀ + GEMM, the depthwise weight gradient as per-channel tap sums)
//! against the interpreter's reference semantics, on the shapes PP-LCNet trains (1×1,
//! depthwise 3×3 and 5×5 at strides 1 and 2, the 3×3 stride-2 stem) with odd sizes and
//! batches that do and do not split into slices. Random inputs in [−1, 1);
//! max |a − b| / max |b| ≤ 1e-4 (`common::TOL`).

mod common;

use common::{rand_tensor as rand, rel_err, TOL};
use oar_codegen::jit::JitModel;
use oar_ir::op::{infer_types, ConvAttrs, ConvTransposeAttrs, GradOp, InferCtx};
use oar_ir::{Graph, Op, TensorType, ValueRef};
use oar_runtime::{run, HostTensor, Weights};
use std::collections::BTreeMap;

fn compare(g: &Graph, ins: &[HostTensor]) -> f64 {
    let w = Weights::new();
    let want = run(g, ins, &w).expect("interpreter");
    let mut m = JitModel::new(g, &BTreeMap::new(), &w, 2).expect("compiles");
    let got = m.run(ins).expect("runs");
    got.iter()
        .zip(&want)
        .map(|(a, b)| rel_err(a, b))
        .fold(0.0, f64::max)
}

/// One conv layer: x [n, c, h, w] → o channels, window k, stride s, "same"-style padding.
struct Case {
    n: u64,
    c: u64,
    o: u64,
    hw: [u64; 2],
    k: u64,
    s: u64,
    groups: u64,
}

impl Case {
    fn conv(&self) -> ConvAttrs {
        let p = self.k / 2;
        ConvAttrs {
            stride: [self.s, self.s],
            padding: [p; 4],
            dilation: [1, 1],
            groups: self.groups,
        }
    }

    fn x(&self) -> Vec<u64> {
        vec![self.n, self.c, self.hw[0], self.hw[1]]
    }

    fn w(&self) -> Vec<u64> {
        vec![self.o, self.c / self.groups, self.k, self.k]
    }

    fn dy(&self) -> Vec<u64> {
        let ins = [TensorType::f32(&self.x()), TensorType::f32(&self.w())];
        let t = infer_types(&Op::Conv2d(self.conv()), &ins, &[], &InferCtx::default())
            .expect("conv types");
        t[0].shape.as_static().expect("static")
    }

    /// conv2d's data gradient, with the output padding autodiff gives it.
    fn data_grad_err(&self, seed: u64) -> f64 {
        let conv = self.conv();
        // The rows a strided window never reached: (len + pads − k) mod s.
        let rem = |len: u64| (len + 2 * (self.k / 2) - self.k) % self.s;
        let t = ConvTransposeAttrs {
            conv,
            output_padding: [rem(self.hw[0]), rem(self.hw[1])],
        };
        let (dy, w) = (self.dy(), self.w());
        let mut g = Graph::new("g");
        let a = g.add_input("dy", TensorType::f32(&dy));
        let b = g.add_input("w", TensorType::f32(&w));
        let y: ValueRef = g
            .add_node(Op::ConvTranspose2d(t), vec![a, b], None)
            .expect("conv_transpose2d")
            .into();
        g.set_outputs(vec![y]);
        assert_eq!(
            g.value_type(y).unwrap().shape.as_static().unwrap(),
            self.x(),
            "the data gradient has x's shape"
        );
        compare(&g, &[rand(&dy, seed), rand(&w, seed + 1)])
    }

    fn weight_grad_err(&self, seed: u64) -> f64 {
        let (x, dy) = (self.x(), self.dy());
        let mut g = Graph::new("g");
        let a = g.add_input("x", TensorType::f32(&x));
        let b = g.add_input("dy", TensorType::f32(&dy));
        let op = Op::Grad(GradOp::Conv2dWeight {
            conv: self.conv(),
            kernel: [self.k, self.k],
        });
        let y: ValueRef = g.add_node(op, vec![a, b], None).expect("grad").into();
        g.set_outputs(vec![y]);
        compare(&g, &[rand(&x, seed), rand(&dy, seed + 1)])
    }
}

fn cases() -> Vec<(&'static str, Case)> {
    let dw = |k, s, hw| Case {
        n: 3,
        c: 5,
        o: 5,
        hw,
        k,
        s,
        groups: 5,
    };
    vec![
        ("depthwise 3x3 s1", dw(3, 1, [7, 9])),
        ("depthwise 3x3 s2", dw(3, 2, [9, 8])),
        ("depthwise 5x5 s1", dw(5, 1, [6, 11])),
        ("depthwise 5x5 s2", dw(5, 2, [11, 7])),
        (
            "depthwise x2 multiplier",
            Case {
                o: 10,
                ..dw(3, 2, [7, 7])
            },
        ),
        (
            "pointwise, batch 4 (slices)",
            Case {
                n: 4,
                c: 7,
                o: 9,
                hw: [5, 3],
                k: 1,
                s: 1,
                groups: 1,
            },
        ),
        (
            "pointwise, wide, batch 6",
            Case {
                n: 6,
                c: 24,
                o: 40,
                hw: [4, 4],
                k: 1,
                s: 1,
                groups: 1,
            },
        ),
        (
            "stem 3x3 s2",
            Case {
                n: 5,
                c: 3,
                o: 8,
                hw: [13, 10],
                k: 3,
                s: 2,
                groups: 1,
            },
        ),
        (
            "grouped 3x3 s1",
            Case {
                n: 2,
                c: 6,
                o: 4,
                hw: [5, 6],
                k: 3,
                s: 1,
                groups: 2,
            },
        ),
    ]
}

#[test]
fn data_gradients_match_the_interpreter() {
    for (i, (what, case)) in cases().into_iter().enumerate() {
        let err = case.data_grad_err(10 + i as u64);
        assert!(err <= TOL, "{what}: data gradient rel err {err:.2e}");
    }
}

#[test]
fn weight_gradients_match_the_interpreter() {
    for (i, (what, case)) in cases().into_iter().enumerate() {
        let err = case.weight_grad_err(50 + i as u64);
        assert!(err <= TOL, "{what}: weight gradient rel err {err:.2e}");
    }
}
