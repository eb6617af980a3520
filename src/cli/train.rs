//! `oar train FILE.oir --data DIR`: trains a training-step graph (the contract in
//! `oar_runtime::train`) on a directory of `.npy` shards with the reference interpreter,
//! with evaluation, JSON-lines metrics, checkpoints and exact resume; a zoo ERNIE trains as a
//! masked LM on a text corpus (`train_text.rs`). See docs/training.md.

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oar::ir::ExecMode;
use oar::ir::Graph;
use oar::passes::parallel::partition::specialize;
use oar::passes::training::{
    build_train_step, LossKind, Optimizer, Precision, Recompute, TrainConfig,
};
use oar::runtime::data::{
    load_dir, Augment, BatchSource, DataError, Loader, LoaderConfig, LoaderPosition,
};
use oar::runtime::init::init_weights;
use oar::runtime::io::checkpoint::{load_latest_good, Checkpoint};
use oar::runtime::io::weights::load_safetensors;
use oar::runtime::train::{
    train, EvalRecord, InterpRunner, JsonlLog, LoopConfig, Observer, SavePolicy, Schedule,
    StepContract, StepRecord, StepRunner, TrainError, TrainState, SCHEDULE_NAMES,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// A child module, so the distillation front end reads these arguments and reuses the loop.
#[path = "train_dist.rs"]
mod dist;
#[path = "train_distill.rs"]
pub(crate) mod distill;
#[path = "train_memory.rs"]
mod memory;
// CTR models, in one process or on the parameter server (`--ps`).
#[path = "train_ps.rs"]
mod ctr;
// Pipeline parallelism (`--pp`), and its stages split over tensor groups (`--tp` with `--pp`).
#[path = "train_pp.rs"]
mod pp;
#[path = "train_pp_tp.rs"]
mod pptp;
// `--plan auto`: the planner chooses the layout for the MPI world.
#[path = "plan_auto.rs"]
mod plan_auto;
#[path = "plan_auto_show.rs"]
mod plan_auto_show;
// The loop driver (progress bar, log, summary) shared by the image, text and distillation paths.
#[path = "train_run.rs"]
mod run;
#[path = "train_text.rs"]
mod text;
#[path = "train_tp.rs"]
mod tp;

use run::{run_loop, Prepared};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A zoo image classifier (`lcnet_x0_25`: its head is sized to the data's classes), a zoo
    /// ERNIE (`ernie-3.0-…`: a masked-LM step on a text corpus, see the text options), an
    /// inference graph file whose first output is the logits (the training step is built:
    /// cross-entropy, autodiff, optimizer), or a training-step graph (mode=training; inputs
    /// images, labels: i64[N], lr: f32[], step: f32[]; outputs loss: f32[], logits, then
    /// state updates) used as it is.
    model: String,
    /// Optimizer of a built step: sgd, adamw, lamb, adagrad (Paddle's defaults).
    #[arg(long, default_value = "adamw")]
    optimizer: String,
    /// Weight decay of a built step (decoupled for adamw/lamb, L2 for sgd/adagrad; none on
    /// rank-1 parameters: norms and biases). Default: the optimizer's (adamw 0.01).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// SGD momentum of a built step.
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// Global-norm gradient clipping of a built step (Paddle's ClipGradByGlobalNorm).
    #[arg(long, value_name = "NORM")]
    clip_norm: Option<f64>,
    /// Label smoothing of the built cross-entropy loss.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Input size of a zoo image model (default: the data's height).
    #[arg(long)]
    image_size: Option<u64>,
    /// Data directory: images.npy (f32 [n,c,h,w]) and labels.npy (int [n]), or shards
    /// images-K.npy / labels-K.npy (scripts/data_setup.py writes the digits).
    #[arg(long)]
    data: PathBuf,
    /// Train until this many steps are done (a resumed run counts the earlier ones).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Train for this many epochs of the training split (full batches only).
    #[arg(long)]
    epochs: Option<u64>,
    /// Samples per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Learning-rate schedule after warmup.
    #[arg(long, default_value = "constant", value_parser = ["constant", "cosine", "linear"])]
    schedule: String,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Evaluate on the validation split every K steps (and after the last).
    #[arg(long, value_name = "K")]
    eval_every: Option<u64>,
    /// Fraction of the data held out for validation (a seeded split).
    #[arg(long, default_value_t = 0.1)]
    holdout: f64,
    /// Save checkpoints under DIR (step-NNNNNNNN/ directories).
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// Save every K steps (and after the last); 0 saves only after the last.
    #[arg(long, value_name = "K", default_value_t = 0)]
    save_every: u64,
    /// Keep the newest N checkpoints (0: all).
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Write checkpoints on a background thread while training continues (one in flight).
    #[arg(long)]
    async_save: bool,
    /// Continue from a checkpoint (a step-* directory, or a --save root: its newest that
    /// verifies; damaged newer ones are skipped with a warning naming the bad file).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Seed of initialisation, dropout, the split, shuffling and augmentation (default 0;
    /// a resumed run takes the checkpoint's).
    #[arg(long)]
    seed: Option<u64>,
    /// Write metrics as JSON lines (appended).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Initial weights (safetensors); parameters it lacks start from their initialisers.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Random-crop augmentation: pad by P zero pixels per side, crop back (0: off).
    #[arg(long, value_name = "P", default_value_t = 0)]
    crop_pad: usize,
    /// Random horizontal flips (off by default: a flipped digit is another glyph).
    #[arg(long)]
    hflip: bool,
    /// Distillation: `--teacher MODEL` trains the student (MODEL above) from a teacher.
    #[command(flatten)]
    distill: Box<distill::DistillArgs>,
    /// Compute precision of a built step: bf16/fp16 matmuls and convs with f32 master
    /// weights; fp16 adds dynamic loss scaling (skipped steps are reported).
    /// fp32, bf16 or fp16.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Activation recomputation of a built step (as `oar plan --recompute`): full
    /// recomputes each block's forward before its backward, selective the attention core.
    /// none, selective or full.
    #[arg(long, default_value = "none")]
    recompute: Recompute,
    #[command(flatten)]
    text: text::TextArgs,
    /// How a step runs: compiled by the LLVM backend, or in the reference interpreter.
    /// Unset: compiled where the backend can (a step it cannot compile, e.g. bf16/fp16,
    /// runs in the interpreter, saying why).
    #[arg(long, value_parser = ["llvm", "interp"])]
    backend: Option<String>,
    #[command(flatten)]
    dist: dist::DistArgs,
    #[command(flatten)]
    auto: plan_auto::AutoArgs,
    #[command(flatten)]
    ps_args: ctr::PsArgs,
}

/// The settings that fix the data stream: a resumed run must use the same ones.
fn stream_settings(a: &TrainArgs, seed: u64) -> serde_json::Value {
    json!({
        "batch": a.batch,
        "holdout": a.holdout,
        "crop_pad": a.crop_pad,
        "hflip": a.hflip,
        "seed": seed,
    })
}

/// Refuses a resume whose data-stream settings differ from the checkpoint's.
fn check_resume(
    saved: &serde_json::Value,
    now: &serde_json::Value,
    dir: &Path,
) -> anyhow::Result<()> {
    let saved = saved.get("stream").unwrap_or(&serde_json::Value::Null);
    let diffs: Vec<String> = now
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| saved.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            let was = saved
                .get(k.as_str())
                .map_or("nothing".into(), |s| s.to_string());
            format!("--{} {v} (the checkpoint has {was})", k.replace('_', "-"))
        })
        .collect();
    if !diffs.is_empty() {
        bail!(
            "cannot resume from {}: a different data stream would not continue the run: {}",
            dir.display(),
            diffs.join(", ")
        );
    }
    Ok(())
}

