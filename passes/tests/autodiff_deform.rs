//! `deform_conv2d`'s gradient rule (one `deform_conv2d_grad` node for x, offset, mask and
//! weight; `Σ dy` for the bias) against f64 central finite differences, over strides,
//! padding, dilation, groups and deformable groups. Offsets are drawn so that samples fall
//! inside, across the border and outside the image, and never on an integer coordinate
//! (the bilinear weights have a kink there). Tolerance: `GradCheck::default()` (f64,
//! h = 1e-5, |Δ| ≤ 1e-8 + 1e-6·|∂|).

use oar_ir::parse;
use oar_passes::autodiff::check::{check_gradients, uniform, GradCheck};
use oar_runtime::{HostTensor, Weights};
use proptest::prelude::*;

/// Values in ±[0.1, 1].
fn rand_f32(shape: &[usize], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product();
    let v = uniform(n, seed)
        .into_iter()
        .map(|x| x.signum() * (0.1 + 0.9 * x.abs()))
        .collect();
    HostTensor::f32(shape.to_vec(), v)
}

/// Offsets in ±2.5 with a fractional part kept away from 0 (no sample on a grid line).
fn offsets(shape: &[usize], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product();
    let v = uniform(n, seed)
        .into_iter()
        .map(|x| {
            let v = x * 2.5;
            let f = v - v.floor();
            if (0.05..0.95).contains(&f) {
                v
            } else {
                v.floor() + 0.5
            }
        })
        .collect();
    HostTensor::f32(shape.to_vec(), v)
}

fn check_deform_conv2d(
    s: u64,
    p: u64,
    d: u64,
    groups: u64,
    dg: u64,
    seed: u64,
) -> Result<usize, String> {
    let (n, c, h, w, o, kh, kw) = (2usize, 4usize, 6usize, 5usize, 4usize, 3usize, 2usize);
    let ho = (h + 2 * p as usize - (d as usize * (kh - 1) + 1)) / s as usize + 1;
    let wo = (w + 2 * p as usize - (d as usize * (kw - 1) + 1)) / s as usize + 1;
    let taps = kh * kw * dg as usize;
    let cg = c / groups as usize;
    let text = format!(
        "graph @g(%x: f32[{n},{c},{h},{w}], %off: f32[{n},{},{ho},{wo}], %m: f32[{n},{taps},{ho},{wo}], %w: f32[{o},{cg},{kh},{kw}], %b: f32[{o}]) -> (f32[{n},{o},{ho},{wo}]) {{\n  %y = deform_conv2d(%x, %off, %m, %w, %b) {{stride=[{s}, {s}], padding=[{p}, {p}, {p}, {p}], dilation=[{d}, {d}], groups={groups}, deform_groups={dg}}} : f32[{n},{o},{ho},{wo}]\n  return %y\n}}\n",
        2 * taps
    );
    let g = parse(&text).map_err(|e| format!("{e}\n{text}"))?;
    let inputs = vec![
        rand_f32(&[n, c, h, w], seed),
        offsets(&[n, 2 * taps, ho, wo], seed + 1),
        rand_f32(&[n, taps, ho, wo], seed + 2),
        rand_f32(&[o, cg, kh, kw], seed + 3),
        rand_f32(&[o], seed + 4),
    ];
    let compared = check_gradients(&g, &inputs, &Weights::new(), &GradCheck::default())
        .map_err(|e| format!("{e}\n{text}"))?;
    Ok(compared.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn deform_conv2d_every_operand(s in 1u64..=2, p in 0u64..=1, d in 1u64..=2,
                                   grouped: bool, dg in 1u64..=2, seed in 0u64..1000) {
        let groups = if grouped { 2 } else { 1 };
        let r = check_deform_conv2d(s, p, d, groups, dg, seed);
        prop_assert!(r.as_ref().is_ok_and(|&k| k >= 5), "{:?}", r);
    }
}
