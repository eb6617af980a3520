//! The executor rules no comparison on correct kernels can see, pinned for every backend:
//! temporaries start poisoned (NaN), so a step that reads a value nothing wrote fails; and
//! packaging refuses a program the C executor cannot hold, naming what.

use super::cases::Case;
use super::common::random_graph::param;
use super::common::random_inputs;
use super::runners::{compile, Backend, Executable, RustExecutor, SharedLibrary};
use oar_ir::op::MatMulAttrs;
use oar_ir::{DType, Graph, Op, TensorType};
use oar_runtime::init::init_weights;
use std::collections::BTreeMap;

/// x · w then softmax: two kernels, the first writing a temporary only the second reads.
fn product_then_softmax() -> Case {
    let mut g = Graph::new("product_softmax");
    let x = g.add_input("x", TensorType::f32(&[4, 8]));
    let w = param(&mut g, "w", &[8, 16]);
    let y = g
        .add_node(Op::MatMul(MatMulAttrs::default()), vec![x, w], None)
        .unwrap();
    let z = g
        .add_node(Op::Softmax { axis: -1 }, vec![y.into()], None)
        .unwrap();
    g.set_outputs(vec![z.into()]);
    Case {
        name: "product_softmax".into(),
        graph: g,
        bindings: BTreeMap::new(),
    }
}

/// With the product's step left out, the softmax reads the product's never-written
/// temporary: every executor must hand back NaN (its poison), not zeros or stale data.
#[test]
fn a_step_left_out_reads_poison_in_every_executor() {
    let case = product_then_softmax();
    let weights = init_weights(&case.graph, 3).unwrap();
    let inputs = random_inputs(&case.graph, &case.bindings, 5);
    let backends: [&dyn Backend; 3] = [&RustExecutor, &Executable, &SharedLibrary];
    for backend in backends {
        let mut compiled = compile(&case).unwrap();
        let p = &mut compiled.program;
        assert!(
            p.steps.len() >= p.prologue + 2,
            "product and softmax should be two steps: {:?}",
            p.kernels
        );
        p.steps.remove(p.prologue);
        let dir = super::scratch(backend.name(), "step-left-out");
        let runs = backend
            .run(&case, compiled, &weights, &inputs, &dir)
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        for (r, outs) in runs.iter().enumerate() {
            let v = outs[0].to_f64();
            assert!(
                v.iter().all(|x| x.is_nan()),
                "{} run {r}: a never-written temporary read as {:?}…",
                backend.name(),
                &v[..4]
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn packaging_names_what_the_c_executor_cannot_hold() {
    let case = product_then_softmax();
    let weights = init_weights(&case.graph, 3).unwrap();
    let mut compiled = compile(&case).unwrap();
    let out = compiled.program.outputs[0];
    compiled.program.buffers[out].dtype = DType::F16;
    let name = compiled.program.buffers[out].name.clone();
    let dir = super::scratch("package-errors", "f16");
    let err = oar_codegen::package::package(
        &compiled,
        &["x".into()],
        &weights,
        oar_codegen::package::Artifact::Executable,
        true,
        &dir.join("model"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("buffer `{name}` is f16")) && err.contains("f32, i64 and bool"),
        "{err}"
    );
}