/// `[c, h, w]` of the graph's one image input (its batch dim may be symbolic).
fn image_input(contract: &StepContract) -> anyhow::Result<[usize; 3]> {
    let [(name, ty)] = contract.model_inputs.as_slice() else {
        bail!(
            "oar train feeds one image input before labels, lr and step; the graph has {} \
             model inputs",
            contract.model_inputs.len()
        );
    };
    let dims: Option<Vec<u64>> = ty.shape.0.iter().skip(1).map(|d| d.as_static()).collect();
    match (ty.dtype, dims.as_deref()) {
        (oar::ir::DType::F32, Some(&[c, h, w])) => Ok([c as usize, h as usize, w as usize]),
        _ => bail!("input `{name}` must be f32[N, c, h, w] with static c, h, w; found {ty}"),
    }
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    if a.auto.active() {
        return plan_auto::run(a);
    }
    if a.distill.active() {
        return distill::run(a);
    }
    if a.distill.teacher_weights.is_some() || a.distill.unlabeled.is_some() {
        bail!("--teacher-weights and --unlabeled belong to distillation: add --teacher MODEL or --distill-from MODEL");
    }
    let spec = a.model.clone();
    if let Some(cfg) = oar::models::ctr_config(&spec) {
        return ctr::run(cfg, &spec, &a);
    }
    if let Some(cfg) = oar::models::ernie_config(&spec) {
        return text::run(cfg, &spec, &a);
    }
    let mut loss = LossKind::CrossEntropy {
        label_smoothing: a.label_smoothing,
    };
    let shitu = oar::models::lcnet::shitu_config(&spec);
    let model = match (oar::models::lcnet_config(&spec), shitu) {
        // PP-ShiTu's extractor: the embedding, trained through an ArcMargin head over the
        // data's classes (PP-ShiTu's margin 0.2, scale 30).
        (_, Some(mut cfg)) => {
            let data = load_dir(&a.data)?;
            cfg.backbone.image_size = a.image_size.unwrap_or(data.image_shape()[1] as u64);
            loss = LossKind::ArcMargin {
                classes: data.classes as u64,
                margin: 0.2,
                scale: 30.0,
            };
            cfg.build(&spec)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("cannot build {spec}"))?
        }
        (Some(mut cfg), None) => {
            // A zoo classifier sized to the data: its classes, and the data's image size
            // unless --image-size says otherwise.
            let data = load_dir(&a.data)?;
            cfg.class_num = data.classes as u64;
            cfg.image_size = a.image_size.unwrap_or(data.image_shape()[1] as u64);
            cfg.build(&spec)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("cannot build {spec}"))?
        }
        (None, None) => oar::load_graph(&spec).with_context(|| format!("cannot load {spec}"))?,
    };
    if model.mode == ExecMode::Training {
        return train_graph(model, None, &spec, &a).map(drop);
    }
    // An inference model: bind the batch, then build its training step.
    let metric_learning = matches!(loss, LossKind::ArcMargin { .. });
    let cfg = train_config(&a, loss)?;
    let bind = |n: u64| specialize(&model, &BTreeMap::from([("N".to_string(), n)]));
    dist::prepare(&a, &cfg, |n| Ok(bind(n)?))?;
    let model = bind(a.batch as u64)
        .with_context(|| format!("{spec}: shapes must be static once the batch N is bound"))?;
    let step = build_train_step(&model, &cfg)
        .with_context(|| format!("cannot build the training step of {spec}"))?;
    // An embedding model has no logits to evaluate: the step's own cosine logits are.
    let eval_graph = (!metric_learning).then_some(model);
    train_graph(step.graph, eval_graph, &spec, &a).map(drop)
}

