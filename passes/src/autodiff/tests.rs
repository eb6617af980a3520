//! Unit tests of the walk itself (per-op rules are tested against finite differences in
//! `passes/tests/`).

use super::*;

#[test]
fn rejects_a_non_scalar_loss() {
    let g = oar_ir::parse(
        "graph @g(%x: f32[2,3]) -> (f32[2,3]) {\n  %w = param \"w\" : f32[2,3]\n  %y = add(%x, %w) : f32[2,3]\n  return %y\n}\n",
    )
    .unwrap();
    let y = g.outputs()[0];
    let err = append_backward(&g, y, false).unwrap_err();
    assert!(err.to_string().contains("must be a float scalar"), "{err}");
}

#[test]
fn rejects_symbolic_shapes() {
    let g = oar_ir::parse(
        "graph @g(%x: f32[N,3]) -> (f32[]) {\n  %w = param \"w\" : f32[3]\n  %y = mul(%x, %w) : f32[N,3]\n  %l = reduce_sum(%y) : f32[]\n  return %l\n}\n",
    )
    .unwrap();
    let l = g.outputs()[0];
    let err = append_backward(&g, l, false).unwrap_err();
    assert!(err.to_string().contains("static shapes"), "{err}");
}

#[test]
fn unused_params_get_no_gradient() {
    let g = oar_ir::parse(
        "graph @g(%x: f32[3]) -> (f32[]) {\n  %w = param \"w\" : f32[3]\n  %u = param \"unused\" : f32[3]\n  %l = reduce_sum(%x) : f32[]\n  return %l\n}\n",
    )
    .unwrap();
    let l = g.outputs()[0];
    let b = append_backward(&g, l, false).unwrap();
    assert!(b.param_grads.is_empty());
    assert_eq!(b.unused_params, vec!["w".to_string(), "unused".to_string()]);
}

/// `L = Σ x·w + Σ (−x·w)·v` with a stop-gradient on the second use of `x·w` (its negation):
/// `dL/dw = x` (only the first term), `dL/dv = −x·w` (unchanged); without the stop
/// `dL/dw = x − x·v`. Exact in f32 for these values, so compared to 1e-6.
#[test]
fn a_stop_gradient_cuts_only_the_stopped_path() {
    let g = oar_ir::parse(
        "graph @g(%x: f32[3]) -> (f32[]) {\n  %w = param \"w\" : f32[3]\n  %v = param \"v\" : f32[3]\n  %a = mul(%x, %w) : f32[3]\n  %n = neg(%a) : f32[3]\n  %b = mul(%n, %v) : f32[3]\n  %s1 = reduce_sum(%a) : f32[]\n  %s2 = reduce_sum(%b) : f32[]\n  %l = add(%s1, %s2) : f32[]\n  return %l\n}\n",
    )
    .unwrap();
    let l = g.outputs()[0];
    let n = ValueRef::new(g.find("n").unwrap(), 0);
    let x = [0.5f32, -1.25, 2.0];
    let (w, v) = ([1.5f32, 0.75, -0.5], [-2.0f32, 0.25, 3.0]);
    let grads = |stop: BTreeSet<ValueRef>| {
        let b = append_backward_with(&g, l, false, &stop).unwrap();
        let mut bg = b.graph.clone();
        bg.set_outputs(b.param_grads.iter().map(|(_, v)| *v).collect());
        let weights = oar_runtime::Weights::from([
            (
                "w".to_string(),
                oar_runtime::HostTensor::f32(vec![3], w.to_vec()),
            ),
            (
                "v".to_string(),
                oar_runtime::HostTensor::f32(vec![3], v.to_vec()),
            ),
        ]);
        let xs = oar_runtime::HostTensor::f32(vec![3], x.to_vec());
        let out = oar_runtime::run(&bg, &[xs], &weights).unwrap();
        let names: Vec<String> = b.param_grads.iter().map(|(n, _)| n.clone()).collect();
        (names, out.iter().map(|t| t.to_f64()).collect::<Vec<_>>())
    };
    let close = |got: &[f64], want: Vec<f64>| {
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "{got:?} vs {want:?}");
        }
    };
    let (names, plain) = grads(BTreeSet::new());
    assert_eq!(names, ["w", "v"]);
    close(
        &plain[0],
        (0..3).map(|i| f64::from(x[i] - x[i] * v[i])).collect(),
    );
    let (names, cut) = grads(BTreeSet::from([n]));
    assert_eq!(names, ["w", "v"]);
    close(&cut[0], x.iter().map(|&a| f64::from(a)).collect());
    close(&cut[1], (0..3).map(|i| f64::from(-x[i] * w[i])).collect());
    // Stopping the shared value itself leaves `w` without any gradient.
    let a = ValueRef::new(g.find("a").unwrap(), 0);
    let b = append_backward_with(&g, l, false, &BTreeSet::from([a])).unwrap();
    assert_eq!(b.unused_params, ["w"]);
}
