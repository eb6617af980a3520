//! `oar checkpoint inspect` and `convert` with the built binary: the index as a table
//! (snapshot), a damaged shard reported, and a tensor-parallel checkpoint converted to one
//! file that `oar run --weights` reads with the same output as the original weights.

mod cli_util;

use cli_util::{fails, ok};
use oar::runtime::data::LoaderPosition;
use oar::runtime::io::checkpoint::{
    commit_index, save_shard, shard_of, CheckpointMeta, Layout, MeshAxis, ShardPiece, Sharding,
};
use oar::runtime::io::npy::{read_npy, write_npy};
use oar::runtime::io::weights::{save_safetensors, Weights};
use oar::runtime::tensor::HostTensor;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-ckcli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Deterministic values that differ per element (an LCG), in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// Writes `w` as a 2-way tensor-parallel checkpoint: each tensor under `plan`'s sharding,
/// part `r` by rank `r` (a replicated tensor by rank 0 only).
fn write_tp2(root: &Path, w: &Weights, plan: &dyn Fn(&str) -> Sharding, step: u64) -> PathBuf {
    for rank in 0..2 {
        let parts: Vec<(&String, Sharding, HostTensor)> = w
            .iter()
            .filter_map(|(k, t)| {
                let sh = plan(k);
                let part = if sh.parts() == 1 { 0 } else { rank };
                (sh.parts() > 1 || rank == 0)
                    .then(|| (k, sh.clone(), shard_of(t, &sh, part).unwrap()))
            })
            .collect();
        let pieces: Vec<ShardPiece<'_>> = parts
            .iter()
            .map(|(k, sh, t)| ShardPiece {
                name: k,
                tensor: t,
                global_shape: w[*k].shape.clone(),
                part: if sh.parts() == 1 { 0 } else { rank },
                sharding: sh.clone(),
            })
            .collect();
        save_shard(root, step, rank, 2, &pieces).unwrap();
    }
    let meta = CheckpointMeta {
        step,
        loader: LoaderPosition {
            epoch: 2,
            index: 48,
            rng: 7,
        },
        seed: 3,
        config: serde_json::json!({"model": "mlp"}),
        best_eval_accuracy: Some(0.875),
        rng: Some(serde_json::json!({"dropout": 1})),
        layout: Layout {
            world: 2,
            mesh: vec![MeshAxis {
                name: "tp".into(),
                size: 2,
            }],
        },
    };
    commit_index(root, &meta, 0).unwrap()
}

fn tp(dim: usize) -> Sharding {
    Sharding::Split {
        dim,
        parts: 2,
        axis: "tp".into(),
    }
}

/// Megatron's MLP split: fc1 by columns, fc2 by rows, fc2's bias whole.
fn megatron(name: &str) -> Sharding {
    match name {
        "fc1.weight" => tp(1),
        "fc1.bias" | "fc2.weight" => tp(0),
        _ => Sharding::Replicated,
    }
}

fn mlp_weights() -> Weights {
    let mut w = Weights::new();
    for (i, (k, shape)) in [
        ("fc1.weight", vec![784, 256]),
        ("fc1.bias", vec![256]),
        ("fc2.weight", vec![256, 10]),
        ("fc2.bias", vec![10]),
    ]
    .into_iter()
    .enumerate()
    {
        let n = shape.iter().product();
        w.insert(k.into(), HostTensor::f32(shape, values(n, i as u64 + 1)));
    }
    w
}

#[test]
fn inspect_prints_the_index_and_verifies() {
    let root = scratch("inspect");
    let mut w = Weights::new();
    w.insert(
        "a.weight".into(),
        HostTensor::f32(vec![4, 3], values(12, 1)),
    );
    w.insert("a.bias".into(), HostTensor::f32(vec![3], values(3, 2)));
    w.insert("steps".into(), HostTensor::i64(vec![2], vec![5, 6]));
    let plan = |k: &str| match k {
        "a.weight" => tp(0),
        "a.bias" => Sharding::Flat {
            parts: 2,
            axis: "tp".into(),
        },
        _ => Sharding::Replicated,
    };
    let dir = write_tp2(&root, &w, &plan, 4);
    insta::assert_snapshot!(ok(&["checkpoint", "inspect", s(&root)]));
    // A flipped bit: the table still prints, the verdict names the file and the tensor.
    let shard = dir.join("shard-00001-of-00002.safetensors");
    let mut b = std::fs::read(&shard).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x10;
    std::fs::write(&shard, b).unwrap();
    let out = cli_util::oar(&["checkpoint", "inspect", s(&dir)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("verified: no")
            && stdout.contains("shard-00001-of-00002.safetensors")
            && stdout.contains("tensor `a.weight`"),
        "{stdout}"
    );
}

#[test]
fn a_converted_tp2_checkpoint_runs_like_the_original_weights() {
    let root = scratch("convert");
    let w = mlp_weights();
    write_tp2(&root, &w, &megatron, 9);
    let single = root.join("single.safetensors");
    let out = ok(&["checkpoint", "convert", s(&root), "--to-single", s(&single)]);
    assert!(out.contains("4 tensors, step 9"), "{out}");
    let original = root.join("original.safetensors");
    save_safetensors(&original, &w).unwrap();
    let x = root.join("x.npy");
    write_npy(&x, &HostTensor::f32(vec![3, 784], values(3 * 784, 9))).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mlp.oir");
    let run = |weights: &Path, tag: &str| {
        let y = root.join(format!("{tag}.npy"));
        ok(&[
            "run",
            s(&model),
            "--weights",
            s(weights),
            "-i",
            s(&x),
            "-o",
            s(&y),
        ]);
        read_npy(&y).unwrap()
    };
    let (a, b) = (run(&single, "converted"), run(&original, "original"));
    assert_eq!(a, b, "the converted checkpoint computes something else");
    // The check can fail: another model's weights give other logits.
    let mut other = w.clone();
    other.insert("fc2.bias".into(), HostTensor::f32(vec![10], values(10, 77)));
    let third = root.join("other.safetensors");
    save_safetensors(&third, &other).unwrap();
    assert_ne!(run(&third, "other"), a);
    // Converting nothing is an error with a message.
    let e = fails(&[
        "checkpoint",
        "convert",
        s(&root.join("none")),
        "--to-single",
        s(&single),
    ]);
    assert!(e.contains("no checkpoint here"), "{e}");
}
