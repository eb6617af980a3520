//! `oar train ernie-3.0-… --data CORPUS`: masked-LM training of a zoo ERNIE on a text corpus
//! (`train/*.txt`, `validation/*.txt`; `scripts/text_setup.py` writes the Python docs so).
//!
//! The WordPiece vocabulary is trained on the training split the first time and kept as a
//! file (`--vocab`, default `CORPUS/wordpiece-<size>.txt`, and `vocab.txt` in the `--save`
//! directory), so a run and its resume tokenize identically; its fingerprint is part of the
//! data-stream settings a resume checks. The model is the zoo configuration with `vocab` set
//! to the tokenizer's size, `max_positions` at least `--seq`, and the width/depth/dropout
//! overrides given; the step is `LossKind::MaskedLm` through `build_train_step`, evaluated with
//! the inference model (no dropout) — the validation MLM loss over the masked positions.

use super::{
    check_resume, initial_state, resume_and_seed, run_loop, train_config, Prepared, TrainArgs,
};
use anyhow::{bail, Context};
use clap::Args;
use oar::models::ErnieConfig;
use oar::passes::parallel::partition::specialize;
use oar::passes::training::{build_train_step, LossKind};
use oar::runtime::data::mlm::{is_text_dir, load_text_dir, pack_sequences};
use oar::runtime::data::{MlmConfig, MlmLoader, TextValidation, WordPiece};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of a masked-LM (ERNIE) run.
#[derive(Args, Debug)]
pub(super) struct TextArgs {
    /// Tokens per sequence ([CLS] and [SEP] included) of a masked-LM run.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// WordPiece vocabulary size trained on the corpus (specials included).
    #[arg(long, default_value_t = 8192)]
    vocab_size: usize,
    /// The WordPiece vocabulary file: read if it exists, else trained and written there
    /// (default: DATA/wordpiece-<size>.txt).
    #[arg(long, value_name = "FILE")]
    vocab: Option<PathBuf>,
    /// Read at most N documents of each split (a corpus slice, for quick runs and tests).
    #[arg(long, value_name = "N")]
    max_docs: Option<usize>,
    /// Evaluate on at most K validation sequences (the interpreter's speed bounds it).
    #[arg(long, value_name = "K", default_value_t = 256)]
    eval_sequences: usize,
    /// ERNIE override: transformer layers of the universal module.
    #[arg(long)]
    layers: Option<u64>,
    /// ERNIE override: hidden width.
    #[arg(long)]
    hidden: Option<u64>,
    /// ERNIE override: attention heads.
    #[arg(long)]
    heads: Option<u64>,
    /// ERNIE override: feed-forward width.
    #[arg(long)]
    ffn: Option<u64>,
    /// ERNIE override: dropout probability (default: the configuration's).
    #[arg(long)]
    dropout: Option<f64>,
}

/// The tokenizer at `path`, or one trained on `docs` and written there.
fn tokenizer(path: &Path, docs: &[String], size: usize) -> anyhow::Result<WordPiece> {
    if path.is_file() {
        let wp = WordPiece::load(path)?;
        if wp.len() > size {
            bail!(
                "{}: {} pieces, more than --vocab-size {size}",
                path.display(),
                wp.len()
            );
        }
        return Ok(wp);
    }
    eprintln!(
        "training a WordPiece vocabulary of {size} on {} documents",
        docs.len()
    );
    let wp = WordPiece::train(docs.iter().map(String::as_str), size)?;
    wp.save(path)
        .with_context(|| "cannot keep the vocabulary (pass --vocab FILE elsewhere)")?;
    Ok(wp)
}

/// The zoo configuration resized to the tokenizer and the overrides.
fn model_config(mut cfg: ErnieConfig, t: &TextArgs, vocab: usize) -> ErnieConfig {
    cfg.vocab = vocab as u64;
    cfg.max_positions = cfg.max_positions.max(t.seq as u64);
    let u = &mut cfg.universal;
    u.layers = t.layers.unwrap_or(u.layers);
    u.hidden = t.hidden.unwrap_or(u.hidden);
    u.heads = t.heads.unwrap_or(u.heads);
    u.ffn = t.ffn.unwrap_or(u.ffn);
    cfg.dropout = t.dropout.unwrap_or(cfg.dropout);
    cfg
}

