//! Every op family of the interpreter against numpy (runtime/tests/numpy_ref.py) on random
//! inputs — never zeros — at two batch sizes. Tolerance: max|a−b| / max|b| ≤ 1e-4.

use oar_ir::op::Op;
use oar_ir::{parse, Graph};
use oar_runtime::io::npy::{read_npy, write_npy};
use oar_runtime::{init::init_weights, run, HostTensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// How to draw one input: normal, positive, integer index range, or bool.
#[derive(Clone, Copy)]
enum Draw {
    Normal,
    Positive,
    Index(i64, i64),
    Bool,
}

struct Case {
    name: String,
    graph: Graph,
    draws: Vec<Draw>,
}

fn draw(rng: &mut ChaCha8Rng, d: Draw, shape: Vec<usize>) -> HostTensor {
    let n: usize = shape.iter().product();
    match d {
        Draw::Normal => HostTensor::f32(
            shape,
            (0..n)
                .map(|_| rng.gen_range(-2.0f32..2.0))
                .map(|v| if v == 0.0 { 0.5 } else { v })
                .collect(),
        ),
        Draw::Positive => {
            HostTensor::f32(shape, (0..n).map(|_| rng.gen_range(0.2f32..3.0)).collect())
        }
        Draw::Index(lo, hi) => {
            HostTensor::i64(shape, (0..n).map(|_| rng.gen_range(lo..hi)).collect())
        }
        Draw::Bool => HostTensor::bool(shape, (0..n).map(|_| rng.gen_bool(0.5)).collect()),
    }
}

/// One op applied to graph inputs, written in the text format. `sig` is the input list,
/// `body` the statement(s) ending in `%y`, `ret` the result type.
fn case(name: &str, sig: &str, body: &str, ret: &str, draws: &[Draw]) -> Case {
    let text = format!("graph @{name}({sig}) -> ({ret}) {{\n{body}\n  return %y\n}}\n");
    let graph = parse(&text).unwrap_or_else(|e| panic!("case {name}: {e}"));
    Case {
        name: name.to_string(),
        graph,
        draws: draws.to_vec(),
    }
}

fn unary_cases() -> Vec<Case> {
    use Draw::*;
    let ops = [
        ("neg", Normal),
        ("exp", Normal),
        ("log", Positive),
        ("sqrt", Positive),
        ("rsqrt", Positive),
        ("tanh", Normal),
        ("erf", Normal),
        ("abs", Normal),
        ("relu", Normal),
        ("relu6", Normal),
        ("sigmoid", Normal),
        ("hardswish", Normal),
        ("silu", Normal),
        ("mish", Normal),
    ];
    let mut v: Vec<Case> = ops
        .iter()
        .map(|(op, d)| {
            case(
                op,
                "%x: f32[N,7]",
                &format!("  %y = {op}(%x) : f32[N,7]"),
                "f32[N,7]",
                &[*d],
            )
        })
        .collect();
    for (name, op) in [
        ("leaky_relu", "leaky_relu(%x) {alpha=0.1}"),
        ("hardsigmoid", "hardsigmoid(%x) {alpha=0.16666666666666666}"),
        ("gelu_erf", "gelu(%x)"),
        ("gelu_tanh", "gelu(%x) {approximate=tanh}"),
        ("clip", "clip(%x) {min=-0.5, max=1.25}"),
        ("clip_low", "clip(%x) {min=0.0}"),
    ] {
        v.push(case(
            name,
            "%x: f32[N,7]",
            &format!("  %y = {op} : f32[N,7]"),
            "f32[N,7]",
            &[Normal],
        ));
    }
    v
}

fn binary_cases() -> Vec<Case> {
    use Draw::*;
    let mut v = Vec::new();
    for (op, d2) in [
        ("add", Normal),
        ("sub", Normal),
        ("mul", Normal),
        ("div", Positive),
        ("max", Normal),
        ("min", Normal),
    ] {
        v.push(case(
            op,
            "%a: f32[N,1,5], %b: f32[4,1]",
            &format!("  %y = {op}(%a, %b) : f32[N,4,5]"),
            "f32[N,4,5]",
            &[Normal, d2],
        ));
    }
    v.push(case(
        "pow",
        "%a: f32[N,3], %b: f32[3]",
        "  %y = pow(%a, %b) : f32[N,3]",
        "f32[N,3]",
        &[Positive, Normal],
    ));
    for op in ["less", "greater"] {
        v.push(case(
            op,
            "%a: f32[N,3], %b: f32[1]",
            &format!("  %y = {op}(%a, %b) : bool[N,3]"),
            "bool[N,3]",
            &[Normal, Normal],
        ));
    }
    v.push(case(
        "equal_int",
        "%a: i64[N,6], %b: i64[6]",
        "  %y = equal(%a, %b) : bool[N,6]",
        "bool[N,6]",
        &[Index(0, 3), Index(0, 3)],
    ));
    v.push(case(
        "int_div",
        "%a: i64[N,6], %b: i64[6]",
        "  %y = div(%a, %b) : i64[N,6]",
        "i64[N,6]",
        &[Index(-20, 20), Index(1, 5)],
    ));
    v.push(case(
        "where",
        "%c: bool[N,1], %a: f32[3], %b: f32[N,3]",
        "  %y = where(%c, %a, %b) : f32[N,3]",
        "f32[N,3]",
        &[Bool, Normal, Normal],
    ));
    v.push(case(
        "cast_to_int",
        "%a: f32[N,4]",
        "  %y = cast(%a) {to=i64} : i64[N,4]",
        "i64[N,4]",
        &[Normal],
    ));
    v.push(case(
        "cast_to_float",
        "%a: i64[N,4]",
        "  %y = cast(%a) {to=f32} : f32[N,4]",
        "f32[N,4]",
        &[Index(-9, 9)],
    ));
    v
}

fn contraction_cases() -> Vec<Case> {
    use Draw::*;
    vec![
        case("matmul", "%a: f32[N,5], %b: f32[5,3]", "  %y = matmul(%a, %b) : f32[N,3]", "f32[N,3]", &[Normal, Normal]),
        case("matmul_batched", "%a: f32[N,2,4,5], %b: f32[2,5,3]", "  %y = matmul(%a, %b) : f32[N,2,4,3]", "f32[N,2,4,3]", &[Normal, Normal]),
        case("matmul_ta", "%a: f32[N,5,4], %b: f32[5,3]", "  %y = matmul(%a, %b) {transpose_a=true} : f32[N,4,3]", "f32[N,4,3]", &[Normal, Normal]),
        case("matmul_tb", "%a: f32[N,4,5], %b: f32[N,3,5]", "  %y = matmul(%a, %b) {transpose_b=true} : f32[N,4,3]", "f32[N,4,3]", &[Normal, Normal]),
        case("conv", "%x: f32[N,3,9,8], %w: f32[4,3,3,3], %b: f32[4]", "  %y = conv2d(%x, %w, %b) {stride=[2, 1], padding=[1, 0, 1, 2]} : f32[N,4,5,8]", "f32[N,4,5,8]", &[Normal, Normal, Normal]),
        case("conv_dilated", "%x: f32[N,2,9,9], %w: f32[3,2,3,3]", "  %y = conv2d(%x, %w) {padding=[2, 2, 2, 2], dilation=[2, 2]} : f32[N,3,9,9]", "f32[N,3,9,9]", &[Normal, Normal]),
        case("conv_groups", "%x: f32[N,4,6,6], %w: f32[6,2,3,3]", "  %y = conv2d(%x, %w) {padding=[1, 1, 1, 1], groups=2} : f32[N,6,6,6]", "f32[N,6,6,6]", &[Normal, Normal]),
        case("conv_depthwise", "%x: f32[N,5,7,7], %w: f32[5,1,5,5]", "  %y = conv2d(%x, %w) {stride=[2, 2], padding=[2, 2, 2, 2], groups=5} : f32[N,5,4,4]", "f32[N,5,4,4]", &[Normal, Normal]),
        case("conv_transpose", "%x: f32[N,4,5,5], %w: f32[4,3,3,3], %b: f32[6]", "  %y = conv_transpose2d(%x, %w, %b) {stride=[2, 2], padding=[1, 1, 1, 1], groups=2, output_padding=[1, 1]} : f32[N,6,10,10]", "f32[N,6,10,10]", &[Normal, Normal, Normal]),
        case("conv_transpose_plain", "%x: f32[N,2,4,3], %w: f32[2,3,2,2]", "  %y = conv_transpose2d(%x, %w) {stride=[2, 2]} : f32[N,3,8,6]", "f32[N,3,8,6]", &[Normal, Normal]),
    ]
}

fn norm_cases() -> Vec<Case> {
    use Draw::*;
    let c4 = [Normal; 4];
    vec![
        case(
            "batch_norm",
            "%x: f32[N,4,3,3], %s: f32[4], %b: f32[4], %m: f32[4], %v: f32[4]",
            "  %y = batch_norm(%x, %s, %b, %m, %v) {eps=0.001} : f32[N,4,3,3]",
            "f32[N,4,3,3]",
            &[Normal, Normal, Normal, Normal, Positive],
        ),
        case(
            "layer_norm",
            "%x: f32[N,3,8], %s: f32[8], %b: f32[8]",
            "  %y = layer_norm(%x, %s, %b) : f32[N,3,8]",
            "f32[N,3,8]",
            &c4[..3],
        ),
        case(
            "layer_norm_axis1",
            "%x: f32[N,3,4], %s: f32[3,4], %b: f32[3,4]",
            "  %y = layer_norm(%x, %s, %b) {axis=1, eps=0.0001} : f32[N,3,4]",
            "f32[N,3,4]",
            &c4[..3],
        ),
        case(
            "softmax",
            "%x: f32[N,3,6]",
            "  %y = softmax(%x) : f32[N,3,6]",
            "f32[N,3,6]",
            &[Normal],
        ),
        case(
            "softmax_axis1",
            "%x: f32[N,3,6]",
            "  %y = softmax(%x) {axis=1} : f32[N,3,6]",
            "f32[N,3,6]",
            &[Normal],
        ),
        case(
            "log_softmax",
            "%x: f32[N,9]",
            "  %y = log_softmax(%x) : f32[N,9]",
            "f32[N,9]",
            &[Normal],
        ),
        case(
            "reduce_sum",
            "%x: f32[N,3,4]",
            "  %y = reduce_sum(%x) {axes=[1]} : f32[N,4]",
            "f32[N,4]",
            &[Normal],
        ),
        case(
            "reduce_mean_keep",
            "%x: f32[N,3,4]",
            "  %y = reduce_mean(%x) {axes=[-1], keepdims=true} : f32[N,3,1]",
            "f32[N,3,1]",
            &[Normal],
        ),
        case(
            "reduce_max",
            "%x: f32[N,3,4]",
            "  %y = reduce_max(%x) {axes=[0, 2]} : f32[3]",
            "f32[3]",
            &[Normal],
        ),
        case(
            "reduce_min",
            "%x: f32[N,3,4]",
            "  %y = reduce_min(%x) {axes=[2]} : f32[N,3]",
            "f32[N,3]",
            &[Normal],
        ),
        case(
            "reduce_prod",
            "%x: f32[N,3,4]",
            "  %y = reduce_prod(%x) {axes=[1]} : f32[N,4]",
            "f32[N,4]",
            &[Positive],
        ),
    ]
}

fn pool_cases() -> Vec<Case> {
    use Draw::*;
    vec![
        case("max_pool", "%x: f32[N,2,9,9]", "  %y = max_pool(%x) {kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1]} : f32[N,2,5,5]", "f32[N,2,5,5]", &[Normal]),
        case("avg_pool", "%x: f32[N,2,9,9]", "  %y = avg_pool(%x) {kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1]} : f32[N,2,5,5]", "f32[N,2,5,5]", &[Normal]),
        case("avg_pool_incl_pad", "%x: f32[N,2,9,9]", "  %y = avg_pool(%x) {kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], count_include_pad=true} : f32[N,2,5,5]", "f32[N,2,5,5]", &[Normal]),
        case("max_pool_ceil", "%x: f32[N,2,8,8]", "  %y = max_pool(%x) {kernel=[3, 3], stride=[2, 2], ceil_mode=true} : f32[N,2,4,4]", "f32[N,2,4,4]", &[Normal]),
        case("avg_pool_ceil_pad", "%x: f32[N,1,6,7]", "  %y = avg_pool(%x) {kernel=[2, 2], stride=[2, 2], padding=[1, 1, 1, 1], ceil_mode=true, count_include_pad=true} : f32[N,1,4,4]", "f32[N,1,4,4]", &[Normal]),
        case("global_avg_pool", "%x: f32[N,3,4,5]", "  %y = global_avg_pool(%x) : f32[N,3,1,1]", "f32[N,3,1,1]", &[Normal]),
        case("global_max_pool", "%x: f32[N,3,4,5]", "  %y = global_max_pool(%x) : f32[N,3,1,1]", "f32[N,3,1,1]", &[Normal]),
    ]
}

fn resize_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (mode, coords) in [
        (
            "nearest",
            &["half_pixel", "asymmetric", "align_corners"][..],
        ),
        (
            "bilinear",
            &[
                "half_pixel",
                "align_corners",
                "asymmetric",
                "pytorch_half_pixel",
            ][..],
        ),
    ] {
        for coord in coords {
            for (h, w) in [(10, 7), (3, 2)] {
                let name = format!("resize_{mode}_{coord}_{h}x{w}");
                v.push(case(&name, "%x: f32[N,2,5,4]", &format!("  %y = resize(%x) {{mode={mode}, coord={coord}, size=[{h}, {w}]}} : f32[N,2,{h},{w}]"), &format!("f32[N,2,{h},{w}]"), &[Draw::Normal]));
            }
        }
    }
    v
}

