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
