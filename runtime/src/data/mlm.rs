//! Masked-LM data: a directory of text documents → token ids → fixed-length sequences →
//! BERT-masked batches for ERNIE's four id inputs.
//!
//! A text data directory holds `train/*.txt` and `validation/*.txt`, one document per file
//! (`scripts/text_setup.py` writes the Python documentation this way), read in file-name order.
//! Sequences are packed: each split's documents, tokenized and joined with `[SEP]`, are cut
//! into `[CLS] t₁ … t_{seq−2} [SEP]` rows with no padding (the model takes no attention mask,
//! so padding would be attended to); the tail shorter than a row is dropped.
//!
//! Masking follows BERT: each non-special position is chosen with probability 0.15 (at least
//! one per row, so every row is scored); a chosen position becomes `[MASK]` (80%), a random
//! non-special id (10%) or stays (10%), and its label is the original id; every other label
//! is −100. The draw for sequence `i` in epoch `e` is a function of `(seed, e, i)` alone, so a
//! resumed run masks exactly as an uninterrupted one, and the [`LoaderPosition`]
//! (epoch, index) is the whole loader state. Validation rows are masked once, with a key
//! independent of the epoch, so every evaluation scores the same positions.

use super::loader::{permutation, LoaderPosition, SplitMix};
use super::source::{BatchSource, StepBatch};
use super::wordpiece::{CLS_ID, UNK_ID};
use super::wordpiece::{MASK_ID, SEP_ID, SPECIALS};
use super::DataError;
use crate::tensor::HostTensor;
use std::path::Path;

/// The label of a position the loss does not score.
pub const IGNORE_LABEL: i64 = -100;
/// The fraction of positions BERT masks.
pub const MASK_PROB: f64 = 0.15;

/// The documents of a text data directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TextCorpus {
    pub train: Vec<String>,
    pub validation: Vec<String>,
}

/// Whether `dir` is a text data directory (it has a `train/` folder).
pub fn is_text_dir(dir: &Path) -> bool {
    dir.join("train").is_dir()
}

/// The `.txt` documents in `dir`, in file-name order (at most `limit`).
fn read_docs(dir: &Path, limit: Option<usize>) -> Result<Vec<String>, DataError> {
    let layout = |message: String| DataError::Layout {
        dir: dir.display().to_string(),
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| {
        layout(format!(
            "cannot read it ({e}); write the corpus with scripts/text_setup.py"
        ))
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    paths.truncate(limit.unwrap_or(usize::MAX));
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).map_err(|e| layout(format!("{}: {e}", p.display()))))
        .collect()
}

/// Reads `dir/train` and `dir/validation` (at most `limit` documents of each).
pub fn load_text_dir(dir: &Path, limit: Option<usize>) -> Result<TextCorpus, DataError> {
    let train = read_docs(&dir.join("train"), limit)?;
    if train.is_empty() {
        return Err(DataError::Layout {
            dir: dir.display().to_string(),
            message: "train/ holds no .txt documents".into(),
        });
    }
    let val_dir = dir.join("validation");
    let validation = if val_dir.is_dir() {
        read_docs(&val_dir, limit)?
    } else {
        Vec::new()
    };
    Ok(TextCorpus { train, validation })
}

/// Packs tokenized documents into `[CLS] … [SEP]` rows of `seq` ids (see the module docs).
pub fn pack_sequences(docs: &[Vec<u32>], seq: usize) -> Result<Vec<Vec<u32>>, DataError> {
    if seq < 3 {
        return Err(DataError::Config(format!(
            "the sequence length must be at least 3 ([CLS], a token, [SEP]), found {seq}"
        )));
    }
    let mut stream = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            stream.push(SEP_ID);
        }
        stream.extend_from_slice(d);
    }
    Ok(stream
        .chunks_exact(seq - 2)
        .map(|c| {
            let mut row = Vec::with_capacity(seq);
            row.push(CLS_ID);
            row.extend_from_slice(c);
            row.push(SEP_ID);
            row
        })
        .collect())
}

/// The RNG key of sequence `index` in `epoch`.
fn mask_key(seed: u64, epoch: u64, index: usize) -> SplitMix {
    let mut k = SplitMix(seed ^ 0x3A5C_0FF1_CE00_B0B5);
    let a = k.next_u64() ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = SplitMix(a).next_u64() ^ (index as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    SplitMix(SplitMix(b).next_u64())
}

/// BERT masking of one row: (input ids, labels). `vocab` bounds the random replacements.
pub(crate) fn mask_row(row: &[u32], vocab: usize, rng: &mut SplitMix) -> (Vec<i64>, Vec<i64>) {
    let mut ids: Vec<i64> = row.iter().map(|&t| t as i64).collect();
    let mut labels = vec![IGNORE_LABEL; row.len()];
    // [UNK] is text the tokenizer could not cut, so it is maskable like any word.
    let maskable: Vec<usize> = (0..row.len())
        .filter(|&i| row[i] == UNK_ID || row[i] as usize >= SPECIALS.len())
        .collect();
    let threshold = (MASK_PROB * (1u64 << 53) as f64) as u64;
    let mut chosen: Vec<usize> = maskable
        .iter()
        .copied()
        .filter(|_| rng.next_u64() >> 11 < threshold)
        .collect();
    if chosen.is_empty() && !maskable.is_empty() {
        chosen.push(maskable[rng.below(maskable.len())]);
    }
    let first_word = SPECIALS.len();
    for i in chosen {
        labels[i] = row[i] as i64;
        match rng.below(10) {
            0..=7 => ids[i] = MASK_ID as i64,
            8 if vocab > first_word => ids[i] = (first_word + rng.below(vocab - first_word)) as i64,
            _ => {}
        }
    }
    (ids, labels)
}

/// A batch of masked rows as the step's inputs: `input_ids`, `token_type_ids` (zeros),
/// `position_ids` (0..seq), `task_type_ids` (zeros), all i64 `[batch, seq]`, and the labels.
fn step_batch(rows: Vec<(Vec<i64>, Vec<i64>)>, seq: usize) -> StepBatch {
    let n = rows.len();
    let (mut ids, mut labels) = (Vec::with_capacity(n * seq), Vec::with_capacity(n * seq));
    for (i, l) in rows {
        ids.extend(i);
        labels.extend(l);
    }
    let t = |v: Vec<i64>| HostTensor::i64(vec![n, seq], v);
    let positions = (0..n * seq).map(|k| (k % seq) as i64).collect();
    StepBatch {
        inputs: vec![
            t(ids),
            t(vec![0; n * seq]),
            t(positions),
            t(vec![0; n * seq]),
        ],
        labels: t(labels),
        tokens: Some(n * seq),
    }
}

/// How masked-LM batches are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlmConfig {
    /// Rows per batch; the last partial batch of an epoch is dropped.
    pub batch: usize,
    /// Seed of the shuffle and of the masking.
    pub seed: u64,
    /// The tokenizer's vocabulary size (random replacements are drawn below it).
    pub vocab: usize,
}

