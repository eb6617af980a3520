//! The dataset reader and loader: shape and dtype errors name the file and what was
//! expected, the split and the batches are reproducible, and a restored position continues
//! with the very batches the original loader would have returned.

mod train_util;

use oar_runtime::data::{load_dir, Augment, Loader, LoaderConfig};
use oar_runtime::io::npy::write_npy;
use oar_runtime::HostTensor;
use train_util::*;

#[test]
fn wrong_shapes_and_dtypes_name_the_file_and_the_expectation() {
    let dir = scratch("bad-data");
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("no images.npy") && e.contains("data_setup.py"),
        "{e}"
    );
    // Images of rank 3.
    write_npy(
        &dir.join("images.npy"),
        &HostTensor::f32(vec![4, 8, 8], vec![0.5; 256]),
    )
    .unwrap();
    write_npy(
        &dir.join("labels.npy"),
        &HostTensor::i64(vec![4], vec![0, 1, 2, 3]),
    )
    .unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains(
            "images.npy: expected f32 images [n, c, h, w] with c, h, w ≥ 1, found f32[4,8,8]"
        ),
        "{e}"
    );
    // Float labels.
    write_npy(
        &dir.join("images.npy"),
        &HostTensor::f32(vec![4, 1, 8, 8], vec![0.5; 256]),
    )
    .unwrap();
    write_npy(
        &dir.join("labels.npy"),
        &HostTensor::f32(vec![4], vec![0.0; 4]),
    )
    .unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("labels.npy: expected integer labels [n], found f32[4]"),
        "{e}"
    );
    // A label count that does not match.
    write_npy(
        &dir.join("labels.npy"),
        &HostTensor::i64(vec![3], vec![0, 1, 2]),
    )
    .unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("expected 4 labels, one per image"), "{e}");
    // Labels outside meta.json's classes.
    write_npy(
        &dir.join("labels.npy"),
        &HostTensor::i64(vec![4], vec![0, 1, 2, 7]),
    )
    .unwrap();
    std::fs::write(dir.join("meta.json"), r#"{"classes": 5}"#).unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("label 7 is outside 0..5"), "{e}");
    // A shard whose images differ in shape from the first.
    std::fs::remove_file(dir.join("meta.json")).unwrap();
    write_npy(
        &dir.join("images-1.npy"),
        &HostTensor::f32(vec![1, 1, 4, 4], vec![0.5; 16]),
    )
    .unwrap();
    write_npy(
        &dir.join("labels-1.npy"),
        &HostTensor::i64(vec![1], vec![1]),
    )
    .unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("images-1.npy: expected images of shape [1, 8, 8]"),
        "{e}"
    );
}

#[test]
fn shards_concatenate_and_the_split_is_seeded() {
    let dir = scratch("shards");
    write_synthetic(&dir, 50, 0.1, 3);
    let whole = load_dir(&dir).unwrap();
    for (k, range) in [(0usize, 0..30usize), (1, 30..50)] {
        let idx: Vec<usize> = range.collect();
        let part = whole.subset(&idx);
        write_npy(&dir.join(format!("images-{k}.npy")), &part.images).unwrap();
        let labels = HostTensor::i64(vec![idx.len()], part.labels.clone());
        write_npy(&dir.join(format!("labels-{k}.npy")), &labels).unwrap();
    }
    std::fs::remove_file(dir.join("images.npy")).unwrap();
    std::fs::remove_file(dir.join("labels.npy")).unwrap();
    let sharded = load_dir(&dir).unwrap();
    assert_eq!(sharded, whole);
    let (a, b) = whole.split(0.2, 4).unwrap();
    assert_eq!((a.len(), b.len()), (40, 10));
    assert_eq!(whole.split(0.2, 4).unwrap(), (a.clone(), b.clone()));
    assert_ne!(
        whole.split(0.2, 5).unwrap().1,
        b,
        "another seed, another split"
    );
    assert!(whole.split(1.0, 4).is_err());
}

#[test]
fn a_restored_loader_returns_the_same_batches() {
    let dir = scratch("loader");
    write_synthetic(&dir, 45, 0.2, 7);
    let data = load_dir(&dir).unwrap();
    let cfg = LoaderConfig {
        batch: 10,
        seed: 3,
        shuffle: true,
        augment: Augment {
            resize: Some([6, 6]),
            crop_pad: 1,
            hflip: true,
            channels: None,
        },
    };
    let mut a = Loader::new(data.clone(), cfg.clone()).unwrap();
    assert_eq!(a.batches_per_epoch(), 4);
    let first: Vec<_> = (0..6).map(|_| a.next_batch()).collect();
    assert_eq!(first[0].images.shape, vec![10, 1, 6, 6]);
    let pos = a.position();
    assert_eq!(
        (pos.epoch, pos.index),
        (1, 20),
        "4 batches then a new epoch (5 samples dropped)"
    );
    let rest: Vec<_> = (0..5).map(|_| a.next_batch()).collect();
    let mut b = Loader::restore(data.clone(), cfg.clone(), pos).unwrap();
    let again: Vec<_> = (0..5).map(|_| b.next_batch()).collect();
    assert_eq!(rest, again);
    // Each epoch is shuffled differently, and every epoch covers distinct samples.
    assert_ne!(first[0].labels, first[4].labels);
    let mut fresh = Loader::new(data.clone(), cfg.clone()).unwrap();
    assert_eq!(fresh.next_batch(), first[0], "same seed, same first batch");
    let other = LoaderConfig { seed: 4, ..cfg };
    assert_ne!(Loader::new(data, other).unwrap().next_batch(), first[0]);
}

#[test]
fn a_batch_larger_than_the_split_is_refused() {
    let dir = scratch("small");
    write_synthetic(&dir, 12, 0.2, 7);
    let data = load_dir(&dir).unwrap();
    let e = Loader::new(data, loader_config(16, 0, 0, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fewer than one batch of 16"), "{e}");
}
