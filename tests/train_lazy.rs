//! The training loop with a lazy compiled runner (`CompiledRunner::lazy(true)`, what `oar
//! train` uses): the state stays in the executor between steps and the loop flushes it before
//! each evaluation, each checkpoint and at the end, so a lazy run's evaluations, checkpoints
//! and final weights equal an eager run's bit for bit (same compiled code, same batches).
//! Softmax regression on the digits (`scripts/data_setup.py`; skipped when missing).

use oar::codegen::train::CompiledRunner;
use oar::passes::parallel::partition::specialize;
use oar::runtime::data::{load_dir, Augment, Loader, LoaderConfig};
use oar::runtime::init::init_weights;
use oar::runtime::io::checkpoint::load_checkpoint;
use oar::runtime::train::{
    train, EvalRecord, LoopConfig, Observer, SavePolicy, TrainError, TrainState,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Default)]
struct Evals(Vec<EvalRecord>);

impl Observer for Evals {
    fn on_eval(&mut self, r: &EvalRecord) -> Result<(), TrainError> {
        self.0.push(r.clone());
        Ok(())
    }
}

fn run(lazy: bool, root: &Path) -> Option<(TrainState, Vec<EvalRecord>, PathBuf)> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = here.join("target/data/digits");
    if !data.join("images.npy").exists() {
        eprintln!("skipped: no {} (run scripts/data_setup.py)", data.display());
        return None;
    }
    let (tr, val) = load_dir(&data).unwrap().split(0.1, 5).unwrap();
    let graph = oar::load_graph(here.join("runtime/tests/train_softmax.oir").to_str()?).unwrap();
    let graph = specialize(&graph, &BTreeMap::from([("N".to_string(), 16)])).unwrap();
    let weights = init_weights(&graph, 5).unwrap();
    let lc = LoaderConfig {
        batch: 16,
        seed: 5,
        shuffle: true,
        augment: Augment {
            resize: None,
            crop_pad: 1,
            hflip: false,
            channels: None,
        },
    };
    let mut state = TrainState {
        step: 0,
        loader: Loader::new(tr, lc).unwrap(),
        weights,
        best_eval_accuracy: None,
    };
    let mut runner = CompiledRunner::new(graph, &state.weights, 5, 2)
        .unwrap()
        .lazy(lazy);
    let dir = root.join(if lazy { "lazy" } else { "eager" });
    let cfg = LoopConfig {
        steps: 13,
        eval_every: Some(5),
        save: Some(SavePolicy {
            dir: dir.clone(),
            every: 4,
            keep: 0,
            background: false,
            write: true,
        }),
        seed: 5,
        config: serde_json::json!({}),
        loss_parts: Vec::new(),
    };
    let mut evals = Evals::default();
    let lr = |s: u64| 0.5 / s as f64;
    train(&mut runner, &mut state, Some(&val), &lr, &cfg, &mut evals).unwrap();
    Some((state, evals.0, dir))
}

#[test]
fn a_lazy_run_equals_an_eager_run() {
    let root = std::env::temp_dir().join(format!("oar-lazy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let Some((eager, eager_evals, eager_dir)) = run(false, &root) else {
        return;
    };
    let (lazy, lazy_evals, lazy_dir) = run(true, &root).expect("the same data");
    assert_eq!(lazy.weights, eager.weights, "final weights");
    let init = init_weights(
        &oar::load_graph(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("runtime/tests/train_softmax.oir")
                .to_str()
                .unwrap(),
        )
        .unwrap(),
        5,
    )
    .unwrap();
    assert_ne!(
        lazy.weights["fc.weight"], init["fc.weight"],
        "the run trained"
    );
    assert_eq!(lazy_evals.len(), 3);
    assert_eq!(lazy_evals, eager_evals, "evaluations at steps 5, 10, 13");
    for step in [4, 8, 12, 13] {
        let name = format!("step-{step:08}");
        let a = load_checkpoint(&lazy_dir.join(&name)).unwrap().weights;
        let b = load_checkpoint(&eager_dir.join(&name)).unwrap().weights;
        assert_eq!(a, b, "checkpoint {name}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
