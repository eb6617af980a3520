//! Every rewrite rule preserves meaning: on random shapes its conditions admit, the
//! left-hand side and the rewritten graph agree in the reference interpreter
//! (max |a−b| / max |b| ≤ 1e-4), and the rule really fires.

use oar_ir::parse;
use oar_passes::eqsat::rewrite_outputs;
use oar_passes::eqsat::rules::{all_rules, rule};
use oar_runtime::{init::init_weights, run, HostTensor};
use proptest::prelude::*;

fn inputs_for(g: &oar_ir::Graph, seed: u64) -> Vec<HostTensor> {
    let mut s = seed | 1;
    g.inputs()
        .iter()
        .map(|&i| {
            let t = &g.node(i).outputs[0];
            let shape: Vec<usize> = t
                .shape
                .as_static()
                .expect("rule tests use static shapes")
                .iter()
                .map(|&d| d as usize)
                .collect();
            let n = shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0 + 0.01
                })
                .collect();
            HostTensor::f32(shape, data)
        })
        .collect()
}

/// Parses `text`, applies `name` at the outputs, and compares both graphs.
fn check(name: &str, text: &str, seed: u64) -> Result<(), TestCaseError> {
    let g = parse(text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    let r = rule(name).expect("rule exists");
    let rewritten = rewrite_outputs(&g, &r)
        .ok_or_else(|| TestCaseError::fail(format!("{name} did not fire on\n{text}")))?;
    let w = init_weights(&g, seed).unwrap();
    let ins = inputs_for(&g, seed);
    let a = run(&g, &ins, &w).unwrap();
    let b = run(&rewritten, &ins, &w)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{}", oar_ir::print(&rewritten))))?;
    for (x, y) in a.iter().zip(&b) {
        let (d, s) = y
            .max_abs_diff(x)
            .ok_or_else(|| TestCaseError::fail("shapes differ"))?;
        prop_assert!(
            d <= 1e-4 * s.max(1e-3),
            "{name}: max|a-b| = {d}, max|a| = {s}\n{}",
            oar_ir::print(&rewritten)
        );
    }
    Ok(())
}

fn sig(inputs: &str, ret: &str, body: &str, outs: &str) -> String {
    format!("graph @t({inputs}) -> ({ret}) {{\n{body}\n  return {outs}\n}}\n")
}

const BN_VAR: &str = "{init=uniform(0.5, 1.5)}";

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn fold_bn_into_conv(n in 1u64..3, c in 1u64..5, o in 1u64..6, hw in 3u64..7, bias in any::<bool>(), seed in any::<u64>()) {
        let b = if bias { format!("  %b = param \"b\" : f32[{o}]\n") } else { String::new() };
        let conv_in = if bias { "%x, %w, %b" } else { "%x, %w" };
        let body = format!("  %w = param \"w\" : f32[{o},{c},3,3]\n{b}  %y = conv2d({conv_in}) {{padding=[1, 1, 1, 1]}} : f32[{n},{o},{hw},{hw}]\n  %g = param \"g\" : f32[{o}]\n  %be = param \"be\" : f32[{o}]\n  %m = param \"m\" : f32[{o}]\n  %v = param \"v\" {BN_VAR} : f32[{o}]\n  %z = batch_norm(%y, %g, %be, %m, %v) {{eps=0.001}} : f32[{n},{o},{hw},{hw}]");
        check("fold-bn-into-conv", &sig(&format!("%x: f32[{n},{c},{hw},{hw}]"), &format!("f32[{n},{o},{hw},{hw}]"), &body, "%z"), seed)?;
    }

    #[test]
    fn fold_bn_into_matmul(n in 1u64..4, k in 1u64..6, c in 1u64..6, seed in any::<u64>()) {
        let body = format!("  %w = param \"w\" : f32[{k},{c}]\n  %y = matmul(%x, %w) : f32[{n},{c}]\n  %g = param \"g\" : f32[{c}]\n  %be = param \"be\" : f32[{c}]\n  %m = param \"m\" : f32[{c}]\n  %v = param \"v\" {BN_VAR} : f32[{c}]\n  %z = batch_norm(%y, %g, %be, %m, %v) : f32[{n},{c}]");
        check("fold-bn-into-matmul", &sig(&format!("%x: f32[{n},{k}]"), &format!("f32[{n},{c}]"), &body, "%z"), seed)?;
    }

    #[test]
    fn constant_chains(n in 1u64..4, d in 1u64..6, seed in any::<u64>(), op in prop::sample::select(vec!["mul", "add"])) {
        let name = if op == "mul" { "mul-mul-const" } else { "add-add-const" };
        let body = format!("  %c1 = param \"c1\" : f32[{d}]\n  %c2 = param \"c2\" : f32[1,{d}]\n  %y = {op}(%x, %c1) : f32[{n},{d}]\n  %z = {op}(%c2, %y) : f32[{n},{d}]");
        check(name, &sig(&format!("%x: f32[{n},{d}]"), &format!("f32[{n},{d}]"), &body, "%z"), seed)?;
    }

    #[test]
    fn recovered_activations(n in 1u64..4, d in 1u64..8, seed in any::<u64>(), which in 0usize..8) {
        let t = format!("f32[{n},{d}]");
        let consts = "  %three = constant {value=[3.0]} : f32[]\n  %six = constant {value=[6.0]} : f32[]\n  %half = constant {value=[0.5]} : f32[]\n  %one = constant {value=[1.0]} : f32[]\n";
        let (name, body) = match which {
            0 => ("hardswish-from-clip", format!("  %a = add(%x, %three) : {t}\n  %c = clip(%a) {{min=0.0, max=6.0}} : {t}\n  %m = mul(%x, %c) : {t}\n  %z = div(%m, %six) : {t}")),
            1 => ("hardswish-from-clip", format!("  %a = add(%three, %x) : {t}\n  %c = relu6(%a) : {t}\n  %m = mul(%c, %x) : {t}\n  %s = constant {{value=[0.16666666666666666]}} : f32[]\n  %z = mul(%m, %s) : {t}")),
            2 => ("hardswish-from-hardsigmoid", format!("  %h = hardsigmoid(%x) {{alpha=0.16666666666666666}} : {t}\n  %z = mul(%h, %x) : {t}")),
            3 => ("hardsigmoid-from-clip", format!("  %a = add(%x, %three) : {t}\n  %c = clip(%a) {{min=0.0, max=6.0}} : {t}\n  %z = div(%c, %six) : {t}")),
            4 => ("hardsigmoid-from-affine", format!("  %al = constant {{value=[0.2]}} : f32[]\n  %m = mul(%x, %al) : {t}\n  %a = add(%m, %half) : {t}\n  %z = clip(%a) {{min=0.0, max=1.0}} : {t}")),
            5 => ("gelu-from-erf", format!("  %r2 = constant {{value=[1.4142135623730951]}} : f32[]\n  %q = div(%x, %r2) : {t}\n  %e = erf(%q) : {t}\n  %a = add(%e, %one) : {t}\n  %m = mul(%x, %a) : {t}\n  %z = mul(%m, %half) : {t}")),
            6 => ("gelu-from-tanh", format!("  %three_i = constant {{value=[3.0]}} : f32[]\n  %p = pow(%x, %three_i) : {t}\n  %k = constant {{value=[0.044715]}} : f32[]\n  %pk = mul(%p, %k) : {t}\n  %s = add(%x, %pk) : {t}\n  %c = constant {{value=[0.7978845608028654]}} : f32[]\n  %u = mul(%s, %c) : {t}\n  %th = tanh(%u) : {t}\n  %a = add(%th, %one) : {t}\n  %h = mul(%x, %half) : {t}\n  %z = mul(%h, %a) : {t}")),
            _ => ("silu-from-sigmoid", format!("  %s = sigmoid(%x) : {t}\n  %z = mul(%x, %s) : {t}")),
        };
        check(name, &sig(&format!("%x: {t}"), &t, &format!("{consts}{body}"), "%z"), seed)?;
    }

    #[test]
    fn softmax_from_exp(n in 1u64..4, d in 2u64..8, seed in any::<u64>(), stable in any::<bool>()) {
        let t = format!("f32[{n},{d}]");
        let pre = if stable {
            format!("  %mx = reduce_max(%x) {{axes=[-1], keepdims=true}} : f32[{n},1]\n  %sx = sub(%x, %mx) : {t}\n  %e = exp(%sx) : {t}\n")
        } else {
            format!("  %e = exp(%x) : {t}\n")
        };
        let body = format!("{pre}  %s = reduce_sum(%e) {{axes=[1], keepdims=true}} : f32[{n},1]\n  %z = div(%e, %s) : {t}");
        check("softmax-from-exp", &sig(&format!("%x: {t}"), &t, &body, "%z"), seed)?;
    }

    #[test]
    fn layer_norm_from_moments(n in 1u64..4, d in 2u64..9, seed in any::<u64>(), squared_by_mul in any::<bool>()) {
        let t = format!("f32[{n},{d}]");
        let sq = if squared_by_mul { format!("  %q = mul(%c, %c) : {t}\n") } else { format!("  %two = constant {{value=[2.0]}} : f32[]\n  %q = pow(%c, %two) : {t}\n") };
        let body = format!("  %mu = reduce_mean(%x) {{axes=[-1], keepdims=true}} : f32[{n},1]\n  %c = sub(%x, %mu) : {t}\n{sq}  %v = reduce_mean(%q) {{axes=[-1], keepdims=true}} : f32[{n},1]\n  %eps = constant {{value=[1e-5]}} : f32[]\n  %ve = add(%v, %eps) : f32[{n},1]\n  %sd = sqrt(%ve) : f32[{n},1]\n  %y = div(%c, %sd) : {t}\n  %g = param \"g\" : f32[{d}]\n  %b = param \"b\" : f32[{d}]\n  %yg = mul(%y, %g) : {t}\n  %z = add(%yg, %b) : {t}");
        check("layer-norm-from-moments", &sig(&format!("%x: {t}"), &t, &body, "%z"), seed)?;
    }

    #[test]
    fn shape_algebra(a in 1u64..4, b in 1u64..4, c in 1u64..4, seed in any::<u64>(), which in 0usize..5) {
        let x = format!("f32[{a},{b},{c}]");
        let (name, body, ret) = match which {
            0 => ("transpose-transpose", format!("  %t = transpose(%x) {{perm=[2, 0, 1]}} : f32[{c},{a},{b}]\n  %z = transpose(%t) {{perm=[1, 0, 2]}} : f32[{a},{c},{b}]"), format!("f32[{a},{c},{b}]")),
            1 => ("transpose-transpose", format!("  %t = transpose(%x) {{perm=[2, 0, 1]}} : f32[{c},{a},{b}]\n  %z = transpose(%t) {{perm=[1, 2, 0]}} : {x}"), x.clone()),
            2 => ("reshape-reshape", format!("  %t = reshape(%x) {{shape=[-1]}} : f32[{}]\n  %z = reshape(%t) {{shape=[{}, {c}]}} : f32[{},{c}]", a * b * c, a * b, a * b), format!("f32[{},{c}]", a * b)),
            3 => ("reshape-identity", format!("  %z = reshape(%x) {{shape=[{a}, {b}, {c}]}} : {x}"), x.clone()),
            _ => ("squeeze-unsqueeze", format!("  %t = unsqueeze(%x) {{axes=[1]}} : f32[{a},1,{b},{c}]\n  %z = squeeze(%t) {{axes=[1]}} : {x}"), x.clone()),
        };
        check(name, &sig(&format!("%x: {x}"), &ret, &body, "%z"), seed)?;
    }

    #[test]
    fn merges(n in 1u64..4, k in 1u64..5, w1 in 1u64..5, w2 in 1u64..5, w3 in 1u64..5, seed in any::<u64>()) {
        let body = format!("  %a = param \"a\" : f32[{k},{w1}]\n  %b = param \"b\" : f32[{k},{w2}]\n  %c = param \"c\" : f32[{k},{w3}]\n  %q = matmul(%x, %a) : f32[{n},{w1}]\n  %kk = matmul(%x, %b) : f32[{n},{w2}]\n  %v = matmul(%x, %c) : f32[{n},{w3}]");
        check("merge-matmuls-sharing-lhs", &sig(&format!("%x: f32[{n},{k}]"), &format!("f32[{n},{w1}], f32[{n},{w2}], f32[{n},{w3}]"), &body, "%q, %kk, %v"), seed)?;
        let body = format!("  %a = param \"a\" : f32[{w1},{k},1,1]\n  %ab = param \"ab\" : f32[{w1}]\n  %b = param \"b\" : f32[{w2},{k},1,1]\n  %bb = param \"bb\" : f32[{w2}]\n  %p = conv2d(%x, %a, %ab) : f32[{n},{w1},3,3]\n  %q = conv2d(%x, %b, %bb) : f32[{n},{w2},3,3]");
        check("merge-convs-sharing-input", &sig(&format!("%x: f32[{n},{k},3,3]"), &format!("f32[{n},{w1},3,3], f32[{n},{w2},3,3]"), &body, "%p, %q"), seed)?;
    }

    #[test]
    fn epilogue_fusion(n in 1u64..3, c in 1u64..4, o in 1u64..5, act in prop::sample::select(vec!["relu", "hardswish", "gelu", "sigmoid", "leaky_relu"]), seed in any::<u64>()) {
        let ct = format!("f32[{n},{o},4,4]");
        let conv = format!("  %w = param \"w\" : f32[{o},{c},3,3]\n  %b = param \"b\" : f32[{o}]\n  %y = conv2d(%x, %w, %b) {{padding=[1, 1, 1, 1]}} : {ct}\n");
        check("fuse-conv-activation", &sig(&format!("%x: f32[{n},{c},4,4]"), &ct, &format!("{conv}  %z = {act}(%y) : {ct}"), "%z"), seed)?;
        check("fuse-conv-residual", &sig(&format!("%x: f32[{n},{c},4,4], %r: {ct}"), &ct, &format!("{conv}  %z = add(%r, %y) : {ct}"), "%z"), seed)?;
        let mt = format!("f32[{n},3,{o}]");
        let mm = format!("  %w = param \"w\" : f32[{c},{o}]\n  %b = param \"b\" : f32[{o}]\n  %y = matmul(%x, %w) : {mt}\n");
        let xs = format!("%x: f32[{n},3,{c}]");
        check("fuse-matmul-bias", &sig(&xs, &mt, &format!("{mm}  %z = add(%y, %b) : {mt}"), "%z"), seed)?;
        check("fuse-matmul-activation", &sig(&xs, &mt, &format!("{mm}  %z = {act}(%y) : {mt}"), "%z"), seed)?;
        check("fuse-matmul-residual", &sig(&format!("{xs}, %r: {mt}"), &mt, &format!("{mm}  %z = add(%y, %r) : {mt}"), "%z"), seed)?;
    }
}

#[test]
fn every_rule_has_a_test() {
    let tested = [
        "fold-bn-into-conv",
        "fold-bn-into-matmul",
        "mul-mul-const",
        "add-add-const",
        "hardswish-from-clip",
        "hardswish-from-hardsigmoid",
        "hardsigmoid-from-clip",
        "hardsigmoid-from-affine",
        "gelu-from-erf",
        "gelu-from-tanh",
        "silu-from-sigmoid",
        "softmax-from-exp",
        "layer-norm-from-moments",
        "transpose-transpose",
        "reshape-reshape",
        "reshape-identity",
        "squeeze-unsqueeze",
        "merge-matmuls-sharing-lhs",
        "merge-convs-sharing-input",
        "fuse-conv-activation",
        "fuse-conv-residual",
        "fuse-matmul-bias",
        "fuse-matmul-activation",
        "fuse-matmul-residual",
    ];
    for r in all_rules() {
        assert!(
            tested.contains(&r.name),
            "rule {} has no property test",
            r.name
        );
    }
}