/// Masked-LM batches over packed rows, in a reproducible order.
#[derive(Debug, Clone)]
pub struct MlmLoader {
    rows: Vec<Vec<u32>>,
    cfg: MlmConfig,
    pos: LoaderPosition,
    order: Vec<usize>,
}

/// The held-out rows, masked once.
#[derive(Debug, Clone, PartialEq)]
pub struct TextValidation {
    rows: Vec<(Vec<i64>, Vec<i64>)>,
    seq: usize,
}

impl TextValidation {
    /// Masks `rows` (all of length `seq`) with a key of `seed` that no training epoch uses.
    pub fn new(rows: &[Vec<u32>], vocab: usize, seed: u64) -> TextValidation {
        let seq = rows.first().map_or(0, Vec::len);
        let masked = rows
            .iter()
            .enumerate()
            .map(|(i, r)| mask_row(r, vocab, &mut mask_key(!seed, u64::MAX, i)))
            .collect();
        TextValidation { rows: masked, seq }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl MlmLoader {
    /// A loader at the start of epoch 0.
    pub fn new(rows: Vec<Vec<u32>>, cfg: MlmConfig) -> Result<MlmLoader, DataError> {
        let pos = LoaderPosition {
            epoch: 0,
            index: 0,
            rng: 0,
        };
        MlmLoader::restore(rows, cfg, pos)
    }

    /// A loader at `pos` (from a checkpoint).
    pub fn restore(
        rows: Vec<Vec<u32>>,
        cfg: MlmConfig,
        pos: LoaderPosition,
    ) -> Result<MlmLoader, DataError> {
        if cfg.batch == 0 {
            return Err(DataError::Config(
                "the batch size must be at least 1".into(),
            ));
        }
        if rows.len() < cfg.batch {
            return Err(DataError::Config(format!(
                "the training split packs into {} sequences, fewer than one batch of {}",
                rows.len(),
                cfg.batch
            )));
        }
        if pos.index > rows.len() {
            return Err(DataError::Config(format!(
                "loader position {} is past the {} sequences of the training split",
                pos.index,
                rows.len()
            )));
        }
        let order = epoch_order(rows.len(), cfg.seed, pos.epoch);
        Ok(MlmLoader {
            rows,
            cfg,
            pos,
            order,
        })
    }

    pub fn position(&self) -> LoaderPosition {
        self.pos
    }

    pub fn config(&self) -> MlmConfig {
        self.cfg
    }

    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.rows.len() / self.cfg.batch
    }

    /// Packed training rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The row order of `epoch`: a function of the seed and the epoch alone.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut key = SplitMix(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut rng = SplitMix(key.next_u64());
    permutation(n, &mut rng)
}

impl BatchSource for MlmLoader {
    type Validation = TextValidation;

    fn next_step_batch(&mut self) -> StepBatch {
        if self.pos.index + self.cfg.batch > self.rows.len() {
            self.pos.epoch += 1;
            self.pos.index = 0;
            self.order = epoch_order(self.rows.len(), self.cfg.seed, self.pos.epoch);
        }
        let ids = &self.order[self.pos.index..self.pos.index + self.cfg.batch];
        self.pos.index += self.cfg.batch;
        let seq = self.rows[0].len();
        let rows = ids
            .iter()
            .map(|&i| {
                let mut rng = mask_key(self.cfg.seed, self.pos.epoch, i);
                mask_row(&self.rows[i], self.cfg.vocab, &mut rng)
            })
            .collect();
        step_batch(rows, seq)
    }

    fn data_position(&self) -> LoaderPosition {
        self.pos
    }

    fn batch_size(&self) -> usize {
        self.cfg.batch
    }

    fn validation_len(val: &TextValidation) -> usize {
        val.len()
    }

    fn validation_batches(&self, val: &TextValidation, b: usize) -> Vec<(StepBatch, usize)> {
        let n = val.rows.len();
        (0..n)
            .step_by(b.max(1))
            .map(|start| {
                let rows = (start..start + b)
                    .map(|i| val.rows[i % n].clone())
                    .collect();
                (step_batch(rows, val.seq), b.min(n - start))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "mlm_tests.rs"]
mod tests;
