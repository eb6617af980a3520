//! SyncBatchNorm under data parallelism (`passes/src/training/sync_bn.rs`): dp = 1, 2 and 4
//! thread-ranks (`LocalComm`), plain and under ZeRO-2 and -3, train on a random global batch of 8
//! as one process does, step by step, with global-norm clipping.
//!
//! - A smooth conv net (two conv + batch_norm + tanh, 8×8 images; no kinks, so a rounding
//!   difference cannot flip a derivative): SGD with momentum and AdamW, losses to 1e-5
//!   relative, every parameter, moment and running statistic to 1e-6 absolute (observed
//!   ≤ 4e-7). Skipping the backward correction (the splice) fails this by 2e-3 in the loss
//!   and 1e-2 in the weights (checked by hand: patch `splice` to return its input).
//! - PP-LCNet x0.25 (32×32 images, 10 classes, dropout 0): with 2 images per rank and 1×1
//!   maps in the last stage each rank's own statistics are far from the batch's. SGD with
//!   momentum: losses to 1e-5 relative, weights to 5e-4 absolute (observed ≤ 1.5e-4: the
//!   hardswish and ReLU kinks turn the f32-vs-f64 rounding of the statistics into
//!   occasional gradient flips; AdamW amplifies those flips to ~lr and is tested on the
//!   smooth net only).

mod dp_support;

use dp_support::{rand, Run};
use oar_ir::Graph;
use oar_passes::training::data_parallel::{build_data_parallel_step, DataParallel};
use oar_passes::training::{build_train_step, TrainConfig, TrainStep};
use oar_runtime::init::init_weights;
use oar_runtime::HostTensor;

const N: usize = 8;
const CLASSES: usize = 10;

#[derive(Clone, Copy)]
enum Net {
    Smooth,
    LcNet,
}

impl Net {
    fn image(self) -> usize {
        match self {
            Net::Smooth => 8,
            Net::LcNet => 32,
        }
    }
}
const STEPS: u64 = 3;

/// The smooth net: conv 3→8, batch_norm, tanh, conv 8→8 stride 2, batch_norm, tanh, global
/// average pool, linear 8→10 (convs without bias: before a batch_norm its gradient is 0
/// plus rounding noise, which AdamW would normalise to ±lr).
fn smooth(batch: usize) -> Graph {
    use oar_frontend::nn::{BatchNorm2dConfig, Conv2dConfig, LinearConfig};
    let b = oar_frontend::ModelBuilder::new("smooth");
    let x = b.input("x", &format!("f32[N,3,{0},{0}]", Net::Smooth.image()));
    let c1 = Conv2dConfig::new(3, 8, 3)
        .padding(1)
        .bias(false)
        .init(&b, "c1");
    let n1 = BatchNorm2dConfig::new(8).init(&b, "bn1");
    let c2 = Conv2dConfig::new(8, 8, 3)
        .stride(2)
        .padding(1)
        .bias(false)
        .init(&b, "c2");
    let n2 = BatchNorm2dConfig::new(8).init(&b, "bn2");
    let fc = LinearConfig::new(8, CLASSES as u64).init(&b, "fc");
    let h = n1.forward(&c1.forward(&x)).tanh();
    let h = n2.forward(&c2.forward(&h)).tanh();
    let y = fc.forward(&h.global_avg_pool().flatten(1));
    let m = b.finish(&[&y]).expect("build");
    dp_support::specialized(&m, batch, None)
}

fn model(net: Net, batch: usize) -> Graph {
    if let Net::Smooth = net {
        return smooth(batch);
    }
    let m = oar_models::LcNetConfig {
        class_num: CLASSES as u64,
        image_size: net.image() as u64,
        dropout: 0.0,
        class_expand: 64,
        ..oar_models::LcNetConfig::new(0.25)
    }
    .build("lcnet")
    .expect("build LCNet");
    dp_support::specialized(&m, batch, None)
}

