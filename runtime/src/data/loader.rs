//! Fixed-size batches over a [`Dataset`]: a seeded shuffle per epoch, the last partial batch
//! dropped, and augmentation drawn from one RNG whose state is part of the position.
//!
//! The epoch's order is a pure function of `(seed, epoch)`, so the position that a checkpoint
//! stores is just `(epoch, index, rng)`: [`Loader::restore`] recomputes the permutation.

use super::augment::{self, Augment};
use super::{DataError, Dataset};
use crate::tensor::HostTensor;
use serde::{Deserialize, Serialize};

/// splitmix64: a tiny RNG whose whole state is one `u64`, so it serialises as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is below 2⁻³² for the sizes used here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A Fisher–Yates permutation of `0..n`.
pub(crate) fn permutation(n: usize, rng: &mut SplitMix) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// How batches are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Samples per batch; the last partial batch of an epoch is dropped.
    pub batch: usize,
    /// Seed of the shuffle and of the augmentation RNG.
    pub seed: u64,
    /// Shuffle each epoch (off: the dataset's order every epoch).
    pub shuffle: bool,
    pub augment: Augment,
}

/// Where a loader is: the checkpointed part of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderPosition {
    /// Epochs completed.
    pub epoch: u64,
    /// The next sample's offset in this epoch's order.
    pub index: usize,
    /// The augmentation RNG's state.
    pub rng: u64,
}

/// One batch: images `[batch, c, h, w]` (after augmentation) and labels `[batch]` (i64).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: HostTensor,
    pub labels: HostTensor,
}

/// Batches over a dataset, in a reproducible order.
#[derive(Debug, Clone)]
pub struct Loader {
    data: Dataset,
    cfg: LoaderConfig,
    pos: LoaderPosition,
    order: Vec<usize>,
}

impl Loader {
    /// A loader at the start of epoch 0.
    pub fn new(data: Dataset, cfg: LoaderConfig) -> Result<Loader, DataError> {
        let rng = SplitMix(cfg.seed).next_u64();
        Loader::restore(
            data,
            cfg,
            LoaderPosition {
                epoch: 0,
                index: 0,
                rng,
            },
        )
    }

    /// A loader at `pos` (from a checkpoint): the next batch is the one the saved loader
    /// would have returned.
    pub fn restore(
        data: Dataset,
        cfg: LoaderConfig,
        pos: LoaderPosition,
    ) -> Result<Loader, DataError> {
        if cfg.batch == 0 {
            return Err(DataError::Config(
                "the batch size must be at least 1".into(),
            ));
        }
        if data.len() < cfg.batch {
            return Err(DataError::Config(format!(
                "the training split has {} samples, fewer than one batch of {}",
                data.len(),
                cfg.batch
            )));
        }
        if pos.index > data.len() {
            return Err(DataError::Config(format!(
                "loader position {} is past the {} samples of the training split",
                pos.index,
                data.len()
            )));
        }
        cfg.augment.check(data.image_shape())?;
        let order = epoch_order(data.len(), &cfg, pos.epoch);
        Ok(Loader {
            data,
            cfg,
            pos,
            order,
        })
    }

    /// The position to checkpoint.
    pub fn position(&self) -> LoaderPosition {
        self.pos
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.data.len() / self.cfg.batch
    }

    /// `[c, h, w]` of the images a batch holds (after resizing).
    pub fn output_image_shape(&self) -> [usize; 3] {
        self.cfg.augment.output_shape(self.data.image_shape())
    }

    /// The next batch, starting a new epoch (and order) when this one has no full batch left.
    pub fn next_batch(&mut self) -> Batch {
        if self.pos.index + self.cfg.batch > self.data.len() {
            self.pos.epoch += 1;
            self.pos.index = 0;
            self.order = epoch_order(self.data.len(), &self.cfg, self.pos.epoch);
        }
        let ids = &self.order[self.pos.index..self.pos.index + self.cfg.batch];
        self.pos.index += self.cfg.batch;
        let [c, h, w] = self.output_image_shape();
        let mut rng = SplitMix(self.pos.rng);
        let mut pixels = Vec::with_capacity(ids.len() * c * h * w);
        for &i in ids {
            let img = self
                .cfg
                .augment
                .apply(self.data.image(i), self.data.image_shape(), &mut rng);
            pixels.extend(img);
        }
        self.pos.rng = rng.0;
        Batch {
            images: HostTensor::f32(vec![ids.len(), c, h, w], pixels),
            labels: HostTensor::i64(
                vec![ids.len()],
                ids.iter().map(|&i| self.data.labels[i]).collect(),
            ),
        }
    }
}

/// The sample order of `epoch`: a function of the seed and the epoch alone.
fn epoch_order(n: usize, cfg: &LoaderConfig, epoch: u64) -> Vec<usize> {
    if !cfg.shuffle {
        return (0..n).collect();
    }
    let mut key = SplitMix(cfg.seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut rng = SplitMix(key.next_u64());
    permutation(n, &mut rng)
}

/// Batches for evaluation: every sample once in order, in batches of `batch`; the last batch
/// is filled up with samples from the start so that every batch has the same size (graphs
/// with a static batch dim run it). Returns each batch with its number of real samples.
pub fn eval_batches(data: &Dataset, batch: usize, augment: &Augment) -> Vec<(Batch, usize)> {
    let [c, h, w] = augment.output_shape(data.image_shape());
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() && batch > 0 {
        let real = batch.min(data.len() - start);
        let ids: Vec<usize> = (start..start + batch).map(|i| i % data.len()).collect();
        let mut pixels = Vec::with_capacity(batch * c * h * w);
        for &i in &ids {
            pixels.extend(augment::eval_transform(
                augment,
                data.image(i),
                data.image_shape(),
            ));
        }
        let labels = ids.iter().map(|&i| data.labels[i]).collect();
        out.push((
            Batch {
                images: HostTensor::f32(vec![batch, c, h, w], pixels),
                labels: HostTensor::i64(vec![batch], labels),
            },
            real,
        ));
        start += batch;
    }
    out
}
