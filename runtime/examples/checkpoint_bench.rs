//! Checkpoint save and load bandwidth, oar's writer against Python `safetensors` writing the
//! same bytes in the same run (rounds alternate, so the shared machine's load hits both).
//!
//! ```text
//! cargo run --release -p oar-runtime --example checkpoint_bench -- [MiB] [rounds] [dir]
//! ```
//! Defaults: 256 MiB of f32 in 64 tensors, 3 rounds, under the system temp dir. oar saves
//! with `save_checkpoint` (one shard, sha256 of the file and of every tensor, fsync, rename,
//! index) and with 2 writer threads (`save_replicated_shard` + `commit_index`); it loads
//! with `load_checkpoint` (size, header and sha256 checks, then decoding). The peer is
//! `benches/checkpoint_bench.py` (safetensors.numpy `save_file` + fsync, `load_file`).
//! Loads read from the page cache in both cases (the file was just written).

use oar_runtime::data::LoaderPosition;
use oar_runtime::io::checkpoint::{
    commit_index, load_checkpoint, save_checkpoint, save_replicated_shard, Checkpoint, Layout,
};
use oar_runtime::io::weights::Weights;
use oar_runtime::tensor::HostTensor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peer(dir: &Path, mib: usize) -> Option<(f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/checkpoint_bench.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(mib.to_string())
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("peer: {}", String::from_utf8_lossy(&out.stderr).trim());
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["save_s"].as_f64()?, v["load_s"].as_f64()?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let base: PathBuf = args.get(3).map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("oar-ckbench-{}", std::process::id()))
    });
    let tensors = 64;
    let per = mib * (1 << 20) / 4 / tensors;
    let mut weights = Weights::new();
    let mut x = 0x9E37_79B9u32;
    for t in 0..tensors {
        let v: Vec<f32> = (0..per)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as f32 / (1 << 24) as f32
            })
            .collect();
        weights.insert(
            format!("layer{t:02}.weight"),
            HostTensor::f32(vec![per / 256, 256], v),
        );
    }
    let bytes = (tensors * per * 4) as f64 / 1e6;
    let ck = Checkpoint {
        step: 1,
        loader: LoaderPosition {
            epoch: 0,
            index: 0,
            rng: 0,
        },
        seed: 0,
        config: serde_json::json!({}),
        best_eval_accuracy: None,
        weights,
    };
    let (mut save, mut save2, mut load, mut psave, mut pload) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let dir = base.join(format!("round{r}"));
        let t = Instant::now();
        let at = save_checkpoint(&dir.join("one"), &ck, 0)?;
        save.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = load_checkpoint(&at)?;
        load.push(t.elapsed().as_secs_f64());
        assert!(
            back.weights == ck.weights,
            "the round trip changed the weights"
        );
        drop(back);
        let root2 = dir.join("two");
        let t = Instant::now();
        std::thread::scope(|s| {
            let jobs: Vec<_> = (0..2)
                .map(|rank| {
                    let (root2, w) = (&root2, &ck.weights);
                    s.spawn(move || save_replicated_shard(root2, 1, rank, 2, w))
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join()
                    .map_err(|_| "writer panicked")?
                    .map(|_| ())
                    .map_err(|_| "writer failed")
            })
        })?;
        commit_index(&root2, &ck.meta(Layout::data_parallel(2)), 0)?;
        save2.push(t.elapsed().as_secs_f64());
        if let Some((s, l)) = peer(&dir, mib) {
            psave.push(s);
            pload.push(l);
        }
        std::fs::remove_dir_all(&dir)?;
    }
    let _ = std::fs::remove_dir_all(&base);
    let rate = |v: &[f64]| bytes / median(v.to_vec());
    println!("{bytes:.0} MB of f32 in {tensors} tensors, {rounds} rounds (median)");
    println!("oar save, 1 shard       {:8.0} MB/s", rate(&save));
    println!(
        "oar save, 2 shards (2 writer threads) {:8.0} MB/s",
        rate(&save2)
    );
    println!("oar load + verify       {:8.0} MB/s", rate(&load));
    if psave.is_empty() {
        println!("python safetensors: not available (pip install safetensors numpy)");
    } else {
        println!("safetensors save+fsync  {:8.0} MB/s", rate(&psave));
        println!("safetensors load        {:8.0} MB/s", rate(&pload));
    }
    Ok(())
}