fn config(opt: &str) -> TrainConfig {
    let optimizer = dp_support::optimizer(opt, 1e-4);
    let mut tc = TrainConfig::new(optimizer);
    tc.optim.clip_global_norm = Some(1.0);
    tc
}

/// Random images in [-1, 1) with a per-image offset (so the shards' statistics differ) and
/// random labels.
fn batch(net: Net, k: u64, lr: f32) -> Vec<HostTensor> {
    let mut seed = 77 + k;
    let img = net.image();
    let per = 3 * img * img;
    let x: Vec<f32> = (0..N * per)
        .map(|i| {
            let u = (rand(&mut seed) >> 40) as f32 / (1u64 << 24) as f32;
            2.0 * u - 1.0 + (i / per) as f32 * 0.25
        })
        .collect();
    let y: Vec<i64> = (0..N)
        .map(|_| (rand(&mut seed) % CLASSES as u64) as i64)
        .collect();
    vec![
        HostTensor::f32(vec![N, 3, img, img], x),
        HostTensor::i64(vec![N], y),
        HostTensor::f32(vec![], vec![lr]),
        HostTensor::f32(vec![], vec![k as f32]),
    ]
}

fn ranks(net: Net, opt: &str, (dp, stage): (usize, u8), w0: &oar_runtime::Weights, lr: f32) -> Run {
    let steps: Vec<TrainStep> = (0..dp)
        .map(|r| {
            let d = DataParallel::zero(dp as u64, stage, r as u64);
            build_data_parallel_step(&model(net, N / dp), &config(opt), &d).expect("dp step")
        })
        .collect();
    dp_support::ranks(&steps, w0, STEPS, N, &|k| batch(net, k, lr))
}

/// Largest relative loss difference; largest absolute difference over every tensor:
/// parameters, running statistics and optimizer state (ZeRO's gathered back).
fn diff(want: &Run, got: &Run) -> (f64, f64, String) {
    let loss = want
        .0
        .iter()
        .zip(&got.0)
        .map(|(a, b)| ((a - b).abs() / a.abs().max(1e-3)) as f64)
        .fold(0.0, f64::max);
    let mut worst = (0.0f64, String::new());
    for (name, t) in &want.1 {
        let Some(y) = got.1.get(name).and_then(|u| u.as_f32()) else {
            continue;
        };
        let x = t.as_f32().unwrap_or_default();
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in x.iter().zip(y) {
            if (a - b).abs() as f64 > worst.0 {
                worst = ((a - b).abs() as f64, format!("{name} (max |x| {scale})"));
            }
        }
    }
    (loss, worst.0, worst.1)
}

fn check(net: Net, opt: &str, lr: f32, tol: f64) {
    let w0 = init_weights(&model(net, N), 3).expect("weights");
    let one = build_train_step(&model(net, N), &config(opt)).expect("single step");
    let want = dp_support::single(&one, &w0, STEPS, &|k| batch(net, k, lr));
    for (dp, stage) in [(1usize, 0u8), (2, 0), (4, 0), (4, 2), (2, 3)] {
        let got = ranks(net, opt, (dp, stage), &w0, lr);
        let (l, w, at) = diff(&want, &got);
        println!("{opt} dp{dp} zero-{stage}: loss {l:.1e}, weights {w:.1e} (at {at})");
        assert!(
            l <= 1e-5,
            "{opt} dp{dp} zero-{stage}: losses differ by {l:.1e}"
        );
        assert!(
            w <= tol,
            "{opt} dp{dp} zero-{stage}: {at} differs by {w:.1e}"
        );
    }
}

#[test]
fn smooth_net_sync_bn_sgd_and_adamw_match_single_process() {
    check(Net::Smooth, "sgd", 0.05, 1e-6);
    check(Net::Smooth, "adamw", 1e-3, 1e-6);
}

#[test]
fn lcnet_sync_bn_sgd_matches_single_process() {
    check(Net::LcNet, "sgd", 0.05, 5e-4);
}
