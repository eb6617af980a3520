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
    check_resume, distill::loss_parts, initial_state, resume_and_seed, run_loop, train_config,
    Prepared, TrainArgs,
};
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::Graph;
use oar::models::ErnieConfig;
use oar::passes::parallel::partition::specialize;
use oar::passes::training::{build_train_step, LossKind};
use oar::runtime::data::mlm::{is_text_dir, load_text_dir, pack_sequences};
use oar::runtime::data::{MlmConfig, MlmLoader, TextValidation, WordPiece};
use oar::runtime::io::checkpoint::Checkpoint;
use oar::runtime::train::TrainState;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of a masked-LM (ERNIE) run.
#[derive(Args, Debug)]
pub(super) struct TextArgs {
    /// Tokens per sequence ([CLS] and [SEP] included) of a masked-LM run.
    #[arg(long, default_value_t = 128)]
    pub(super) seq: usize,
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
    /// ERNIE override: dropout probability (default: the configuration's; both models of a
    /// distillation run).
    #[arg(long)]
    dropout: Option<f64>,
    /// ERNIE teacher override (with --teacher): transformer layers.
    #[arg(long, requires = "teacher")]
    teacher_layers: Option<u64>,
    /// ERNIE teacher override (with --teacher): hidden width.
    #[arg(long, requires = "teacher")]
    teacher_hidden: Option<u64>,
    /// ERNIE teacher override (with --teacher): attention heads.
    #[arg(long, requires = "teacher")]
    teacher_heads: Option<u64>,
    /// ERNIE teacher override (with --teacher): feed-forward width.
    #[arg(long, requires = "teacher")]
    teacher_ffn: Option<u64>,
    /// ERNIE distillation: weight of the MSE between the two models' last encoder outputs
    /// (a learnable projection when the widths differ); 0 leaves the term out.
    #[arg(long, value_name = "W", default_value_t = 0.0, requires = "teacher")]
    pub(super) hidden_mse: f64,
}

