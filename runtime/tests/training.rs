//! Training semantics of the reference interpreter: dropout's seeded counter-based mask in
//! both of Paddle's modes, the training form of batch_norm against a float64 reference, and
//! state updates written back by `train_step`.

use oar_ir::parse;
use oar_runtime::interp::{dropout_keep, run_with_options, train_step, RunOptions};
use oar_runtime::{run, HostTensor, Weights};

fn random(shape: Vec<usize>, seed: u64, lo: f32, hi: f32) -> HostTensor {
    let n = shape.iter().product();
    let mut s = seed | 1;
    let data = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect();
    HostTensor::f32(shape, data)
}

const DROPOUT: &str = r#"
graph @d(%x: f32[4,64]) -> (f32[4,64], f32[4,64]) mode=training {
  %up = dropout(%x) {p=0.3} : f32[4,64]
  %down = dropout(%x) {p=0.3, mode=downscale_in_infer} : f32[4,64]
  return %up, %down
}
"#;

#[test]
fn dropout_draws_a_reproducible_mask_per_seed_step_and_node() {
    let g = parse(DROPOUT).unwrap();
    let x = vec![random(vec![4, 64], 1, 0.5, 1.5)];
    let w = Weights::new();
    let opts = RunOptions::training(42, 7);
    let a = run_with_options(&g, &x, &w, opts).unwrap().outputs;
    let again = run_with_options(&g, &x, &w, opts).unwrap().outputs;
    assert_eq!(
        a[0].as_f32(),
        again[0].as_f32(),
        "same seed and step: same mask"
    );
    let next = run_with_options(&g, &x, &w, RunOptions::training(42, 8))
        .unwrap()
        .outputs;
    assert_ne!(
        a[0].as_f32(),
        next[0].as_f32(),
        "a new step draws a new mask"
    );
    let xs = x[0].as_f32().unwrap();
    for (node, out, scale) in [("up", &a[0], 1.0 / 0.7), ("down", &a[1], 1.0)] {
        let ys = out.as_f32().unwrap();
        let mut dropped = 0;
        for (i, (&xv, &yv)) in xs.iter().zip(ys).enumerate() {
            // Each element is a pure function of (seed, step, node name, index).
            if dropout_keep(&opts, node, 0.3, i as u64) {
                assert!((yv - xv * scale as f32).abs() <= 1e-6, "{node}[{i}]");
            } else {
                assert_eq!(yv, 0.0, "{node}[{i}]");
                dropped += 1;
            }
        }
        assert!(
            (40..115).contains(&dropped),
            "{node}: {dropped} of 256 dropped at p = 0.3"
        );
    }
    // The two nodes draw different masks from one seed.
    let zero =
        |t: &HostTensor| -> Vec<bool> { t.as_f32().unwrap().iter().map(|&v| v == 0.0).collect() };
    assert_ne!(zero(&a[0]), zero(&a[1]));
}

#[test]
fn dropout_at_inference_is_identity_or_the_downscale() {
    let g = parse(DROPOUT).unwrap();
    let x = vec![random(vec![4, 64], 2, -1.0, 1.0)];
    let out = run(&g, &x, &Weights::new()).unwrap();
    assert_eq!(out[0].as_f32(), x[0].as_f32());
    let want: Vec<f32> = x[0].as_f32().unwrap().iter().map(|v| v * 0.7).collect();
    for (a, b) in out[1].as_f32().unwrap().iter().zip(&want) {
        assert!((a - b).abs() <= 1e-6);
    }
}

const BN: &str = r#"
graph @bn(%x: f32[3,4,5,2]) -> (f32[3,4,5,2]) mode=training {
  %s = param "bn.weight" : f32[4]
  %b = param "bn.bias" : f32[4]
  %m = param "bn._mean" : f32[4]
  %v = param "bn._variance" : f32[4]
  %bn = batch_norm(%x, %s, %b, %m, %v) {eps=0.001, momentum=0.9} : (f32[3,4,5,2], f32[4], f32[4])
  return %bn
  update "bn._mean" = %bn#1
  update "bn._variance" = %bn#2
}
"#;

#[test]
fn batch_norm_trains_on_batch_statistics_and_updates_running_ones() {
    let g = parse(BN).unwrap();
    let mut w = Weights::new();
    w.insert("bn.weight".into(), random(vec![4], 3, 0.5, 1.5));
    w.insert("bn.bias".into(), random(vec![4], 4, -0.5, 0.5));
    w.insert("bn._mean".into(), random(vec![4], 5, -0.5, 0.5));
    w.insert("bn._variance".into(), random(vec![4], 6, 0.5, 1.5));
    let before = w.clone();
    let x = random(vec![3, 4, 5, 2], 7, -2.0, 3.0);
    let out = train_step(
        &g,
        std::slice::from_ref(&x),
        &mut w,
        RunOptions::training(0, 0),
    )
    .unwrap();
    assert_eq!(out.len(), 1, "state updates are not model outputs");
    // float64 reference: per channel over N, H, W; biased variance.
    let xs = x.as_f32().unwrap();
    let f = |name: &str| before[name].as_f32().unwrap().to_vec();
    let (scale, bias, rm, rv) = (
        f("bn.weight"),
        f("bn.bias"),
        f("bn._mean"),
        f("bn._variance"),
    );
    let ys = out[0].as_f32().unwrap();
    for c in 0..4 {
        let vals: Vec<f64> = (0..3)
            .flat_map(|n| (0..10).map(move |k| n * 40 + c * 10 + k))
            .map(|i| xs[i] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / 30.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 30.0;
        for n in 0..3 {
            for k in 0..10 {
                let i = n * 40 + c * 10 + k;
                let want =
                    (xs[i] as f64 - mean) / (var + 1e-3).sqrt() * scale[c] as f64 + bias[c] as f64;
                assert!((ys[i] as f64 - want).abs() <= 1e-5, "y[{i}]");
            }
        }
        let new_mean = 0.9 * rm[c] as f64 + 0.1 * mean;
        let new_var = 0.9 * rv[c] as f64 + 0.1 * var;
        assert!((w["bn._mean"].as_f32().unwrap()[c] as f64 - new_mean).abs() <= 1e-6);
        assert!((w["bn._variance"].as_f32().unwrap()[c] as f64 - new_var).abs() <= 1e-6);
    }
    assert_eq!(w["bn.weight"].as_f32(), before["bn.weight"].as_f32());
}

#[test]
fn verifier_rejects_training_constructs_in_inference_graphs() {
    let text = BN.replace(" mode=training", "");
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("training"), "{e}");
}