fn layout_cases() -> Vec<Case> {
    use Draw::*;
    vec![
        case("concat", "%a: f32[N,2], %b: f32[N,3], %c: f32[N,1]", "  %y = concat(%a, %b, %c) {axis=-1} : f32[N,6]", "f32[N,6]", &[Normal, Normal, Normal]),
        case("concat_batch", "%a: f32[N,2], %b: f32[N,2]", "  %y = concat(%a, %b) {axis=0} : f32[2*N,2]", "f32[2*N,2]", &[Normal, Normal]),
        case("split", "%x: f32[N,7]", "  %s = split(%x) {axis=1, sizes=[3, 4]} : (f32[N,3], f32[N,4])\n  %y = add(%s#1, %s#1) : f32[N,4]", "f32[N,4]", &[Normal]),
        case("slice", "%x: f32[N,10,6]", "  %y = slice(%x) {axes=[1, 2], starts=[1, -5], ends=[-2, 6], steps=[3, 2]} : f32[N,3,3]", "f32[N,3,3]", &[Normal]),
        case("slice_reverse", "%x: f32[N,6]", "  %y = slice(%x) {axes=[1], starts=[-1], ends=[-9223372036854775808], steps=[-2]} : f32[N,3]", "f32[N,3]", &[Normal]),
        case("reshape", "%x: f32[N,3,4]", "  %y = reshape(%x) {shape=[N, -1, 2]} : f32[N,6,2]", "f32[N,6,2]", &[Normal]),
        case("transpose", "%x: f32[N,2,3,4]", "  %y = transpose(%x) {perm=[2, 0, 3, 1]} : f32[3,N,4,2]", "f32[3,N,4,2]", &[Normal]),
        case("squeeze", "%x: f32[N,1,3,1]", "  %y = squeeze(%x) {axes=[1, -1]} : f32[N,3]", "f32[N,3]", &[Normal]),
        case("unsqueeze", "%x: f32[N,3]", "  %y = unsqueeze(%x) {axes=[0, 3]} : f32[1,N,3,1]", "f32[1,N,3,1]", &[Normal]),
        case("flatten", "%x: f32[N,3,2,2]", "  %y = flatten(%x) {axis=2} : f32[3*N,4]", "f32[3*N,4]", &[Normal]),
        case("gather", "%x: f32[N,5,3], %i: i64[2,2]", "  %y = gather(%x, %i) {axis=1} : f32[N,2,2,3]", "f32[N,2,2,3]", &[Normal, Index(-5, 5)]),
        case("gather_elements", "%x: f32[N,6], %i: i64[N,2]", "  %y = gather_elements(%x, %i) {axis=1} : f32[N,2]", "f32[N,2]", &[Normal, Index(-6, 6)]),
        case("embedding", "%t: f32[11,4], %i: i64[N,3]", "  %y = embedding(%t, %i) : f32[N,3,4]", "f32[N,3,4]", &[Normal, Index(0, 11)]),
        case("shape", "%x: f32[N,3,5]", "  %y = shape(%x) : i64[3]", "i64[3]", &[Normal]),
        case("dropout", "%x: f32[N,4]", "  %y = dropout(%x) {p=0.5} : f32[N,4]", "f32[N,4]", &[Normal]),
    ]
}