impl TextArgs {
    /// Whether a teacher override or the hidden-state term is given (ERNIE-only settings).
    pub(super) fn ernie_overrides(&self) -> bool {
        let t = [
            self.teacher_layers,
            self.teacher_hidden,
            self.teacher_heads,
            self.teacher_ffn,
        ];
        t.iter().any(Option::is_some) || self.hidden_mse != 0.0
    }
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

/// The zoo configuration resized to the tokenizer and `[layers, hidden, heads, ffn]`
/// overrides.
fn model_config(
    mut cfg: ErnieConfig,
    seq: usize,
    vocab: usize,
    [layers, hidden, heads, ffn]: [Option<u64>; 4],
    dropout: Option<f64>,
) -> ErnieConfig {
    cfg.vocab = vocab as u64;
    cfg.max_positions = cfg.max_positions.max(seq as u64);
    let u = &mut cfg.universal;
    u.layers = layers.unwrap_or(u.layers);
    u.hidden = hidden.unwrap_or(u.hidden);
    u.heads = heads.unwrap_or(u.heads);
    u.ffn = ffn.unwrap_or(u.ffn);
    cfg.dropout = dropout.unwrap_or(cfg.dropout);
    cfg
}

/// A corpus ready for a run: the tokenizer, the training rows, the validation set, and the
/// settings a checkpoint records.
pub(super) struct TextData {
    pub wp: WordPiece,
    pub train_rows: Vec<Vec<u32>>,
    pub val: TextValidation,
    pub stream: serde_json::Value,
    pub seed: u64,
    pub resumed: Option<Checkpoint>,
}

/// Loads and tokenizes the corpus `--data` names (training the vocabulary if needed) and
/// checks a `--resume`'s data stream.
pub(super) fn prepare(spec: &str, a: &TrainArgs) -> anyhow::Result<TextData> {
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
    Ok(TextData {
        wp,
        train_rows,
        val,
        stream,
        seed,
        resumed,
    })
}

/// The masked-LM inference model of `cfg` with N (the batch) and seq bound (static shapes).
pub(super) fn masked_lm(cfg: &ErnieConfig, spec: &str, a: &TrainArgs) -> anyhow::Result<Graph> {
    masked_lm_of_batch(cfg, spec, a, a.batch as u64)
}

/// [`masked_lm`] for a batch of `n` rows (one data-parallel rank's share under `--dp`).
fn masked_lm_of_batch(
    cfg: &ErnieConfig,
    spec: &str,
    a: &TrainArgs,
    n: u64,
) -> anyhow::Result<Graph> {
    let model = cfg
        .build_masked_lm(spec)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot build {spec}"))?;
    let bindings = BTreeMap::from([("N".to_string(), n), ("seq".to_string(), a.text.seq as u64)]);
    specialize(&model, &bindings)
        .with_context(|| format!("{spec}: shapes must be static once N and seq are bound"))
}

/// The student's configuration for the data: the zoo's, resized to the vocabulary, with
/// the `--layers …` overrides.
pub(super) fn student_config(cfg: ErnieConfig, a: &TrainArgs, vocab: usize) -> ErnieConfig {
    let t = &a.text;
    let o = [t.layers, t.hidden, t.heads, t.ffn];
    model_config(cfg, t.seq, vocab, o, t.dropout)
}

/// The teacher's configuration for the data, with the `--teacher-layers …` overrides.
pub(super) fn teacher_config(cfg: ErnieConfig, a: &TrainArgs, vocab: usize) -> ErnieConfig {
    let t = &a.text;
    let o = [
        t.teacher_layers,
        t.teacher_hidden,
        t.teacher_heads,
        t.teacher_ffn,
    ];
    model_config(cfg, t.seq, vocab, o, t.dropout)
}

/// Runs the loop on a masked-LM step: `graph` (a step over the MLM inputs), evaluated with
/// `eval_graph` (the student's inference model). Returns the final state and the validation
/// set it was evaluated on.
pub(super) fn launch(
    graph: Graph,
    eval_graph: Graph,
    spec: &str,
    a: &TrainArgs,
    data: TextData,
    about: String,
) -> anyhow::Result<(TrainState<MlmLoader>, TextValidation)> {
    let TextData {
        wp,
        train_rows,
        val,
        stream,
        seed,
        resumed,
    } = data;
    let n_rows = train_rows.len();
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
        "{spec}: masked LM, vocab {}, {about}, seq {}, {n_rows} training and {} validation \
         sequences",
        wp.len(),
        a.text.seq,
        val.len()
    );
    let prepared = Prepared {
        batches_per_epoch: state.loader.batches_per_epoch(),
        state,
        val: (!val.is_empty()).then_some(&val),
        seed,
        stream,
        what: format!("{n_rows} training sequences of {} tokens", a.text.seq),
        // Compiled by default, like the image path (docs/training.md gives both backends'
        // tokens/s); a step the backend cannot compile falls back to the interpreter.
        compile_by_default: true,
        loss_parts: loss_parts(&graph),
    };
    let state = run_loop(graph, Some(eval_graph), spec, a, prepared)?;
    Ok((state, val))
}

/// `layers × hidden` of a configuration, for messages.
pub(super) fn shape(cfg: &ErnieConfig) -> String {
    format!(
        "{} layers × {} hidden",
        cfg.universal.layers, cfg.universal.hidden
    )
}

pub(super) fn run(cfg: ErnieConfig, spec: &str, a: &TrainArgs) -> anyhow::Result<()> {
    let data = prepare(spec, a)?;
    let cfg = student_config(cfg, a, data.wp.len());
    run_prepared(cfg, spec, a, data)
}

/// [`run`] once the corpus is loaded and the configuration resized to it (`--plan auto`
/// plans between the two, for the model the run trains).
pub(super) fn run_prepared(
    cfg: ErnieConfig,
    spec: &str,
    a: &TrainArgs,
    data: TextData,
) -> anyhow::Result<()> {
    let model = masked_lm(&cfg, spec, a)?;
    let tc = train_config(a, LossKind::MaskedLm)?;
    super::dist::prepare(a, &tc, |n| masked_lm_of_batch(&cfg, spec, a, n))?;
    let step = build_train_step(&model, &tc)
        .with_context(|| format!("cannot build the training step of {spec}"))?;
    launch(step.graph, model, spec, a, data, shape(&cfg)).map(drop)
}
