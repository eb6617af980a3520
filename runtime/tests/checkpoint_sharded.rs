//! Sharded checkpoints: many writers, loading under any layout bit for bit, and refusals
//! that name the bad file and tensor (with the fallback to the previous good checkpoint).

use oar_runtime::data::LoaderPosition;
use oar_runtime::io::checkpoint::*;
use oar_runtime::io::weights::{encode_safetensors, Weights};
use oar_runtime::tensor::HostTensor;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

fn random_f32(rng: &mut ChaCha8Rng, shape: Vec<usize>) -> HostTensor {
    let n = shape.iter().product();
    // Any finite bit pattern, so a reordered or shifted element shows.
    let v = (0..n).map(|_| rng.gen_range(-1e3f32..1e3)).collect();
    HostTensor::f32(shape, v)
}

/// A model-like set: sizes that differ by 100x, and every dtype a checkpoint stores.
fn model(seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = Weights::new();
    for (i, shape) in [
        vec![64, 32],
        vec![32],
        vec![16, 8, 3],
        vec![40, 40],
        vec![7],
        vec![5, 4],
    ]
    .into_iter()
    .enumerate()
    {
        w.insert(format!("layer{i}.weight"), random_f32(&mut rng, shape));
    }
    w.insert(
        "steps".into(),
        HostTensor::i64(vec![3], vec![7, -1, 1 << 40]),
    );
    w.insert(
        "mask".into(),
        HostTensor {
            shape: vec![4],
            data: oar_runtime::tensor::TensorData::Bool(vec![true, false, false, true]),
        },
    );
    w.insert("acc".into(), HostTensor::f64(vec![2], vec![0.1, -1e-300]));
    w
}

fn meta(step: u64, layout: Layout) -> CheckpointMeta {
    CheckpointMeta {
        step,
        loader: LoaderPosition {
            epoch: 1,
            index: 17,
            rng: 99,
        },
        seed: 5,
        config: serde_json::json!({"model": "toy", "lr": 0.1}),
        best_eval_accuracy: Some(0.25),
        rng: Some(serde_json::json!({"dropout": 12345})),
        layout,
    }
}

#[test]
fn four_writer_threads_each_write_a_quarter_and_it_loads_back_whole() {
    let root = scratch("dp4");
    let w = model(1);
    let world = 4;
    std::thread::scope(|s| {
        for rank in 0..world {
            let (root, w) = (&root, &w);
            s.spawn(move || save_replicated_shard(root, 9, rank, world, w).unwrap());
        }
    }); // the barrier
    let dir = commit_index(&root, &meta(9, Layout::data_parallel(world)), 0).unwrap();
    let index = verify_checkpoint(&dir).unwrap();
    assert_eq!(index.shards.len(), world);
    assert_eq!(index.rng, Some(serde_json::json!({"dropout": 12345})));
    assert_eq!(index.model.as_deref(), Some("toy"));
    assert_eq!(index.fingerprint, weights_fingerprint(&w));
    // Balanced: no shard holds more than its share plus the largest tensor.
    let total: u64 = index.shards.iter().map(|s| s.bytes).sum();
    let largest = 64 * 32 * 4;
    for s in &index.shards {
        assert!(
            s.bytes <= total / world as u64 + largest,
            "{s:?} of {total}"
        );
    }
    let ck = load_checkpoint(&dir).unwrap();
    assert_eq!(ck.weights, w);
    assert_eq!((ck.step, ck.seed, ck.loader.index), (9, 5, 17));
    // Exactly the shards and the index are published; no staging directory is left.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), world + 1, "{names:?}");
    assert_eq!(names[0], "index.json");
    assert!(!staging_dir(&root, 9).exists());
}