/// The step configuration the flags give: optimizer and its hyper-parameters, clipping,
/// precision, recomputation, and `loss`.
pub(crate) fn train_config(a: &TrainArgs, loss: LossKind) -> anyhow::Result<TrainConfig> {
    let mut optimizer: Optimizer = a.optimizer.parse()?;
    set_hyper_parameters(&mut optimizer, a);
    let mut cfg = TrainConfig::new(optimizer);
    cfg.optim.clip_global_norm = a.clip_norm;
    cfg.precision = a.precision;
    cfg.recompute.mode = a.recompute;
    cfg.loss = loss;
    Ok(cfg)
}

/// The step compiled by the LLVM backend, with its planned memory reported.
fn compiled_runner<L: BatchSource>(
    graph: &Graph,
    eval_graph: Option<Graph>,
    state: &TrainState<L>,
    seed: u64,
    spec: &str,
    a: &TrainArgs,
) -> anyhow::Result<oar::codegen::train::CompiledRunner> {
    // Compiled code has static shapes: a step graph from a file binds its batch here.
    let graph = specialize(graph, &BTreeMap::from([("N".to_string(), a.batch as u64)]))
        .with_context(|| format!("{spec}: shapes must be static once the batch N is bound"))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Lazy: the state stays in the executor between steps; the loop flushes it before it
    // evaluates, saves or returns, so no step pays for copying every weight and moment out.
    let mut r = oar::codegen::train::CompiledRunner::new(graph, &state.weights, seed, threads)
        .with_context(|| format!("the LLVM backend cannot compile the step of {spec}"))?
        .lazy(true);
    eprintln!(
        "compiled step: {:.1} MiB planned (activations, gradients, weights, optimizer state)",
        r.planned_bytes() as f64 / (1u64 << 20) as f64
    );
    if let Some(g) = eval_graph {
        r = r.with_eval_graph(g);
    }
    Ok(r)
}

/// The CLI's hyper-parameters over the optimizer's defaults.
fn set_hyper_parameters(o: &mut Optimizer, a: &TrainArgs) {
    match o {
        Optimizer::Sgd {
            momentum,
            weight_decay,
            ..
        } => {
            *momentum = a.momentum;
            *weight_decay = a.weight_decay.unwrap_or(*weight_decay);
        }
        Optimizer::AdamW { weight_decay, .. }
        | Optimizer::Lamb { weight_decay, .. }
        | Optimizer::Adagrad { weight_decay, .. } => {
            *weight_decay = a.weight_decay.unwrap_or(*weight_decay);
        }
    }
}

