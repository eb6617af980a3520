//! PP-ShiTu retrieval end to end on scikit-learn's digits (target/data/digits, written by
//! scripts/data_setup.py): `oar train shitu_lcnet_x0_25` trains the extractor briefly with
//! ArcMargin on a train split, `oar shitu index build` makes the gallery from it, and
//! `oar shitu eval` retrieves each held-out digit's nearest gallery entry. Bad input (an
//! unreadable or empty image, an index of another feature size) is a clear error.

mod cli_util;

use cli_util::{fails, ok};
use oar::runtime::data::load_dir;
use oar::runtime::index::{IndexKind, Metric, VectorIndex};
use oar::runtime::io::npy::write_npy;
use oar::runtime::HostTensor;
use std::path::{Path, PathBuf};

fn scratch(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The digits split by a fixed stride: every fifth image is a query, the rest the gallery
/// (and the extractor's training data).
fn split_digits(root: &Path) -> Option<(PathBuf, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/data/digits");
    if !src.join("images.npy").is_file() {
        eprintln!("skipped: no digits (run python3 scripts/data_setup.py)");
        return None;
    }
    let d = load_dir(&src).expect("digits");
    let [c, h, w] = d.image_shape();
    let (mut gallery, mut queries) = (Vec::new(), Vec::new());
    for i in 0..d.len() {
        if i % 5 == 4 {
            queries.push(i);
        } else {
            gallery.push(i);
        }
    }
    let write = |name: &str, idx: &[usize]| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let px: Vec<f32> = idx.iter().flat_map(|&i| d.image(i).to_vec()).collect();
        let labels: Vec<i64> = idx.iter().map(|&i| d.labels[i]).collect();
        write_npy(
            &dir.join("images.npy"),
            &HostTensor::f32(vec![idx.len(), c, h, w], px),
        )
        .unwrap();
        write_npy(
            &dir.join("labels.npy"),
            &HostTensor::i64(vec![idx.len()], labels),
        )
        .unwrap();
        dir
    };
    Some((write("gallery", &gallery), write("queries", &queries)))
}

/// Top-1 retrieval with a briefly trained extractor beats chance (10%) by a wide margin.
/// Measured 0.4206 (151/359; deterministic: seeded split, init and loader). The threshold
/// 0.3 is three times chance. NOTE (docs/shitu.md): the same extractor with *random*
/// weights scores 0.69 — but untrained, every batch norm holds mean 0 / variance 1, so that
/// row is a network without normalisation; with batch statistics the random weights score
/// 0.16–0.24. The running statistics match the batch statistics after training (within
/// ~10%); the open problem is slow ArcMargin learning, not hidden.
#[test]
fn digits_retrieval_with_an_arcmargin_trained_extractor() {
    let root = scratch("shitu-digits");
    let Some((gallery, queries)) = split_digits(&root) else {
        return;
    };
    let ck = root.join("ck");
    let model = "shitu_lcnet_x0_25";
    let train = ok(&[
        "train",
        model,
        "--data",
        s(&gallery),
        "--steps",
        "150",
        "--batch",
        "32",
        "--lr",
        "0.01",
        "--schedule",
        "cosine",
        "--warmup",
        "10",
        "--holdout",
        "0.1",
        "--image-size",
        "16",
        "--save",
        s(&ck),
        "--backend",
        "interp",
    ]);
    eprintln!("{train}");
    let idx = root.join("gallery.idx");
    let built = ok(&[
        "shitu",
        "index",
        "build",
        s(&gallery),
        "-o",
        s(&idx),
        "--model",
        model,
        "--weights",
        s(&ck),
        "--image-size",
        "16",
    ]);
    assert!(
        built.contains("1438 images, 512-d cosine features, exact index"),
        "{built}"
    );
    let out = ok(&["shitu", "eval", s(&queries), "--index", s(&idx)]);
    eprintln!("{out}");
    let acc: f64 = out
        .split("accuracy: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("an accuracy");
    assert!(out.contains("chance 0.1000 over 10 labels"), "{out}");
    assert!(acc >= 0.3, "top-1 retrieval accuracy {acc}");

    // One query image: PNG in, the top matches and the whole-image box out.
    let d = load_dir(&queries).unwrap();
    let png = root.join("q.png");
    let px: Vec<u8> = d.image(0).iter().map(|v| (v * 255.0) as u8).collect();
    image::GrayImage::from_raw(8, 8, px)
        .unwrap()
        .save(&png)
        .unwrap();
    let q = ok(&["shitu", "query", s(&png), "--index", s(&idx), "-k", "3"]);
    assert!(q.contains("box [0, 0, 8, 8]"), "{q}");
    assert_eq!(
        q.lines().filter(|l| l.contains("(entry ")).count(),
        3,
        "{q}"
    );
}

#[test]
fn bad_queries_and_indexes_are_clear_errors() {
    let root = scratch("shitu-errors");
    // An index of 16-d features, as another extractor would make.
    let mut other = VectorIndex::new(16, Metric::Cosine, IndexKind::BruteForce).unwrap();
    other.add(&[1.0; 16], "a").unwrap();
    other.set_meta(r#"{"model":"shitu_lcnet_x0_25","image_size":8}"#);
    let idx = root.join("other.idx");
    other.save(&idx).unwrap();
    let png = root.join("q.png");
    image::GrayImage::new(8, 8).save(&png).unwrap();
    let e = fails(&["shitu", "query", s(&png), "--index", s(&idx)]);
    assert!(
        e.contains("holds 16-d cosine features; expected 512-d cosine"),
        "{e}"
    );

    // An unreadable image and a missing index.
    let txt = root.join("notes.png");
    std::fs::write(&txt, b"not a picture").unwrap();
    let mut good = VectorIndex::new(512, Metric::Cosine, IndexKind::BruteForce).unwrap();
    good.add(&[0.5; 512], "a").unwrap();
    good.set_meta(r#"{"model":"shitu_lcnet_x0_25","image_size":8}"#);
    let gidx = root.join("good.idx");
    good.save(&gidx).unwrap();
    let e = fails(&["shitu", "query", s(&txt), "--index", s(&gidx)]);
    assert!(e.contains("notes.png: cannot read the image"), "{e}");
    let e = fails(&[
        "shitu",
        "query",
        s(&png),
        "--index",
        s(&root.join("no.idx")),
    ]);
    assert!(e.contains("no.idx"), "{e}");
    // A damaged index.
    let mut bytes = std::fs::read(&gidx).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&gidx, &bytes).unwrap();
    let e = fails(&["shitu", "query", s(&png), "--index", s(&gidx)]);
    assert!(e.contains("checksum mismatch"), "{e}");
    // An empty gallery folder and an unknown extractor.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = fails(&["shitu", "index", "build", s(&empty), "-o", s(&idx)]);
    assert!(e.contains("no images"), "{e}");
    let e = fails(&[
        "shitu",
        "index",
        "build",
        s(&empty),
        "-o",
        s(&idx),
        "--model",
        "resnet50",
    ]);
    assert!(
        e.contains("no images") || e.contains("unknown extractor"),
        "{e}"
    );
}
