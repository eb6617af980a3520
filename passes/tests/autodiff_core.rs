//! Gradient rules of the core ops against central finite differences
//! (`oar_passes::autodiff::check`).
//!
//! Tolerance: `GradCheck::default()`: the graph is converted to f64 and each directional
//! derivative must agree to 1e-8 absolute plus 1e-6 relative, with step h = 1e-5. In f64
//! the difference quotient's error is about 1e-10 relative (truncation, h²/6·|∂³L|); a wrong
//! rule (missing term, sign, transpose, un-broadcast, a constant off in its 4th digit)
//! moves the result by far more.
//!
//! Inputs are random and non-zero, drawn per test from a domain that keeps them away from
//! the op's kinks by more than the finite-difference step (relu at 0, clip at its bounds,
//! max/min ties, log of non-positives), so the derivative exists on the whole stencil.

use oar_passes::autodiff::check::{check_gradients, uniform, GradCheck};
use oar_runtime::{HostTensor, Weights};
use proptest::prelude::*;

/// Where an input's values come from.
#[derive(Clone, Copy, Debug)]
enum Dom {
    /// Uniform in [−s, s).
    Any(f32),
    /// Uniform in [lo, hi).
    Range(f32, f32),
    /// Uniform in [−s, s) pushed at least 0.1 away from each kink.
    Away(f32, &'static [f32]),
    /// Near multiples of 0.2 plus `offset`, within ±0.03: two lattices with offsets 0 and
    /// 0.1 stay ≥ 0.04 apart, so max/min never tie under the finite-difference step.
    Lattice(f32),
    /// Pairwise distinct (≥ 0.06 apart): reductions to an extremum have one winner.
    Distinct,
    /// Uniform in [0.5, 1.5) with every third element exactly zero (products with zeros).
    SomeZeros,
}

fn values(dom: Dom, n: usize, seed: u64) -> Vec<f32> {
    let u = uniform(n, seed);
    match dom {
        Dom::Any(s) => u.iter().map(|v| v * s).collect(),
        Dom::Range(lo, hi) => u.iter().map(|v| lo + (v + 1.0) / 2.0 * (hi - lo)).collect(),
        Dom::Away(s, kinks) => u
            .iter()
            .map(|v| {
                let mut x = v * s;
                for &k in kinks {
                    if (x - k).abs() < 0.1 {
                        x = if x >= k { k + 0.1 } else { k - 0.1 };
                    }
                }
                x
            })
            .collect(),
        Dom::Lattice(off) => u
            .iter()
            .map(|v| (v * 5.0).round() * 0.2 + off + 0.03 * (v * 97.0).sin())
            .collect(),
        Dom::Distinct => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| u[a].total_cmp(&u[b]));
            let mut out = vec![0.0; n];
            for (rank, &i) in order.iter().enumerate() {
                out[i] = (rank as f32 - n as f32 / 2.0) * 0.1 + 0.02 * u[i];
            }
            out
        }
        Dom::SomeZeros => u
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 3 == 0 { 0.0 } else { 1.0 + v / 2.0 })
            .collect(),
    }
}

/// Checks every gradient of `text`'s first output. Inputs and parameters take values from
/// `doms` (by name; `Dom::Any(1.0)` otherwise).
fn check(text: &str, doms: &[(&str, Dom)], seed: u64) -> Result<usize, String> {
    let g = oar_ir::parse(text).map_err(|e| format!("{e}\n{text}"))?;
    let dom_of = |name: &str| {
        doms.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .unwrap_or(Dom::Any(1.0))
    };
    let tensor = |t: &oar_ir::TensorType, name: &str, salt: u64| {
        let dims: Vec<usize> = t
            .shape
            .as_static()
            .unwrap_or_default()
            .iter()
            .map(|&d| d as usize)
            .collect();
        let n = dims.iter().product();
        HostTensor::f32(dims, values(dom_of(name), n, seed * 31 + salt))
    };
    let mut inputs = Vec::new();
    for (k, &id) in g.inputs().iter().enumerate() {
        let n = g.node(id);
        inputs.push(tensor(&n.outputs[0], &n.name, k as u64));
    }
    let mut weights = Weights::new();
    for (id, n) in g.iter() {
        if let oar_ir::Op::Param(p) = &n.op {
            weights.insert(
                p.name.clone(),
                tensor(&n.outputs[0], &p.name, 100 + id.index() as u64),
            );
        }
    }
    let compared = check_gradients(&g, &inputs, &weights, &GradCheck::default())
        .map_err(|e| format!("{e}\n{text}"))?;
    if compared.is_empty() {
        return Err(format!("no gradient was compared\n{text}"));
    }
    Ok(compared.len())
}

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(3)
}