fn numpy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn interpreter_matches_numpy() {
    assert!(
        numpy_available(),
        "numpy is missing: run scripts/setup.sh (it pip-installs numpy)"
    );
    let dir = std::env::temp_dir().join(format!("oar-numpy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: Vec<Case> = [
        unary_cases(),
        binary_cases(),
        contraction_cases(),
        norm_cases(),
        pool_cases(),
        resize_cases(),
        layout_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut spec = Vec::new();
    let mut ours: BTreeMap<String, Vec<HostTensor>> = BTreeMap::new();
    for c in &cases {
        for batch in [2u64, 3] {
            let name = format!("{}_n{batch}", c.name);
            let bindings = BTreeMap::from([("N".to_string(), batch)]);
            let inputs: Vec<HostTensor> = c
                .graph
                .inputs()
                .iter()
                .zip(&c.draws)
                .map(|(&i, &d)| {
                    let shape = c.graph.node(i).outputs[0]
                        .shape
                        .eval(&bindings, 1)
                        .into_iter()
                        .map(|v| v as usize)
                        .collect();
                    draw(&mut rng, d, shape)
                })
                .collect();
            let mut files = Vec::new();
            for (k, t) in inputs.iter().enumerate() {
                let f = format!("{name}_in{k}.npy");
                write_npy(&dir.join(&f), t).unwrap();
                files.push(f);
            }
            let weights = init_weights(&c.graph, 1).unwrap();
            let got = run(&c.graph, &inputs, &weights).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The op under test is the node that produces %y (or the last non-source node).
            let node = c
                .graph
                .nodes()
                .iter()
                .rev()
                .find(|n| !n.op.is_source() && !matches!(n.op, Op::Input))
                .unwrap();
            let node = if c.name == "split" {
                &c.graph.nodes()[1]
            } else {
                node
            };
            let op_json = serde_json::to_value(&node.op).unwrap();
            let (op_inputs, got) = if c.name == "split" {
                // Compare the split itself: rerun with both outputs returned.
                let mut g = c.graph.clone();
                g.set_outputs(vec![
                    oar_ir::ValueRef::new(oar_ir::NodeId(1), 0),
                    oar_ir::ValueRef::new(oar_ir::NodeId(1), 1),
                ]);
                (files.clone(), run(&g, &inputs, &weights).unwrap())
            } else {
                (files.clone(), got)
            };
            spec.push(serde_json::json!({"name": name, "op": op_json, "inputs": op_inputs, "bindings": bindings}));
            ours.insert(name, got);
        }
    }
    std::fs::write(dir.join("spec.json"), serde_json::to_string(&spec).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/numpy_ref.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "numpy_ref.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    for (name, got) in &ours {
        for (k, g) in got.iter().enumerate() {
            let want = read_npy(&dir.join(format!("{name}_expected{k}.npy"))).unwrap();
            // numpy float64 results come back as f32; integer and bool results compare exactly.
            let want = if g.as_f32().is_some() && want.as_f32().is_none() {
                HostTensor::f32(
                    want.shape.clone(),
                    want.to_f64().iter().map(|&v| v as f32).collect(),
                )
            } else {
                want
            };
            match g.max_abs_diff(&want) {
                None => failures.push(format!(
                    "{name}#{k}: shape {:?} vs numpy {:?}",
                    g.shape, want.shape
                )),
                Some((diff, scale)) => {
                    let exact = g.as_f32().is_none();
                    let bad = if exact {
                        diff != 0.0 || g.dtype() != want.dtype()
                    } else {
                        diff > 1e-4 * scale.max(1e-3)
                    };
                    if bad || diff.is_nan() {
                        failures.push(format!(
                            "{name}#{k}: max|a-b| = {diff:e}, max|b| = {scale:e}"
                        ));
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} outputs differ from numpy:\n{}",
        failures.len(),
        ours.len(),
        failures.join("\n")
    );
    assert!(
        ours.len() >= 160,
        "expected at least 80 cases at two batch sizes, ran {}",
        ours.len()
    );
}
