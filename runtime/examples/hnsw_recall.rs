//! HNSW recall@10 and query time against brute force on N random 512-d vectors (Gaussian,
//! normalised; cosine). Writes the vectors as .npy so `benches/hnsw_faiss.py` runs faiss's
//! HNSW on the same data in the same run (benches/README.md):
//!
//! ```text
//! cargo run -p oar-runtime --example hnsw_recall -- target/hnsw 100000 \
//!     && python3 benches/hnsw_faiss.py target/hnsw
//! ```
//!
//! (the `dev` profile builds oar-runtime at opt-level 3; `--release` works too).

use oar_runtime::index::{HnswParams, IndexKind, Metric, VectorIndex};
use oar_runtime::io::npy::write_npy;
use oar_runtime::HostTensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = std::path::PathBuf::from(args.get(1).map_or("target/hnsw", String::as_str));
    let n: usize = args.get(2).map_or(Ok(100_000), |s| s.parse())?;
    let (dim, queries, k) = (512, 200, 10);
    let (m, ef_construction) = (16, 100);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut gen = |rows: usize| -> Vec<f32> {
        let mut v: Vec<f32> = (0..rows * dim)
            .map(|_| rng.sample(StandardNormal))
            .collect();
        for r in v.chunks_mut(dim) {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= norm);
        }
        v
    };
    let base = gen(n);
    let qs = gen(queries);
    std::fs::create_dir_all(&out)?;
    write_npy(
        &out.join("base.npy"),
        &HostTensor::f32(vec![n, dim], base.clone()),
    )?;
    write_npy(
        &out.join("queries.npy"),
        &HostTensor::f32(vec![queries, dim], qs.clone()),
    )?;

    let kind = IndexKind::Hnsw(HnswParams {
        m,
        ef_construction,
        ef_search: 64,
        seed: 0,
    });
    let mut ix = VectorIndex::new(dim, Metric::Cosine, kind)?;
    let t = Instant::now();
    for (i, v) in base.chunks(dim).enumerate() {
        ix.add(v, &i.to_string())?;
    }
    println!(
        "oar hnsw build: {n} x {dim}, m={m} ef_construction={ef_construction}: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let truth: Vec<Vec<usize>> = qs
        .chunks(dim)
        .map(|q| Ok(ix.search_exact(q, k)?.iter().map(|h| h.id).collect()))
        .collect::<Result<_, oar_runtime::index::IndexError>>()?;
    println!(
        "oar brute force: {:.3} ms/query",
        t.elapsed().as_secs_f64() * 1e3 / queries as f64
    );
    for ef in [64, 128, 256, 512, 800, 1200] {
        ix.set_ef_search(ef);
        let t = Instant::now();
        let mut found = 0;
        for (q, want) in qs.chunks(dim).zip(&truth) {
            found += ix
                .search(q, k)?
                .iter()
                .filter(|h| want.contains(&h.id))
                .count();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / queries as f64;
        println!(
            "oar hnsw ef_search={ef:>4}: recall@{k} {:.3}, {ms:.3} ms/query",
            found as f64 / (queries * k) as f64
        );
    }
    Ok(())
}