/// One-op graph `%y = op(%x)` over `f32[dims]`.
fn unary_graph(op: &str, dims: &str) -> String {
    format!("graph @g(%x: f32[{dims}]) -> (f32[{dims}]) {{\n  %y = {op} : f32[{dims}]\n  return %y\n}}\n")
}

const UNARY: &[(&str, Dom)] = &[
    ("neg(%x)", Dom::Any(1.0)),
    ("exp(%x)", Dom::Any(1.0)),
    ("log(%x)", Dom::Range(0.5, 2.0)),
    ("sqrt(%x)", Dom::Range(0.5, 2.0)),
    ("rsqrt(%x)", Dom::Range(0.5, 2.0)),
    ("tanh(%x)", Dom::Any(2.0)),
    ("erf(%x)", Dom::Any(1.5)),
    ("abs(%x)", Dom::Away(1.0, &[0.0])),
    ("relu(%x)", Dom::Away(1.0, &[0.0])),
    ("relu6(%x)", Dom::Away(8.0, &[0.0, 6.0])),
    ("leaky_relu(%x) {alpha=0.2}", Dom::Away(1.0, &[0.0])),
    ("sigmoid(%x)", Dom::Any(3.0)),
    (
        "hardsigmoid(%x) {alpha=0.2, beta=0.4}",
        Dom::Away(4.0, &[-2.0, 3.0]),
    ),
    ("hardswish(%x)", Dom::Away(5.0, &[-3.0, 3.0])),
    ("gelu(%x)", Dom::Any(3.0)),
    ("gelu(%x) {approximate=tanh}", Dom::Any(3.0)),
    ("silu(%x)", Dom::Any(3.0)),
    ("mish(%x)", Dom::Any(3.0)),
    ("clip(%x) {min=-0.5, max=0.5}", Dom::Away(1.0, &[-0.5, 0.5])),
    ("clip(%x) {min=0.25}", Dom::Away(1.0, &[0.25])),
];

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn unary_ops(seed in 0u64..10_000, r in 1u64..4, c in 1u64..5) {
        for (op, dom) in UNARY {
            let text = unary_graph(op, &format!("{r},{c}"));
            let res = check(&text, &[("x", *dom)], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
    }

    #[test]
    fn binary_ops_with_broadcasting(seed in 0u64..10_000, r in 1u64..4, c in 2u64..5, form in 0usize..4) {
        // b's shape broadcasts against a's [r, c] in several ways.
        let bshape = [format!("{c}"), format!("{r},1"), format!("1,{c}"), format!("2,{r},{c}")][form].clone();
        let out = if form == 3 { format!("2,{r},{c}") } else { format!("{r},{c}") };
        let cases: &[(&str, Dom, Dom)] = &[
            ("add", Dom::Any(1.0), Dom::Any(1.0)),
            ("sub", Dom::Any(1.0), Dom::Any(1.0)),
            ("mul", Dom::Any(1.0), Dom::Any(1.0)),
            ("div", Dom::Any(1.0), Dom::Range(0.5, 1.5)),
            ("pow", Dom::Range(0.5, 1.5), Dom::Any(2.0)),
            ("max", Dom::Lattice(0.0), Dom::Lattice(0.1)),
            ("min", Dom::Lattice(0.1), Dom::Lattice(0.0)),
        ];
        for (op, da, db) in cases {
            let text = format!(
                "graph @g(%a: f32[{r},{c}], %b: f32[{bshape}]) -> (f32[{out}]) {{\n  %y = {op}(%a, %b) : f32[{out}]\n  return %y\n}}\n"
            );
            let res = check(&text, &[("a", *da), ("b", *db)], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
    }

    #[test]
    fn where_cast_and_accumulation(seed in 0u64..10_000, r in 1u64..4, c in 1u64..5) {
        // The condition is data (no gradient); b broadcasts. x feeds three consumers.
        let text = format!(
            "graph @g(%x: f32[{r},{c}], %a: f32[{r},{c}], %b: f32[{c}]) -> (f32[{r},{c}]) {{
  %w = param \"w\" : f32[{c}]
  %m = greater(%x, %w) : bool[{r},{c}]
  %s = where(%m, %a, %b) : f32[{r},{c}]
  %t = tanh(%x) : f32[{r},{c}]
  %e = exp(%x) : f32[{r},{c}]
  %u = mul(%t, %x) : f32[{r},{c}]
  %v = add(%u, %e) : f32[{r},{c}]
  %k = cast(%v) {{to=f32}} : f32[{r},{c}]
  %y = add(%k, %s) : f32[{r},{c}]
  return %y
}}
"
        );
        let res = check(&text, &[("x", Dom::Lattice(0.0)), ("w", Dom::Lattice(0.1))], seed);
        prop_assert!(res.is_ok(), "{:?}", res);
    }

    #[test]
    fn dropout_replays_the_forward_mask(seed in 0u64..10_000, r in 2u64..5, c in 2u64..6, mode in 0usize..3) {
        let (attrs, graph_mode) = [
            ("{p=0.3}", " mode=training"),
            ("{p=0.3, mode=downscale_in_infer}", " mode=training"),
            ("{p=0.3, mode=downscale_in_infer}", ""),
        ][mode];
        // Two dropouts in a row: each backward must draw its own forward's mask.
        let text = format!(
            "graph @g(%x: f32[{r},{c}]) -> (f32[{r},{c}]){graph_mode} {{
  %w = param \"w\" : f32[{c}]
  %a = mul(%x, %w) : f32[{r},{c}]
  %d = dropout(%a) {attrs} : f32[{r},{c}]
  %e = dropout(%d) {{p=0.5}} : f32[{r},{c}]
  %y = tanh(%e) : f32[{r},{c}]
  return %y
}}
"
        );
        let res = check(&text, &[], seed);
        prop_assert!(res.is_ok(), "{:?}", res);
    }

    #[test]
    fn matmul_transposes_and_batches(seed in 0u64..10_000, m in 1u64..4, k in 1u64..4, n in 1u64..4, ta in any::<bool>(), tb in any::<bool>(), batch in 0usize..3) {
        let a2 = if ta { format!("{k},{m}") } else { format!("{m},{k}") };
        let b2 = if tb { format!("{n},{k}") } else { format!("{k},{n}") };
        // Batch dims: none, broadcast a over b's batch, or [2,1] × [3].
        let (ab, bb, yb) = [("", "", ""), ("", "2,", "2,"), ("2,1,", "3,", "2,3,")][batch];
        let mut attrs = Vec::new();
        if ta { attrs.push("transpose_a=true"); }
        if tb { attrs.push("transpose_b=true"); }
        let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{}}}", attrs.join(", ")) };
        let text = format!(
            "graph @g(%a: f32[{ab}{a2}]) -> (f32[{yb}{m},{n}]) {{
  %b = param \"b\" : f32[{bb}{b2}]
  %y = matmul(%a, %b){attrs} : f32[{yb}{m},{n}]
  return %y
}}
"
        );
        let res = check(&text, &[], seed);
        prop_assert!(res.is_ok(), "{:?}", res);
    }

    #[test]
    fn fused_matmul_epilogues(seed in 0u64..10_000, m in 1u64..4, k in 1u64..4, n in 1u64..4, act in 0usize..4, residual in any::<bool>()) {
        let act = ["", ", act=tanh", ", act=gelu_tanh", ", act=sigmoid"][act];
        let (res_in, res_attr) = if residual { (", %r", ", residual=true") } else { ("", "") };
        let text = format!(
            "graph @g(%a: f32[{m},{k}], %r: f32[{m},{n}]) -> (f32[{m},{n}]) {{
  %b = param \"b\" : f32[{k},{n}]
  %c = param \"c\" : f32[{n}]
  %y = fused_matmul(%a, %b, %c{res_in}) {{bias=true{res_attr}{act}}} : f32[{m},{n}]
  %z = add(%y, %r) : f32[{m},{n}]
  return %z
}}
"
        );
        let res = check(&text, &[], seed);
        prop_assert!(res.is_ok(), "{:?}", res);
    }

    #[test]
    fn batch_norm_both_forms(seed in 0u64..10_000, nb in 2u64..4, c in 1u64..4, hw in 1u64..3, form in 0usize..3) {
        let x = format!("f32[{nb},{c},{hw},2]");
        let (mode, attrs, outs, tail) = [
            // Inference form: running statistics, one output.
            ("", "", x.clone(), "  return %bn\n".to_string()),
            // Training form; outputs 1 and 2 (new running statistics) are state updates.
            (" mode=training", " {momentum=0.9}", format!("({x}, f32[{c}], f32[{c}])"),
             "  return %bn\n  update \"m\" = %bn#1\n  update \"v\" = %bn#2\n".to_string()),
            // The new running statistics feed the output too: x's gradient has their terms.
            (" mode=training", " {momentum=0.9}", format!("({x}, f32[{c}], f32[{c}])"), format!(
                "  %st = mul(%bn#1, %bn#2) : f32[{c}]\n  %r = reshape(%st) {{shape=[1, {c}, 1, 1]}} : f32[1,{c},1,1]\n  %y = mul(%bn, %r) : {x}\n  return %y\n"
            )),
        ][form].clone();
        let params: String = ["s", "b", "m", "v"]
            .iter()
            .map(|p| format!("  %{p} = param \"{p}\" : f32[{c}]\n"))
            .collect();
        let text = format!(
            "graph @g(%x: {x}) -> ({x}){mode} {{\n{params}  %bn = batch_norm(%x, %s, %b, %m, %v){attrs} : {outs}\n{tail}}}\n"
        );
        // Distinct inputs: a channel of four nearly equal values has a variance near 0,
        // where the normalisation's third derivative (~1/var^1.5) swamps the quotient.
        let res = check(&text, &[("x", Dom::Distinct), ("v", Dom::Range(0.5, 1.5))], seed);
        prop_assert!(res.is_ok(), "{:?}", res);
    }

    #[test]
    fn layer_norm_softmax_and_mask(seed in 0u64..10_000, b in 1u64..3, m in 2u64..4, n in 2u64..5, axis in 0i64..3) {
        let d = format!("{b},{m},{n}");
        let ln_shape = [d.clone(), format!("{m},{n}"), format!("{n}")][axis as usize].clone();
        let cases = [
            format!(
                "graph @g(%x: f32[{d}]) -> (f32[{d}]) {{
  %s = param \"s\" : f32[{ln_shape}]
  %c = param \"c\" : f32[{ln_shape}]
  %y = layer_norm(%x, %s, %c) {{axis={axis}, eps=1e-5}} : f32[{d}]
  return %y
}}
"
            ),
            unary_graph(&format!("softmax(%x) {{axis={}}}", axis - 3), &d),
            unary_graph(&format!("log_softmax(%x) {{axis={axis}}}"), &d),
            format!(
                "graph @g(%x: f32[{d}]) -> (f32[{d}]) {{
  %c = causal_mask(%x) {{fill=-10.0}} : f32[{d}]
  %y = softmax(%c) {{axis=-1}} : f32[{d}]
  return %y
}}
"
            ),
        ];
        // Distinct inputs (≥ 0.06 apart): a layer_norm row of two nearly equal values is
        // ill-conditioned (see batch_norm_both_forms).
        for text in &cases {
            let res = check(text, &[("x", Dom::Distinct)], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
    }

    #[test]
    fn reductions(seed in 0u64..10_000, a in 2u64..4, b in 2u64..4, axes in 0usize..4, keep in any::<bool>()) {
        let (ax, out_keep, out_drop) = [
            ("[1]", format!("{a},1"), format!("{a}")),
            ("[0]", format!("1,{b}"), format!("{b}")),
            ("[-1, 0]", "1,1".to_string(), String::new()),
            ("[]", "1,1".to_string(), String::new()),
        ][axes].clone();
        let out = if keep { out_keep } else { out_drop };
        let attrs = if axes == 3 && !keep {
            String::new()
        } else if keep {
            format!(" {{axes={ax}, keepdims=true}}")
        } else {
            format!(" {{axes={ax}}}")
        };
        for (op, dom) in [
            ("reduce_sum", Dom::Any(1.0)),
            ("reduce_mean", Dom::Any(1.0)),
            ("reduce_max", Dom::Distinct),
            ("reduce_min", Dom::Distinct),
            ("reduce_prod", Dom::Range(0.5, 1.5)),
            ("reduce_prod", Dom::SomeZeros),
        ] {
            let text = format!(
                "graph @g(%x: f32[{a},{b}]) -> (f32[{out}]) {{\n  %y = {op}(%x){attrs} : f32[{out}]\n  return %y\n}}\n"
            );
            let res = check(&text, &[("x", dom)], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
    }

    #[test]
    fn shape_ops(seed in 0u64..10_000, a in 1u64..4, b in 2u64..4) {
        let cases = [
            format!("graph @g(%x: f32[{a},{b}], %z: f32[{a},3]) -> (f32[{a},{}]) {{\n  %y = concat(%x, %z, %x) {{axis=1}} : f32[{a},{}]\n  return %y\n}}\n", 2 * b + 3, 2 * b + 3),
            format!("graph @g(%x: f32[{a},{b}]) -> (f32[{b},{a}]) {{\n  %y = transpose(%x) {{perm=[1, 0]}} : f32[{b},{a}]\n  return %y\n}}\n"),
            format!("graph @g(%x: f32[{a},{b}]) -> (f32[{}]) {{\n  %y = reshape(%x) {{shape=[-1]}} : f32[{}]\n  return %y\n}}\n", a * b, a * b),
            format!("graph @g(%x: f32[{a},1,{b}]) -> (f32[{a},{b}]) {{\n  %y = squeeze(%x) {{axes=[1]}} : f32[{a},{b}]\n  return %y\n}}\n"),
            format!("graph @g(%x: f32[{a},{b}]) -> (f32[{a},1,{b}]) {{\n  %y = unsqueeze(%x) {{axes=[1]}} : f32[{a},1,{b}]\n  return %y\n}}\n"),
            format!("graph @g(%x: f32[{a},{b},2]) -> (f32[{a},{}]) {{\n  %y = flatten(%x) : f32[{a},{}]\n  return %y\n}}\n", 2 * b, 2 * b),
            format!("graph @g(%x: f32[{a},1]) -> (f32[2,{a},{b}]) {{\n  %y = broadcast_to(%x) {{shape=[2, {a}, {b}]}} : f32[2,{a},{b}]\n  return %y\n}}\n"),
            // Split with one output unused, and with both used (accumulation of the parts).
            format!("graph @g(%x: f32[{a},{}]) -> (f32[{a},{b}]) {{\n  %s = split(%x) {{axis=1, sizes=[{b}, 2]}} : (f32[{a},{b}], f32[{a},2])\n  %y = tanh(%s) : f32[{a},{b}]\n  return %y\n}}\n", b + 2),
            format!("graph @g(%x: f32[{a},4]) -> (f32[{a},2]) {{\n  %s = split(%x) {{axis=1, sizes=[2, 2]}} : (f32[{a},2], f32[{a},2])\n  %y = mul(%s, %s#1) : f32[{a},2]\n  return %y\n}}\n"),
        ];
        for text in &cases {
            let res = check(text, &[], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
    }

    #[test]
    fn slices_with_steps(seed in 0u64..10_000, n in 3i64..9, start in 0i64..3, step in 1i64..4, neg in any::<bool>(), r in 1u64..3) {
        // The interpreter's clamping decides the length; compute it the same way.
        let (s, e, st) = if neg { (n - 1 - start, -n - 1, -step) } else { (start, n, step) };
        let len = if st > 0 {
            let b = s.clamp(0, n);
            if n > b { (n - b + st - 1) / st } else { 0 }
        } else {
            let b = s.clamp(-1, n - 1);
            (b + 1 + (-st) - 1) / -st
        };
        let text = format!(
            "graph @g(%x: f32[{r},{n}]) -> (f32[{r},{len}]) {{
  %y = slice(%x) {{axes=[1], starts=[{s}], ends=[{e}], steps=[{st}]}} : f32[{r},{len}]
  return %y
}}
"
        );
        if len > 0 {
            let res = check(&text, &[], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
        // Two axes at once, one of them reversed.
        let text2 = format!(
            "graph @g(%x: f32[4,{n}]) -> (f32[2,{len}]) {{
  %y = slice(%x) {{axes=[0, 1], starts=[3, {s}], ends=[-5, {e}], steps=[-2, {st}]}} : f32[2,{len}]
  return %y
}}
"
        );
        if len > 0 {
            let res = check(&text2, &[], seed);
            prop_assert!(res.is_ok(), "{:?}", res);
        }
    }

    #[test]
    fn fused_groups_differentiate_their_body(seed in 0u64..10_000, r in 1u64..4, c in 1u64..4) {
        // The same value passed twice, a body with two outputs (one unused by the caller).
        let text = format!(
            "graph @f0(%p: f32[{r},{c}], %q: f32[{r},{c}], %w: f32[{c}]) -> (f32[{r},{c}], f32[{r},{c}]) {{
  %a = mul(%p, %q) : f32[{r},{c}]
  %b = add(%a, %w) : f32[{r},{c}]
  %t = tanh(%b) : f32[{r},{c}]
  %d = dropout(%t) {{p=0.25}} : f32[{r},{c}]
  return %d, %a
}}

graph @g(%x: f32[{r},{c}]) -> (f32[{r},{c}]) mode=training {{
  %w = param \"w\" : f32[{c}]
  %f = fused(%x, %x, %w) {{func=@f0}} : (f32[{r},{c}], f32[{r},{c}])
  return %f
}}
"
        );
        let res = check(&text, &[], seed);
        prop_assert!(res.is_ok(), "{:?}", res);
    }
}

#[test]
fn a_wrong_gradient_is_caught() {
    // The checker itself must be able to fail: a graph whose loss is not what the
    // analytic side differentiates cannot be built through the public API, so compare a
    // correct check against one with perturbed inputs between the two sides instead: a
    // tolerance of zero must reject rounding-level differences.
    let text = unary_graph("tanh(%x)", "3");
    let g = oar_ir::parse(&text).unwrap();
    let x = HostTensor::f32(vec![3], values(Dom::Any(1.0), 3, 5));
    let strict = GradCheck {
        rtol: 0.0,
        atol: 0.0,
        h: 0.5,
        ..GradCheck::default()
    };
    assert!(check_gradients(&g, &[x], &Weights::new(), &strict).is_err());
}
