//! Every op has a gradient decision: a rule (checked against finite differences in
//! `autodiff_core.rs`, or the conv/pool/gather tests), or a reason it has none. A new op
//! name fails `every_op_is_classified` until someone decides.

use oar_passes::autodiff::append_backward;

/// Ops with rules in `rules/{elementwise,linalg,norm,data_movement,fused}.rs`, each with a
/// one-op graph (input `%x`, output `%y`) that must differentiate.
const OURS: &[(&str, &str, &str)] = &[
    ("neg", "neg(%x)", "f32[2,3]"),
    ("exp", "exp(%x)", "f32[2,3]"),
    ("log", "log(%x)", "f32[2,3]"),
    ("sqrt", "sqrt(%x)", "f32[2,3]"),
    ("rsqrt", "rsqrt(%x)", "f32[2,3]"),
    ("tanh", "tanh(%x)", "f32[2,3]"),
    ("erf", "erf(%x)", "f32[2,3]"),
    ("abs", "abs(%x)", "f32[2,3]"),
    ("relu", "relu(%x)", "f32[2,3]"),
    ("relu6", "relu6(%x)", "f32[2,3]"),
    ("leaky_relu", "leaky_relu(%x)", "f32[2,3]"),
    ("sigmoid", "sigmoid(%x)", "f32[2,3]"),
    ("hardsigmoid", "hardsigmoid(%x)", "f32[2,3]"),
    ("hardswish", "hardswish(%x)", "f32[2,3]"),
    ("gelu", "gelu(%x)", "f32[2,3]"),
    ("silu", "silu(%x)", "f32[2,3]"),
    ("mish", "mish(%x)", "f32[2,3]"),
    ("clip", "clip(%x) {min=0.0}", "f32[2,3]"),
    ("add", "add(%x, %x)", "f32[2,3]"),
    ("sub", "sub(%x, %x)", "f32[2,3]"),
    ("mul", "mul(%x, %x)", "f32[2,3]"),
    ("div", "div(%x, %x)", "f32[2,3]"),
    ("pow", "pow(%x, %x)", "f32[2,3]"),
    ("max", "max(%x, %x)", "f32[2,3]"),
    ("min", "min(%x, %x)", "f32[2,3]"),
    ("cast", "cast(%x) {to=f32}", "f32[2,3]"),
    ("dropout", "dropout(%x) {p=0.5}", "f32[2,3]"),
    ("matmul", "matmul(%x, %x) {transpose_b=true}", "f32[2,2]"),
    (
        "fused_matmul",
        "fused_matmul(%x, %x) {transpose_a=true, act=relu}",
        "f32[3,3]",
    ),
    (
        "layer_norm",
        "layer_norm(%x, %s, %s) {axis=1, eps=1e-5}",
        "f32[2,3]",
    ),
    ("softmax", "softmax(%x) {axis=1}", "f32[2,3]"),
    ("log_softmax", "log_softmax(%x) {axis=1}", "f32[2,3]"),
    ("causal_mask", "causal_mask(%x) {fill=0.0}", "f32[2,3]"),
    ("reduce_sum", "reduce_sum(%x) {axes=[1]}", "f32[2]"),
    ("reduce_mean", "reduce_mean(%x) {axes=[1]}", "f32[2]"),
    ("reduce_max", "reduce_max(%x) {axes=[1]}", "f32[2]"),
    ("reduce_min", "reduce_min(%x) {axes=[1]}", "f32[2]"),
    ("reduce_prod", "reduce_prod(%x) {axes=[1]}", "f32[2]"),
    ("concat", "concat(%x, %x) {axis=0}", "f32[4,3]"),
    (
        "split",
        "split(%x) {axis=1, sizes=[1, 2]}",
        "(f32[2,1], f32[2,2])",
    ),
    (
        "slice",
        "slice(%x) {axes=[1], starts=[4], ends=[-6], steps=[-2]}",
        "f32[2,3]",
    ),
    ("reshape", "reshape(%x) {shape=[3, 2]}", "f32[3,2]"),
    ("transpose", "transpose(%x) {perm=[1, 0]}", "f32[3,2]"),
    ("squeeze", "squeeze(%u) {axes=[0]}", "f32[2,3]"),
    ("unsqueeze", "unsqueeze(%x) {axes=[0]}", "f32[1,2,3]"),
    ("flatten", "flatten(%x) {axis=0}", "f32[1,6]"),
    (
        "broadcast_to",
        "broadcast_to(%x) {shape=[4, 2, 3]}",
        "f32[4,2,3]",
    ),
    ("fused", "fused(%x) {func=@body}", "f32[2,3]"),
];

/// Ops with several spellings or inputs that the table above cannot express
/// (`deform_conv2d`: offsets and masks shaped by the conv; tests/autodiff_deform.rs).
const OURS_ELSEWHERE: &[&str] = &["where", "batch_norm", "deform_conv2d"];

/// The other rules file's ops (conv, pooling, resize, gathers).
const CONV_POOL_GATHER: &[&str] = &[
    "conv2d",
    "conv_transpose2d",
    "fused_conv2d",
    "max_pool",
    "avg_pool",
    "global_max_pool",
    "global_avg_pool",
    "resize",
    "gather",
    "gather_elements",
    "embedding",
];

/// Sources, comparisons, `shape`, and the ops the partitioner inserts after
/// differentiation (collectives, send/recv).
const NO_GRADIENT: &[&str] = &[
    "input",
    "param",
    "constant",
    "recv",
    "send",
    "shape",
    "equal",
    "less",
    "greater",
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "all_to_all",
    "broadcast",
    // Box selection: a discrete choice.
    "nms",
    "matrix_nms",
    // Gradient ops themselves: autodiff is first order.
    "conv2d_grad_weight",
    "pool_grad",
    "scatter_add",
    "gather_grad",
    "deform_conv2d_grad",
];

#[test]
fn every_op_is_classified() {
    let known = |n: &str| {
        OURS.iter().any(|(o, _, _)| *o == n)
            || OURS_ELSEWHERE.contains(&n)
            || CONV_POOL_GATHER.contains(&n)
            || NO_GRADIENT.contains(&n)
    };
    let unknown: Vec<&str> = oar_ir::op::all_op_names()
        .into_iter()
        .filter(|n| !known(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "ops without a gradient decision: {unknown:?}"
    );
}

#[test]
fn each_of_ours_differentiates() {
    for (name, op, ty) in OURS {
        let text = format!(
            "graph @body(%b: f32[2,3]) -> (f32[2,3]) {{
  %t = tanh(%b) : f32[2,3]
  return %t
}}

graph @g(%x: f32[{x}], %u: f32[1,2,3]) -> (f32[]) {{
  %s = param \"s\" : f32[3]
  %y = {op} : {ty}
  %l = reduce_sum(%y) : f32[]
  return %l
}}
",
            x = match *name {
                "matmul" => "2,3",
                "fused_matmul" => "3,3",
                "slice" => "2,5",
                _ => "2,3",
            },
        );
        let g = oar_ir::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        let l = g.outputs()[0];
        match append_backward(&g, l, true) {
            Ok(b) => assert!(
                !b.input_grads.is_empty(),
                "{name}: no input gradient\n{text}"
            ),
            Err(e) => panic!("{name}: {e}\n{text}"),
        }
    }
}
