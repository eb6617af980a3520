//! Shared by the training tests: scratch directories, a synthetic labelled dataset written as
//! `.npy` shards, the hand-written softmax-regression step graph, and a recording observer.
#![allow(dead_code)]

use oar_ir::Graph;
use oar_runtime::data::{load_dir, Augment, Dataset, Loader, LoaderConfig};
use oar_runtime::io::npy::write_npy;
use oar_runtime::train::{EvalRecord, InterpRunner, Observer, StepRecord, TrainError, TrainState};
use oar_runtime::HostTensor;
use std::path::{Path, PathBuf};

/// The hand-written softmax-regression step graph (SGD, explicit gradient).
pub const SOFTMAX: &str = include_str!("../train_softmax.oir");

pub fn softmax_graph() -> Graph {
    oar_ir::parse(SOFTMAX).expect("train_softmax.oir parses")
}

/// The same step with dropout (p = 0.2) on the flattened input, in the forward and the
/// gradient, so a run depends on the (seed, step) dropout stream.
pub fn dropout_graph() -> Graph {
    let text = SOFTMAX
        .replace(
            "%mm = matmul(%flat, %w)",
            "%fd = dropout(%flat) {p=0.2} : f32[N,64]\n  %mm = matmul(%fd, %w)",
        )
        .replace("matmul(%flat, %dz)", "matmul(%fd, %dz)");
    oar_ir::parse(&text).expect("the dropout variant parses")
}

/// A fresh, empty directory under the system's temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `n` 8x8 single-channel images of 10 classes: a random prototype per class plus uniform
/// noise of ±`noise`, written to `dir` as images.npy / labels.npy.
pub fn write_synthetic(dir: &Path, n: usize, noise: f32, seed: u64) {
    let mut rng = Lcg(seed | 1);
    let protos: Vec<Vec<f32>> = (0..10)
        .map(|_| (0..64).map(|_| rng.next()).collect())
        .collect();
    let mut pixels = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i * 7 + (rng.next() * 3.0) as usize) % 10;
        labels.push(c as i64);
        pixels.extend(
            protos[c]
                .iter()
                .map(|&p| p + noise * (2.0 * rng.next() - 1.0)),
        );
    }
    write_npy(
        &dir.join("images.npy"),
        &HostTensor::f32(vec![n, 1, 8, 8], pixels),
    )
    .expect("write images");
    write_npy(&dir.join("labels.npy"), &HostTensor::i64(vec![n], labels)).expect("write labels");
}

/// The digits written by `scripts/data_setup.py`, or `None` (with a note) when absent.
pub fn digits_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/data/digits");
    if d.join("images.npy").is_file() {
        Some(d)
    } else {
        eprintln!(
            "skipping: no digits at {} (run python3 scripts/data_setup.py target/data/digits)",
            d.display()
        );
        None
    }
}

pub fn loader_config(batch: usize, seed: u64, crop_pad: usize, hflip: bool) -> LoaderConfig {
    LoaderConfig {
        batch,
        seed,
        shuffle: true,
        augment: Augment {
            resize: None,
            crop_pad,
            hflip,
            channels: None,
        },
    }
}

/// (train, validation) of the dataset in `dir`.
pub fn split(dir: &Path, held_out: f64, seed: u64) -> (Dataset, Dataset) {
    load_dir(dir)
        .expect("load")
        .split(held_out, seed)
        .expect("split")
}

/// A runner and a fresh state (weights from the graph's initialisers with `seed`).
pub fn start(
    graph: Graph,
    train: Dataset,
    cfg: LoaderConfig,
    seed: u64,
) -> (InterpRunner, TrainState) {
    let weights = oar_runtime::init::init_weights(&graph, seed).expect("init");
    let runner = InterpRunner::new(graph, seed).expect("contract");
    let state = TrainState {
        step: 0,
        loader: Loader::new(train, cfg).expect("loader"),
        weights,
        best_eval_accuracy: None,
    };
    (runner, state)
}

/// Records every step and evaluation.
#[derive(Default)]
pub struct Recorder {
    pub steps: Vec<StepRecord>,
    pub evals: Vec<EvalRecord>,
}

impl Observer for Recorder {
    fn on_step(&mut self, r: &StepRecord) -> Result<(), TrainError> {
        self.steps.push(r.clone());
        Ok(())
    }
    fn on_eval(&mut self, r: &EvalRecord) -> Result<(), TrainError> {
        self.evals.push(r.clone());
        Ok(())
    }
}
