//! Checkpoints: a killed-and-resumed run is bit-identical to an uninterrupted one (dropout,
//! shuffling and crop/flip augmentation included), and a damaged checkpoint is refused with a
//! message that says which file and why.

mod train_util;

use oar_runtime::data::Loader;
use oar_runtime::io::checkpoint::{list_checkpoints, load_checkpoint, save_checkpoint, Checkpoint};
use oar_runtime::train::{train, InterpRunner, LoopConfig, SavePolicy, TrainState};
use std::path::Path;
use train_util::*;

const K: u64 = 12;

fn cfg(steps: u64, save: Option<&Path>) -> LoopConfig {
    LoopConfig {
        steps,
        eval_every: Some(5),
        save: save.map(|d| SavePolicy {
            dir: d.to_path_buf(),
            every: 4,
            keep: 2,
            // Saved on the writer thread: the resume below reads what it wrote.
            background: true,
            write: true,
        }),
        seed: 21,
        config: serde_json::json!({"batch": 20, "lr": 0.3}),
        loss_parts: Vec::new(),
    }
}

fn lr(step: u64) -> f64 {
    // Varies with the step, so a resume that got the step wrong would show.
    0.3 / (1.0 + step as f64 * 0.05)
}

#[test]
fn a_resumed_run_matches_the_uninterrupted_run_bit_for_bit() {
    let dir = scratch("resume");
    write_synthetic(&dir, 230, 0.3, 5);
    let (tr, val) = split(&dir, 0.1, 2);
    // Batch 20 over 207 samples: the epoch ends (and reshuffles) inside the run.
    let lc = loader_config(20, 8, 1, true);

    let (mut r, mut full) = start(dropout_graph(), tr.clone(), lc.clone(), 21);
    let mut full_rec = Recorder::default();
    train(
        &mut r,
        &mut full,
        Some(&val),
        &lr,
        &cfg(2 * K, None),
        &mut full_rec,
    )
    .unwrap();

    let ckdir = dir.join("ckpt");
    let (mut r, mut first) = start(dropout_graph(), tr.clone(), lc.clone(), 21);
    train(
        &mut r,
        &mut first,
        Some(&val),
        &lr,
        &cfg(K, Some(&ckdir)),
        &mut (),
    )
    .unwrap();
    // Saved at 4, 8 and 12 (the last step); keep = 2 leaves 8 and 12.
    let kept: Vec<u64> = list_checkpoints(&ckdir)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, vec![8, 12]);
    drop((r, first)); // the "killed" process

    let ck = load_checkpoint(&ckdir).unwrap();
    assert_eq!(ck.step, K);
    assert_eq!(ck.seed, 21);
    assert_eq!(ck.config["batch"], 20);
    let mut resumed = TrainState {
        step: ck.step,
        loader: Loader::restore(tr, lc, ck.loader).unwrap(),
        weights: ck.weights,
        best_eval_accuracy: ck.best_eval_accuracy,
    };
    let mut r = InterpRunner::new(dropout_graph(), ck.seed).unwrap();
    let mut rec = Recorder::default();
    let s = train(
        &mut r,
        &mut resumed,
        Some(&val),
        &lr,
        &cfg(2 * K, Some(&ckdir)),
        &mut rec,
    )
    .unwrap();
    assert_eq!((s.steps, s.steps_run), (2 * K, K));

    let bits = |v: &[oar_runtime::train::StepRecord]| -> Vec<(u64, u32)> {
        v.iter().map(|r| (r.step, r.loss.to_bits())).collect()
    };
    assert_eq!(bits(&rec.steps), bits(&full_rec.steps[K as usize..]));
    assert_eq!(resumed.weights, full.weights, "final weights differ");
    assert_eq!(resumed.loader.position(), full.loader.position());
    assert_eq!(resumed.best_eval_accuracy, full.best_eval_accuracy);
    // The check can fail: one step more is a different state.
    let mut r = InterpRunner::new(dropout_graph(), 21).unwrap();
    train(
        &mut r,
        &mut resumed,
        None,
        &lr,
        &cfg(2 * K + 1, None),
        &mut (),
    )
    .unwrap();
    assert_ne!(resumed.weights, full.weights);
}

fn small_checkpoint(root: &Path) -> std::path::PathBuf {
    let dir = root.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    write_synthetic(&dir, 40, 0.1, 1);
    let (tr, _) = split(&dir, 0.0, 0);
    let (_, state) = start(softmax_graph(), tr, loader_config(8, 0, 0, false), 0);
    let ck = Checkpoint {
        step: 3,
        loader: state.loader.position(),
        seed: 0,
        config: serde_json::json!({}),
        best_eval_accuracy: None,
        weights: state.weights,
    };
    let out = save_checkpoint(&root.join("ck"), &ck, 0).unwrap();
    assert_eq!(load_checkpoint(&out).unwrap(), ck);
    out
}

#[test]
fn a_flipped_byte_is_refused_naming_the_file() {
    let root = scratch("corrupt");
    let ck = small_checkpoint(&root);
    let w = ck.join("shard-00000-of-00001.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let at = bytes.len() - 17; // inside the tensor data
    bytes[at] ^= 0x40;
    std::fs::write(&w, &bytes).unwrap();
    let e = load_checkpoint(&ck).unwrap_err().to_string();
    assert!(
        e.contains("shard-00000-of-00001.safetensors")
            && e.contains("checksum")
            && e.contains("corrupted"),
        "{e}"
    );
    // Truncated.
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_checkpoint(&ck).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    // A broken manifest.
    std::fs::write(ck.join("index.json"), "{\"format\": \"oar-checkpoint\"").unwrap();
    let e = load_checkpoint(&ck).unwrap_err().to_string();
    assert!(
        e.contains("index.json") && e.contains("does not parse"),
        "{e}"
    );
    // Nothing there.
    let e = load_checkpoint(&root.join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no checkpoint here"), "{e}");
}

#[test]
fn saving_the_same_step_again_replaces_it_whole() {
    let root = scratch("resave");
    let ck = small_checkpoint(&root);
    let mut again = load_checkpoint(&ck).unwrap();
    again.best_eval_accuracy = Some(0.5);
    let out = save_checkpoint(&root.join("ck"), &again, 0).unwrap();
    assert_eq!(out, ck);
    assert_eq!(
        load_checkpoint(&root.join("ck"))
            .unwrap()
            .best_eval_accuracy,
        Some(0.5)
    );
    // No temporary directories are left behind.
    let names: Vec<String> = std::fs::read_dir(root.join("ck"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["step-00000003".to_string()]);
}
