//! Training data: a labelled image dataset read from a directory of `.npy` shards, a seeded
//! train/validation split, and the [`Loader`] that turns it into fixed-size batches; a text
//! corpus, its [`WordPiece`] tokenizer and the masked-LM [`MlmLoader`] (module `mlm`). Both
//! loaders are a [`BatchSource`], what the training loop draws from. Criteo click logs
//! (module `criteo`: a threaded streaming reader) and a synthetic generator of them
//! (`criteo_synth`) feed the CTR models of the parameter server.
//!
//! A data directory holds `images.npy` (f32 `[n, c, h, w]`) and `labels.npy` (integer `[n]`),
//! or several shards `images-K.npy` / `labels-K.npy` with the same suffixes, concatenated in
//! suffix order; an optional `meta.json` gives `classes`. `scripts/data_setup.py` writes
//! scikit-learn's digits in this layout.
//!
//! Everything random here (split, shuffle, augmentation) is a function of a seed and a small
//! position, so a resumed run sees exactly the batches an uninterrupted one would.

mod augment;
pub mod criteo;
pub mod criteo_synth;
mod loader;
pub mod mlm;
mod source;
pub mod wordpiece;

pub use augment::{hflip, random_crop, resize_bilinear, Augment};
pub use loader::{eval_batches, Batch, Loader, LoaderConfig, LoaderPosition, SplitMix};
pub use mlm::{MlmConfig, MlmLoader, TextValidation};
pub use source::{BatchSource, StepBatch};
pub use wordpiece::WordPiece;

use crate::io::npy::read_npy;
use crate::io::IoError;
use crate::tensor::{HostTensor, TensorData};
use std::path::{Path, PathBuf};

/// Why a dataset could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: expected {expected}, found {found}")]
    Shape {
        path: String,
        expected: String,
        found: String,
    },
    #[error("{dir}: {message}")]
    Layout { dir: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// Images and their class labels, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `[n, c, h, w]` f32.
    pub images: HostTensor,
    /// One class index per image, or [`UNLABELED`].
    pub labels: Vec<i64>,
    /// Number of classes (labels are in `0..classes`).
    pub classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[c, h, w]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        [
            self.images.shape[1],
            self.images.shape[2],
            self.images.shape[3],
        ]
    }

    /// The f32 pixels of sample `i` (`c·h·w` values).
    pub fn image(&self, i: usize) -> &[f32] {
        let per: usize = self.image_shape().iter().product();
        match &self.images.data {
            TensorData::F32(v) => &v[i * per..(i + 1) * per],
            // `load_dir` and `subset` only build f32 images.
            TensorData::F64(_) | TensorData::I64(_) | TensorData::Bool(_) => &[],
        }
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let [c, h, w] = self.image_shape();
        let mut pixels = Vec::with_capacity(indices.len() * c * h * w);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            images: HostTensor::f32(vec![indices.len(), c, h, w], pixels),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }

    /// A deterministic split into (train, validation): a seeded shuffle of all samples, the
    /// first `round(held_out · n)` go to validation. The same seed always gives the same split.
    pub fn split(&self, held_out: f64, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        if !(0.0..1.0).contains(&held_out) {
            return Err(DataError::Config(format!(
                "the held-out fraction must be in [0, 1), found {held_out}"
            )));
        }
        let mut rng = loader::SplitMix(seed ^ 0x5151_7A11_D00D_F00D);
        let perm = loader::permutation(self.len(), &mut rng);
        let n_val = (held_out * self.len() as f64).round() as usize;
        Ok((self.subset(&perm[n_val..]), self.subset(&perm[..n_val])))
    }
}