#[test]
fn a_missing_rank_is_refused_at_commit() {
    let root = scratch("norank");
    let w = model(2);
    save_replicated_shard(&root, 1, 0, 2, &w).unwrap();
    let e = commit_index(&root, &meta(1, Layout::data_parallel(2)), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 1 has not written its shard"), "{e}");
    assert!(list_checkpoints(&root).unwrap().is_empty());
}

/// Writes `w` with every tensor split along dim 0 in two (`tp`), one writer thread a part.
fn write_tp2(root: &Path, w: &Weights, step: u64) -> PathBuf {
    let split = Sharding::Split {
        dim: 0,
        parts: 2,
        axis: "tp".into(),
    };
    std::thread::scope(|s| {
        for rank in 0..2 {
            let split = split.clone();
            s.spawn(move || {
                let parts: Vec<(&String, HostTensor)> = w
                    .iter()
                    .map(|(k, t)| (k, shard_of(t, &split, rank).unwrap()))
                    .collect();
                let pieces: Vec<ShardPiece<'_>> = parts
                    .iter()
                    .map(|(k, t)| ShardPiece {
                        name: k,
                        tensor: t,
                        global_shape: w[*k].shape.clone(),
                        sharding: split.clone(),
                        part: rank,
                    })
                    .collect();
                save_shard(root, step, rank, 2, &pieces).unwrap();
            });
        }
    });
    let layout = Layout {
        world: 2,
        mesh: vec![MeshAxis {
            name: "tp".into(),
            size: 2,
        }],
    };
    commit_index(root, &meta(step, layout), 0).unwrap()
}

#[test]
fn a_tp2_checkpoint_loads_whole_four_way_and_one_way_bit_for_bit() {
    let root = scratch("tp2");
    let w = model(3);
    let dir = write_tp2(&root, &w, 4);
    assert_eq!(load_checkpoint(&dir).unwrap().weights, w);
    let four = Sharding::Split {
        dim: 0,
        parts: 4,
        axis: "tp".into(),
    };
    for rank in 0..4 {
        let got = load_resharded(&dir, &ShardSpec::uniform(w.keys(), four.clone(), rank)).unwrap();
        for (k, t) in &w {
            assert_eq!(got[k], shard_of(t, &four, rank).unwrap(), "{k} rank {rank}");
        }
    }
    let one = load_resharded(&dir, &ShardSpec::default()).unwrap();
    assert_eq!(one, w);
    // ZeRO-style flat ranges over 3 ranks concatenate back to the flattened tensors.
    let flat = Sharding::Flat {
        parts: 3,
        axis: "dp".into(),
    };
    let parts: Vec<Weights> = (0..3)
        .map(|r| load_resharded(&dir, &ShardSpec::uniform(w.keys(), flat.clone(), r)).unwrap())
        .collect();
    let k = "layer3.weight";
    let joined: Vec<f32> = parts
        .iter()
        .flat_map(|p| p[k].as_f32().unwrap().to_vec())
        .collect();
    assert_eq!(joined, w[k].as_f32().unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_split_reshards_into_any_other(
        shape in prop::collection::vec(1usize..7, 1..4),
        wdim in 0usize..3,
        wparts in 1usize..5,
        tdim in 0usize..3,
        tparts in 1usize..5,
        flat_target in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = random_f32(&mut rng, shape.clone());
        let w: Weights = [("t".to_string(), t.clone())].into();
        let wdim = wdim % shape.len();
        let split = Sharding::Split { dim: wdim, parts: wparts, axis: "a".into() };
        let root = scratch(&format!("prop-{seed}"));
        let parts: Vec<HostTensor> = (0..wparts).map(|r| shard_of(&t, &split, r).unwrap()).collect();
        for (r, p) in parts.iter().enumerate() {
            let piece = ShardPiece { name: "t", tensor: p, global_shape: shape.clone(), sharding: split.clone(), part: r };
            save_shard(&root, 1, r, wparts, &[piece]).unwrap();
        }
        let layout = Layout { world: wparts, mesh: vec![MeshAxis { name: "a".into(), size: wparts }] };
        let dir = commit_index(&root, &meta(1, layout), 0).unwrap();
        prop_assert_eq!(&load_checkpoint(&dir).unwrap().weights, &w);
        let target = if flat_target {
            Sharding::Flat { parts: tparts, axis: "b".into() }
        } else {
            Sharding::Split { dim: tdim % shape.len(), parts: tparts, axis: "b".into() }
        };
        for r in 0..tparts {
            let got = load_resharded(&dir, &ShardSpec::uniform(w.keys(), target.clone(), r)).unwrap();
            prop_assert_eq!(&got["t"], &shard_of(&t, &target, r).unwrap());
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

fn single(root: &Path, w: &Weights, step: u64) -> PathBuf {
    let ck = Checkpoint {
        step,
        loader: meta(0, Layout::single()).loader,
        seed: 5,
        config: serde_json::json!({"model": "toy"}),
        best_eval_accuracy: None,
        weights: w.clone(),
    };
    save_checkpoint(root, &ck, 0).unwrap()
}

fn flip_bit(path: &Path, from_end: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.len() - from_end;
    b[at] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

#[test]
fn damage_is_named_by_file_and_tensor_and_the_previous_checkpoint_loads() {
    let root = scratch("damage");
    let w = model(4);
    let old = single(&root, &w, 2);
    let mut w2 = w.clone();
    w2.insert(
        "layer1.weight".into(),
        HostTensor::f32(vec![32], vec![0.5; 32]),
    );
    let new = write_tp2(&root, &w2, 4);
    let shard = new.join("shard-00001-of-00002.safetensors");
    let clean = std::fs::read(&shard).unwrap();
    let restore = || std::fs::write(&shard, &clean).unwrap();

    // A flipped bit in the last tensor's data: the file and that tensor are named.
    flip_bit(&shard, 1);
    let e = load_checkpoint(&new).unwrap_err().to_string();
    assert!(
        e.contains("shard-00001-of-00002") && e.contains("checksum sha256"),
        "{e}"
    );
    // oar writes a shard's tensors in name order: its last bytes are `steps`'.
    assert!(e.contains("tensor `steps`"), "{e}");
    let (ck, warnings) = load_latest_good(&root).unwrap();
    assert_eq!((ck.step, &ck.weights), (2, &w));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("shard-00001-of-00002.safetensors"),
        "{warnings:?}"
    );
    restore();
    assert_eq!(load_latest_good(&root).unwrap().0.weights, w2);

    // Truncated.
    std::fs::write(&shard, &clean[..clean.len() - 100]).unwrap();
    let e = load_checkpoint(&new).unwrap_err().to_string();
    assert!(
        e.contains("shard-00001-of-00002") && e.contains("truncated"),
        "{e}"
    );
    assert_eq!(load_latest_good(&root).unwrap().0.step, 2);
    restore();

    // Missing.
    std::fs::remove_file(&shard).unwrap();
    let e = load_checkpoint(&new).unwrap_err().to_string();
    assert!(
        e.contains("shard-00001-of-00002") && e.contains("missing shard"),
        "{e}"
    );
    restore();

    // Another model's index: the shard lacks the tensors it lists.
    let other_root = scratch("damage-other");
    let mut other = Weights::new();
    other.insert(
        "fc.weight".into(),
        HostTensor::f32(vec![4, 3], vec![1.0; 12]),
    );
    let other_dir = write_tp2(&other_root, &other, 4);
    let index = new.join("index.json");
    let good_index = std::fs::read(&index).unwrap();
    std::fs::copy(other_dir.join("index.json"), &index).unwrap();
    let e = load_checkpoint(&new).unwrap_err().to_string();
    assert!(
        e.contains("shard-00000-of-00002.safetensors")
            && e.contains("fc.weight")
            && e.contains("another model"),
        "{e}"
    );
    // A partial index, and an index edited to another parameter set.
    std::fs::write(&index, &good_index[..good_index.len() / 2]).unwrap();
    let e = load_checkpoint(&new).unwrap_err().to_string();
    assert!(
        e.contains("index.json") && e.contains("does not parse"),
        "{e}"
    );
    let edited = String::from_utf8(good_index.clone())
        .unwrap()
        .replacen("\"F64\"", "\"F32\"", 1);
    std::fs::write(&index, edited).unwrap();
    let e = load_checkpoint(&new).unwrap_err().to_string();
    assert!(e.contains("index.json") && e.contains("fingerprint"), "{e}");
    // No index at all: the directory is skipped with a warning.
    std::fs::remove_file(&index).unwrap();
    let (ck, warnings) = load_latest_good(&root).unwrap();
    assert_eq!(ck.step, 2);
    assert!(warnings[0].contains("step-00000004") && warnings[0].contains("no index.json"));
    // Nothing good at all is an error that lists every reason.
    flip_bit(&old.join("shard-00000-of-00001.safetensors"), 3);
    let e = load_latest_good(&root).unwrap_err().to_string();
    assert!(
        e.contains("no checkpoint verifies") && e.contains("step-00000002"),
        "{e}"
    );
}

#[test]
fn version_1_checkpoints_still_load_and_reshard() {
    let root = scratch("v1");
    let mut w = model(5);
    // Version 1 narrowed f64 to f32 on load.
    w.remove("acc");
    let dir = root.join("step-00000003");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = encode_safetensors(&w).unwrap();
    std::fs::write(dir.join("weights.safetensors"), &bytes).unwrap();
    let manifest = serde_json::json!({
        "format": "oar-checkpoint", "version": 1, "step": 3, "epoch": 0,
        "loader": {"epoch": 0, "index": 8, "rng": 1}, "seed": 2, "config": {},
        "best_eval_accuracy": null,
        "weights": {"file": "weights.safetensors", "bytes": bytes.len(),
                    "fnv1a64": format!("{:016x}", fnv1a64(&bytes))}
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let (ck, warnings) = load_latest_good(&root).unwrap();
    assert!(warnings.is_empty());
    assert_eq!((ck.step, ck.seed, ck.loader.index), (3, 2, 8));
    assert_eq!(ck.weights, w);
    let half = Sharding::Split {
        dim: 0,
        parts: 2,
        axis: "tp".into(),
    };
    let got = load_resharded(&root, &ShardSpec::uniform(w.keys(), half.clone(), 1)).unwrap();
    assert_eq!(
        got["layer0.weight"],
        shard_of(&w["layer0.weight"], &half, 1).unwrap()
    );
}

#[test]
fn background_saves_keep_the_newest_and_surface_errors() {
    let root = scratch("bg");
    let w = model(6);
    let mut saver = BackgroundSaver::new();
    let ck = |step| Checkpoint {
        step,
        loader: meta(0, Layout::single()).loader,
        seed: 1,
        config: serde_json::json!({}),
        best_eval_accuracy: None,
        weights: w.clone(),
    };
    assert_eq!(saver.submit(&root, ck(1), 2).unwrap(), None);
    assert!(saver.busy());
    // The second save waits for the first and reports it.
    assert_eq!(saver.submit(&root, ck(2), 2).unwrap().unwrap().0, 1);
    saver.submit(&root, ck(3), 2).unwrap();
    assert_eq!(saver.wait().unwrap().unwrap().0, 3);
    let steps: Vec<u64> = list_checkpoints(&root)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![2, 3]);
    // A root that is a file fails in the writer thread; the error reaches the caller.
    let file = root.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    saver.submit(&file, ck(4), 2).unwrap();
    assert!(saver.wait().is_err());
}