/// Trains a step graph (from a file, or built from a model); `eval_graph`, the inference
/// model it was built from, evaluates with running statistics. `spec` names the model in
/// messages and in checkpoints. Returns the final state (weights, loader).
pub(crate) fn train_graph(
    graph: Graph,
    eval_graph: Option<Graph>,
    spec: &str,
    a: &TrainArgs,
) -> anyhow::Result<TrainState> {
    let spec = spec.to_string();
    let contract = StepContract::check(&graph).with_context(|| spec.clone())?;
    let [c, h, w] = image_input(&contract).with_context(|| spec.clone())?;

    let data = load_dir(&a.data)?;
    let [dc, dh, dw] = data.image_shape();
    // Grey images feed a colour model by repeating the channel.
    let channels = (dc == 1 && c > 1).then_some(c);
    if dc != c && channels.is_none() {
        bail!(
            "{}: images have {dc} channel(s), the graph's input takes {c}",
            a.data.display()
        );
    }
    if let Some(k) = contract.classes() {
        if (k as usize) < data.classes {
            bail!(
                "{}: {} classes, but the graph's logits have {k}",
                a.data.display(),
                data.classes
            );
        }
    }
    let (resumed, seed) = resume_and_seed(a)?;
    let stream = stream_settings(a, seed);
    if let (Some(ck), Some(dir)) = (&resumed, &a.resume) {
        check_resume(&ck.config, &stream, dir)?;
    }
    let (train_split, val) = data.split(a.holdout, seed)?;
    // Unlabelled images join the training split only: validation needs labels.
    let train_split = match &a.distill.unlabeled {
        Some(dir) => train_split
            .with_unlabeled(dir)
            .with_context(|| format!("--unlabeled {}", dir.display()))?,
        None => train_split,
    };
    let n_train = train_split.len();
    let train_split_unlabeled = train_split.unlabeled();
    let lc = LoaderConfig {
        batch: a.batch,
        seed,
        shuffle: true,
        augment: Augment {
            // The graph's size wins: resize when the data's differs.
            resize: ([dh, dw] != [h, w]).then_some([h, w]),
            crop_pad: a.crop_pad,
            hflip: a.hflip,
            channels,
        },
    };
    let state = initial_state(&graph, a, resumed, seed, |pos| match pos {
        Some(pos) => Loader::restore(train_split, lc, pos),
        None => Loader::new(train_split, lc),
    })?;
    let prepared = Prepared {
        batches_per_epoch: state.loader.batches_per_epoch(),
        state,
        val: (!val.is_empty()).then_some(&val),
        seed,
        stream,
        what: match train_split_unlabeled {
            0 => format!("{n_train} training samples"),
            u => format!("{n_train} training samples, {u} of them unlabelled"),
        },
        compile_by_default: true,
        loss_parts: distill::loss_parts(&graph),
    };
    run_loop(graph, eval_graph, &spec, a, prepared)
}

/// The checkpoint `--resume` names (refusing `--weights` beside it) and the run's seed: the
/// checkpoint's unless `--seed` is given, else 0.
fn resume_and_seed(a: &TrainArgs) -> anyhow::Result<(Option<Checkpoint>, u64)> {
    if a.resume.is_some() && a.weights.is_some() {
        bail!("--resume takes the checkpoint's weights; drop --weights");
    }
    let resumed = match &a.resume {
        Some(dir) => {
            let (ck, warnings) = load_latest_good(dir).context("cannot resume")?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if !warnings.is_empty() {
                eprintln!("resuming from the checkpoint at step {}", ck.step);
            }
            Some(ck)
        }
        None => None,
    };
    let seed = match (&resumed, a.seed) {
        (Some(ck), None) => ck.seed,
        (_, s) => s.unwrap_or(0),
    };
    Ok((resumed, seed))
}

/// The state a run starts from: the checkpoint's, or fresh weights (initialisers, then
/// `--weights`); `loader` builds the data stream at the checkpoint's position or the start.
fn initial_state<L>(
    graph: &Graph,
    a: &TrainArgs,
    resumed: Option<Checkpoint>,
    seed: u64,
    loader: impl FnOnce(Option<LoaderPosition>) -> Result<L, DataError>,
) -> anyhow::Result<TrainState<L>> {
    Ok(match resumed {
        Some(ck) => TrainState {
            step: ck.step,
            loader: loader(Some(ck.loader))?,
            weights: ck.weights,
            best_eval_accuracy: ck.best_eval_accuracy,
        },
        None => {
            let mut weights = init_weights(graph, seed).map_err(anyhow::Error::msg)?;
            if let Some(p) = &a.weights {
                let given = load_safetensors(p)?;
                // Parameters the file lacks keep their initialisers; anything else must fit.
                super::common::check_weights(graph, &given, p, false)?;
                weights.extend(given);
            }
            TrainState {
                step: 0,
                loader: loader(None)?,
                weights,
                best_eval_accuracy: None,
            }
        }
    })
}