/// Pairs of (images, labels) shard files in `dir`, in suffix order.
fn shards(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, DataError> {
    image_shards(dir)?
        .into_iter()
        .map(|(images, s)| {
            let labels = dir.join(format!("labels{s}.npy"));
            if !labels.is_file() {
                return Err(DataError::Layout {
                    dir: dir.display().to_string(),
                    message: format!("images{s}.npy has no matching labels{s}.npy"),
                });
            }
            Ok((images, labels))
        })
        .collect()
}

/// The image shard files in `dir` with their suffixes (`images{suffix}.npy`), in order.
fn image_shards(dir: &Path) -> Result<Vec<(PathBuf, String)>, DataError> {
    let layout = |message: String| DataError::Layout {
        dir: dir.display().to_string(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        layout(format!(
            "cannot read the data directory ({e}); write one with scripts/data_setup.py DIR"
        ))
    })?;
    let mut suffixes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter_map(|n| {
            n.strip_prefix("images")
                .and_then(|s| s.strip_suffix(".npy"))
                .map(str::to_string)
        })
        .collect();
    suffixes.sort();
    if suffixes.is_empty() {
        return Err(layout(
            "no images.npy (or images-K.npy shards); write one with scripts/data_setup.py DIR"
                .into(),
        ));
    }
    Ok(suffixes
        .into_iter()
        .map(|s| (dir.join(format!("images{s}.npy")), s))
        .collect())
}

/// Reads one images shard, checking its dtype and shape.
fn read_images(images: &Path) -> Result<HostTensor, DataError> {
    let x = read_npy(images)?;
    if x.shape.len() != 4 || x.shape[1..].contains(&0) || x.as_f32().is_none() {
        return Err(DataError::Shape {
            path: images.display().to_string(),
            expected: "f32 images [n, c, h, w] with c, h, w ≥ 1".into(),
            found: x.describe(),
        });
    }
    Ok(x)
}

/// Reads one (images, labels) shard pair, checking dtypes and shapes.
fn read_shard(images: &Path, labels: &Path) -> Result<(HostTensor, Vec<i64>), DataError> {
    let x = read_images(images)?;
    let y = read_npy(labels)?;
    let Some(ys) = y.as_i64().filter(|_| y.shape.len() == 1) else {
        return Err(DataError::Shape {
            path: labels.display().to_string(),
            expected: "integer labels [n]".into(),
            found: y.describe(),
        });
    };
    if ys.len() != x.shape[0] {
        return Err(DataError::Shape {
            path: labels.display().to_string(),
            expected: format!(
                "{} labels, one per image in {}",
                x.shape[0],
                images.display()
            ),
            found: y.describe(),
        });
    }
    Ok((x, ys.to_vec()))
}

/// `classes` from `meta.json`, if the file is there.
fn meta_classes(dir: &Path) -> Result<Option<usize>, DataError> {
    let path = dir.join("meta.json");
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |message: String| {
        DataError::Io(IoError::Format {
            path: path.display().to_string(),
            message,
        })
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match v.get("classes") {
        None => Ok(None),
        Some(c) => c
            .as_u64()
            .map(|c| Some(c as usize))
            .ok_or_else(|| bad(format!("`classes` must be a positive integer, found {c}"))),
    }
}

/// Reads the dataset in `dir` (see the module docs for the layout).
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut image_shape: Option<(Vec<usize>, PathBuf)> = None;
    for (xp, yp) in shards(dir)? {
        let (x, y) = read_shard(&xp, &yp)?;
        match &image_shape {
            Some((s, first)) if s[..] != x.shape[1..] => {
                return Err(DataError::Shape {
                    path: xp.display().to_string(),
                    expected: format!("images of shape {s:?} like {}", first.display()),
                    found: x.describe(),
                })
            }
            Some(_) => {}
            None => image_shape = Some((x.shape[1..].to_vec(), xp.clone())),
        }
        pixels.extend_from_slice(x.as_f32().unwrap_or_default());
        labels.extend(y);
    }
    let Some((shape, _)) = image_shape else {
        return Err(DataError::Layout {
            dir: dir.display().to_string(),
            message: "no shards".into(),
        });
    };
    let max_label = labels.iter().copied().max().unwrap_or(0);
    let classes = meta_classes(dir)?.unwrap_or(max_label.max(0) as usize + 1);
    if let Some(&bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
        return Err(DataError::Layout {
            dir: dir.display().to_string(),
            message: format!("label {bad} is outside 0..{classes}"),
        });
    }
    let n = labels.len();
    Ok(Dataset {
        images: HostTensor::f32(vec![n, shape[0], shape[1], shape[2]], pixels),
        labels,
        classes,
    })
}

/// The label of an image without one (SSLD's unlabelled data): the masked losses' ignore
/// index, so a hard loss skips the row.
pub const UNLABELED: i64 = mlm::IGNORE_LABEL;

impl Dataset {
    /// This dataset followed by the images of `dir` (its `images*.npy` shards; any labels
    /// there are not read) labelled [`UNLABELED`]. The images must have this dataset's shape.
    pub fn with_unlabeled(&self, dir: &Path) -> Result<Dataset, DataError> {
        let shape = self.image_shape();
        let mut pixels = self.images.as_f32().unwrap_or_default().to_vec();
        let mut labels = self.labels.clone();
        for (path, _) in image_shards(dir)? {
            let x = read_images(&path)?;
            if x.shape[1..] != shape {
                return Err(DataError::Shape {
                    path: path.display().to_string(),
                    expected: format!("images of shape {shape:?}, as the labelled data's"),
                    found: x.describe(),
                });
            }
            pixels.extend_from_slice(x.as_f32().unwrap_or_default());
            labels.extend(std::iter::repeat_n(UNLABELED, x.shape[0]));
        }
        let n = labels.len();
        Ok(Dataset {
            images: HostTensor::f32(vec![n, shape[0], shape[1], shape[2]], pixels),
            labels,
            classes: self.classes,
        })
    }

    /// How many samples carry no label.
    pub fn unlabeled(&self) -> usize {
        self.labels.iter().filter(|&&l| l == UNLABELED).count()
    }
}
