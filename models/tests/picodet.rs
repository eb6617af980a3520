//! PP-PicoDet against the paper's table, and every scale running in the interpreter.

use oar_ir::stats::graph_stats;
use oar_models::picodet::{PicoDetConfig, FPN_STRIDES, PAPER_TABLE};
use oar_models::trainable_param_elements;
use oar_runtime::init::init_weights;
use oar_runtime::{run, HostTensor, TensorData};
use std::collections::BTreeMap;

/// (trainable parameters in M, FLOPs in G as the paper counts them: 2 × paddle.flops MACs).
fn counts(name: &str) -> (f64, f64) {
    let entry = oar_models::find(name).unwrap_or_else(|| panic!("{name} is not in the zoo"));
    let g = (entry.build)().unwrap_or_else(|e| panic!("{name}: {e}"));
    let b = entry.bindings();
    let s = graph_stats(&g, &b);
    (
        trainable_param_elements(&g, &b) as f64 / 1e6,
        2.0 * s.paddle_macs as f64 / 1e9,
    )
}

#[test]
fn picodet_matches_the_paper_table() {
    let mut report = Vec::new();
    let mut ok = true;
    for (name, params, gflops) in PAPER_TABLE {
        let (p, f) = counts(name);
        let (dp, df) = ((p - params) / params, (f - gflops) / gflops);
        ok &= dp.abs() <= 0.01 && df.abs() <= 0.03;
        report.push(format!(
            "{name}: params {p:.4}M ({:+.2}%), FLOPs {f:.3}G ({:+.2}%)",
            dp * 100.0,
            df * 100.0
        ));
    }
    println!("{}", report.join("\n"));
    assert!(ok, "{}", report.join("\n"));
}

#[test]
fn parameter_counts_equal_paddledetection() {
    // PaddleDetection 2.6 (`paddledet` from PyPI on Paddle 3.3.1), the legacy configs built
    // with `create(cfg.architecture)`: the trainable parameters less the four unused
    // `head.p{3..6}_feat.scale_reg` scalars GFLHead leaves registered (PicoHead never reads
    // them), each size in its own process (CSPPAN appends to a default argument).
    for (name, paddle) in [
        ("picodet_s_320", 992_719 - 4),
        ("picodet_m_416", 2_152_558 - 4),
        ("picodet_l_640", 3_305_013 - 4),
    ] {
        let g = oar_models::build(name).unwrap().unwrap();
        let b = BTreeMap::from([("N".to_string(), 1)]);
        assert_eq!(trainable_param_elements(&g, &b), paddle, "{name}");
    }
}

/// Random f32 values in [-1, 1] (a fixed LCG, never zeros).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn floats(t: &HostTensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        _ => panic!("expected f32"),
    }
}

#[test]
fn every_scale_runs_in_the_interpreter() {
    // Small inputs keep the interpreter quick (any multiple of 32 works: each level is twice
    // the next for the top-down concat).
    for (name, cfg) in [
        ("picodet_s_64", PicoDetConfig::s(64)),
        ("picodet_m_64", PicoDetConfig::m(64)),
        ("picodet_l_96", PicoDetConfig::l(96)),
    ] {
        let size = cfg.image_size as usize;
        let g = cfg.build(name).unwrap();
        let w = init_weights(&g, 1).unwrap();
        let x = HostTensor::f32(vec![2, 3, size, size], random(2 * 3 * size * size, 5));
        let outs = run(&g, &[x], &w).unwrap();
        assert_eq!(outs.len(), 8, "{name}");
        for (level, stride) in FPN_STRIDES.iter().enumerate() {
            let cells = size.div_ceil(*stride as usize).pow(2);
            assert_eq!(
                outs[level].shape,
                vec![2, cells, 80],
                "{name} scores {level}"
            );
            assert_eq!(
                outs[4 + level].shape,
                vec![2, cells, 32],
                "{name} boxes {level}"
            );
            let scores = floats(&outs[level]);
            assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{name}");
            assert!(
                floats(&outs[4 + level]).iter().all(|v| v.is_finite()),
                "{name}"
            );
        }
    }
}

#[test]
fn zoo_names_give_their_configs() {
    use oar_models::picodet_config;
    assert_eq!(picodet_config("picodet_m_416"), Some(PicoDetConfig::m(416)));
    assert_eq!(picodet_config("picodet_l_640"), Some(PicoDetConfig::l(640)));
    // A size the paper does not list is not a zoo entry.
    assert_eq!(picodet_config("picodet_s_640"), None);
    assert_eq!(picodet_config("lcnet_x1_0"), None);
}