pub(super) fn run(cfg: ErnieConfig, spec: &str, a: &TrainArgs) -> anyhow::Result<()> {
    let t = &a.text;
    if !is_text_dir(&a.data) {
        bail!(
            "{}: {spec} trains on a text corpus (train/*.txt, validation/*.txt); write one with \
             `python3 scripts/text_setup.py {}` (Debian's python3.11-doc)",
            a.data.display(),
            a.data.display()
        );
    }
    let (resumed, seed) = resume_and_seed(a)?;
    let corpus = load_text_dir(&a.data, t.max_docs)?;
    let vocab_path = t.vocab.clone().unwrap_or_else(|| {
        let slice = t.max_docs.map_or(String::new(), |n| format!("-docs{n}"));
        a.data
            .join(format!("wordpiece-{}{slice}.txt", t.vocab_size))
    });
    let wp = tokenizer(&vocab_path, &corpus.train, t.vocab_size)?;
    let stream = json!({
        "batch": a.batch,
        "seq": t.seq,
        "max_docs": t.max_docs,
        "eval_sequences": t.eval_sequences,
        "vocab": format!("{:016x}", wp.fingerprint()),
        "seed": seed,
    });
    if let (Some(ck), Some(dir)) = (&resumed, &a.resume) {
        check_resume(&ck.config, &stream, dir)?;
    }
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        wp.save(&dir.join("vocab.txt"))?;
    }
    let encode = |docs: &[String]| -> Vec<Vec<u32>> { docs.iter().map(|d| wp.encode(d)).collect() };
    let train_rows = pack_sequences(&encode(&corpus.train), t.seq)?;
    let mut val_rows = pack_sequences(&encode(&corpus.validation), t.seq)?;
    val_rows.truncate(t.eval_sequences);
    let val = TextValidation::new(&val_rows, wp.len(), seed);
    let n_rows = train_rows.len();

    let cfg = model_config(cfg, t, wp.len());
    let model = cfg
        .build_masked_lm(spec)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot build {spec}"))?;
    let bindings = BTreeMap::from([
        ("N".to_string(), a.batch as u64),
        ("seq".to_string(), t.seq as u64),
    ]);
    let model = specialize(&model, &bindings)
        .with_context(|| format!("{spec}: shapes must be static once N and seq are bound"))?;
    let tc = train_config(a, LossKind::MaskedLm)?;
    let step = build_train_step(&model, &tc)
        .with_context(|| format!("cannot build the training step of {spec}"))?;
    let graph = step.graph;

    let lc = MlmConfig {
        batch: a.batch,
        seed,
        vocab: wp.len(),
    };
    let state = initial_state(&graph, a, resumed, seed, |pos| match pos {
        Some(pos) => MlmLoader::restore(train_rows, lc, pos),
        None => MlmLoader::new(train_rows, lc),
    })?;
    eprintln!(
        "{spec}: masked LM, vocab {}, {} layers × {} hidden, seq {}, {n_rows} training and {} \
         validation sequences",
        wp.len(),
        cfg.universal.layers,
        cfg.universal.hidden,
        t.seq,
        val.len()
    );
    let prepared = Prepared {
        batches_per_epoch: state.loader.batches_per_epoch(),
        state,
        val: (!val.is_empty()).then_some(&val),
        seed,
        stream,
        what: format!("{n_rows} training sequences of {} tokens", t.seq),
        // Compiled by default, like the image path (docs/training.md gives both backends'
        // tokens/s); a step the backend cannot compile falls back to the interpreter.
        compile_by_default: true,
    };
    run_loop(graph, Some(model), spec, a, prepared).map(drop)
}
