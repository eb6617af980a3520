//! `oar train STUDENT --teacher TEACHER`: distillation with the teacher in the step
//! (`passes::training::online`). `--distill online` trains both models at once (each on its
//! hard loss, the student also on the teacher's softened logits); `--distill frozen` keeps
//! the teacher's weights (`--teacher-weights`, e.g. a checkpoint of an earlier run) fixed.
//!
//! A model family plugs in with a [`DistillPair`] — its two inference models with static
//! shapes, its hard loss and any hidden-state terms — and [`setup`]. Two front ends: the
//! image classifiers, feeding the joint step to the ordinary image loop (`train_graph`), and
//! the zoo ERNIEs (masked LM on a text corpus, `--teacher ernie-3.0-mini-zh`), feeding it to the
//! text loop (`text::launch`). The loop evaluates the student; the teacher is evaluated after
//! the run. The log reports the joint loss and its parts (teacher loss, student loss,
//! distillation term).

use super::text::{self, TextData};
use super::{train_config, train_graph, TrainArgs};
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::op::Op;
use oar::ir::Graph;
use oar::models::ErnieConfig;
use oar::passes::parallel::partition::specialize;
use oar::passes::training::online::{prefixed, STUDENT_PREFIX, TEACHER_PREFIX};
use oar::passes::training::{
    build_online_distill_step, split_weights, FeatureMatch, LossKind, OnlineDistill, OptimConfig,
    SoftLoss, TeacherMode, TrainStep,
};
use oar::runtime::data::{load_dir, BatchSource, Dataset};
use oar::runtime::io::weights::{load_safetensors, save_safetensors};
use oar::runtime::train::{evaluate, InterpRunner, TrainState};
use oar::runtime::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DistillArgs {
    /// Distil from this teacher (a zoo image classifier such as `lcnet_x0_5`, or an inference
    /// graph file taking the same input as the student): the model above is the student.
    #[arg(long, value_name = "MODEL", conflicts_with = "distill_from")]
    pub(super) teacher: Option<String>,
    /// SSLD (PaddleClas's semi-supervised label distillation) from this trained teacher
    /// (give its weights with --teacher-weights): the teacher stays frozen and the student
    /// learns from its soft labels alone — by default alpha 1 (no ground-truth term), the
    /// Jensen–Shannon divergence, temperature 1 — on the labelled data and any --unlabeled.
    #[arg(long, value_name = "MODEL")]
    pub(super) distill_from: Option<String>,
    /// Images without labels (a directory of `images*.npy` shards, the shape of --data's)
    /// added to the training split: the soft term covers them, the hard losses skip them.
    #[arg(long, value_name = "DIR")]
    pub(super) unlabeled: Option<PathBuf>,
    /// `online`: teacher and student train in the same step; `frozen`: the teacher's
    /// weights stay fixed (give them with --teacher-weights).
    #[arg(long, value_name = "MODE", default_value = "online", value_parser = ["online", "frozen"], conflicts_with = "distill_from")]
    distill: String,
    /// Weight of the soft (teacher) term; the student's hard loss gets 1 − alpha. Default
    /// 0.5 (1 with --distill-from).
    #[arg(long)]
    alpha: Option<f64>,
    /// Softmax temperature of the soft term (scaled by T² so its gradient keeps its size).
    /// Default 2 (1 with --distill-from).
    #[arg(long)]
    temperature: Option<f64>,
    /// How the softened distributions are compared: KL divergence, soft cross-entropy or
    /// Jensen–Shannon divergence. Default kl (js with --distill-from).
    #[arg(long, value_parser = ["kl", "soft-ce", "js"])]
    soft_loss: Option<String>,
    /// The teacher's initial weights (safetensors under the teacher's own parameter names,
    /// e.g. `shard-00000-of-00001.safetensors` of an `oar train TEACHER --save` checkpoint,
    /// or what `oar checkpoint convert` writes).
    #[arg(long, value_name = "FILE")]
    pub(super) teacher_weights: Option<PathBuf>,
}

impl DistillArgs {
    /// Whether any distillation is asked for.
    pub(super) fn active(&self) -> bool {
        self.teacher.is_some() || self.distill_from.is_some()
    }

    /// The teacher's model name, from --teacher or --distill-from.
    fn teacher_spec(&self) -> Option<&str> {
        self.teacher.as_deref().or(self.distill_from.as_deref())
    }

    fn ssld(&self) -> bool {
        self.distill_from.is_some()
    }

    /// `online` or `frozen` (SSLD's teacher is frozen).
    fn mode(&self) -> &str {
        if self.ssld() {
            "frozen"
        } else {
            &self.distill
        }
    }
}

/// What a model family supplies: two inference models with static shapes whose first
/// outputs are the logits, taking the same inputs, the hard loss both train on, and any
/// hidden-state MSE terms between them.
pub(crate) struct DistillPair {
    pub teacher: Graph,
    pub student: Graph,
    pub hard: LossKind,
    pub hidden: Vec<FeatureMatch>,
}

/// The joint step and the inference graphs that evaluate each model out of its weights.
pub(crate) struct DistillSetup {
    pub step: TrainStep,
    pub student_eval: Graph,
    pub teacher_eval: Graph,
}

/// The distillation configuration the flags describe.
fn config(d: &DistillArgs, optim: OptimConfig, hard: LossKind) -> anyhow::Result<OnlineDistill> {
    let base = OnlineDistill::new(optim.optimizer.clone());
    Ok(OnlineDistill {
        optim,
        hard,
        temperature: d.temperature.unwrap_or(if d.ssld() { 1.0 } else { 2.0 }),
        alpha: d.alpha.unwrap_or(if d.ssld() { 1.0 } else { 0.5 }),
        soft: match d
            .soft_loss
            .as_deref()
            .unwrap_or(if d.ssld() { "js" } else { "kl" })
        {
            "kl" => SoftLoss::Kl,
            "soft-ce" => SoftLoss::SoftCrossEntropy,
            "js" => SoftLoss::Js,
            other => bail!("unknown --soft-loss `{other}`; known: kl, soft-ce, js"),
        },
        unlabeled: d.unlabeled.is_some(),
        teacher: match d.mode() {
            "online" => TeacherMode::Online,
            "frozen" => TeacherMode::Frozen,
            other => bail!("unknown --distill `{other}`; known: online, frozen"),
        },
        ..base
    })
}

/// Builds the joint step of `pair` and the two evaluation graphs (family-independent).
pub(crate) fn setup(
    pair: &DistillPair,
    d: &DistillArgs,
    optim: OptimConfig,
) -> anyhow::Result<DistillSetup> {
    let cfg = OnlineDistill {
        hidden: pair.hidden.clone(),
        ..config(d, optim, pair.hard.clone())?
    };
    let step = build_online_distill_step(&pair.teacher, &pair.student, &cfg)
        .context("cannot build the distillation step")?;
    Ok(DistillSetup {
        step,
        student_eval: prefixed(&pair.student, STUDENT_PREFIX)?,
        teacher_eval: prefixed(&pair.teacher, TEACHER_PREFIX)?,
    })
}

/// A zoo image classifier sized to the data, or an inference graph file; batch bound.
fn image_model(spec: &str, a: &TrainArgs, data: &Dataset) -> anyhow::Result<Graph> {
    let model = match oar::models::lcnet_config(spec) {
        Some(mut cfg) => {
            cfg.class_num = data.classes as u64;
            cfg.image_size = a.image_size.unwrap_or(data.image_shape()[1] as u64);
            cfg.build(spec)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("cannot build {spec}"))?
        }
        None => oar::load_graph(spec).with_context(|| format!("cannot load {spec}"))?,
    };
    if model.mode == oar::ir::ExecMode::Training {
        bail!("{spec}: distillation takes inference models, not a training-step graph");
    }
    let bindings = BTreeMap::from([("N".to_string(), a.batch as u64)]);
    specialize(&model, &bindings)
        .with_context(|| format!("{spec}: shapes must be static once the batch N is bound"))
}

/// `oar train STUDENT --teacher TEACHER`: a zoo ERNIE student distils on a text corpus,
/// anything else on image data.
pub(super) fn run(mut a: TrainArgs) -> anyhow::Result<()> {
    let Some(teacher_spec) = a.distill.teacher_spec().map(str::to_string) else {
        bail!("distillation needs --teacher MODEL or --distill-from MODEL");
    };
    if a.distill.mode() == "frozen" && a.distill.teacher_weights.is_none() && a.resume.is_none() {
        let flag = if a.distill.ssld() {
            "--distill-from"
        } else {
            "--distill frozen"
        };
        bail!(
            "{flag} keeps the teacher's weights fixed: give trained ones with \
             --teacher-weights FILE (e.g. shard-00000-of-00001.safetensors of `oar train {teacher_spec} --save DIR`)"
        );
    }
    if let Some(cfg) = oar::models::ernie_config(&a.model) {
        if a.distill.unlabeled.is_some() {
            bail!("--unlabeled adds image shards to an image classifier's data; {} trains on a text corpus", a.model);
        }
        return run_text(a, cfg, &teacher_spec);
    }
    if a.text.ernie_overrides() {
        bail!(
            "--teacher-layers/-hidden/-heads/-ffn and --hidden-mse size and match ERNIE models; \
             {} is not a zoo ERNIE",
            a.model
        );
    }
    let data = load_dir(&a.data)?;
    let pair = DistillPair {
        teacher: image_model(&teacher_spec, &a, &data)?,
        student: image_model(&a.model, &a, &data)?,
        hard: LossKind::CrossEntropy {
            label_smoothing: a.label_smoothing,
        },
        hidden: Vec::new(),
    };
    // The joint step has its own loss; the flags' optimizer settings apply to it.
    let optim = train_config(&a, pair.hard.clone())?.optim;
    let s = setup(&pair, &a.distill, optim)?;
    let scratch = initial_weights(&mut a, &pair)?;
    let spec = joint_spec(&a, &teacher_spec);
    let result = train_graph(
        s.step.graph.clone(),
        Some(s.student_eval.clone()),
        &spec,
        &a,
    );
    remove_scratch(scratch);
    let state = result?;
    let seed = state.loader.config().seed;
    let (_, val) = data.split(a.holdout, seed)?;
    report(&s, &state, &val, seed, &a)?;
    save_split(&pair, &state.weights, &a)
}

/// A zoo ERNIE student and teacher on a text corpus: both masked LMs over one tokenizer
/// (the student sized by `--layers …`, the teacher by `--teacher-layers …`), the masked-LM
/// loss for both and the soft loss over the masked (scored) positions, and with
/// `--hidden-mse W` the MSE between the last encoder layers' outputs.
fn run_text(mut a: TrainArgs, student: ErnieConfig, teacher_spec: &str) -> anyhow::Result<()> {
    let Some(teacher) = oar::models::ernie_config(teacher_spec) else {
        bail!(
            "{}: an ERNIE student distils from a zoo ERNIE teacher (`oar models`, e.g. ernie-3.0-mini-zh), not \
             `{teacher_spec}`",
            a.model
        );
    };
    let data: TextData = text::prepare(&a.model, &a)?;
    let scfg = text::student_config(student, &a, data.wp.len());
    let tcfg = text::teacher_config(teacher, &a, data.wp.len());
    let student = text::masked_lm(&scfg, &a.model, &a)?;
    let teacher = text::masked_lm(&tcfg, teacher_spec, &a)?;
    let hidden = match a.text.hidden_mse {
        w if w > 0.0 => vec![FeatureMatch {
            student: last_hidden(&student, &scfg, "student")?,
            teacher: last_hidden(&teacher, &tcfg, "teacher")?,
            weight: w,
        }],
        _ => Vec::new(),
    };
    let pair = DistillPair {
        teacher,
        student,
        hard: LossKind::MaskedLm,
        hidden,
    };
    let optim = train_config(&a, LossKind::MaskedLm)?.optim;
    let s = setup(&pair, &a.distill, optim)?;
    let scratch = initial_weights(&mut a, &pair)?;
    let spec = joint_spec(&a, teacher_spec);
    let about = format!(
        "student {}, teacher {}",
        text::shape(&scfg),
        text::shape(&tcfg)
    );
    let result = text::launch(
        s.step.graph.clone(),
        s.student_eval.clone(),
        &spec,
        &a,
        data,
        about,
    );
    remove_scratch(scratch);
    let (state, val) = result?;
    report(&s, &state, &val, state.loader.config().seed, &a)?;
    save_split(&pair, &state.weights, &a)
}

/// The name of the node holding the last encoder layer's output in an ERNIE masked LM: the
/// layer norm that reads `ernie.encoder.layers.{L-1}.norm2.weight`.
fn last_hidden(model: &Graph, cfg: &ErnieConfig, role: &str) -> anyhow::Result<String> {
    let weight = format!(
        "ernie.encoder.layers.{}.norm2.weight",
        cfg.universal.layers.saturating_sub(1)
    );
    let reads_weight =
        |v: &oar::ir::ValueRef| matches!(&model.node(v.node).op, Op::Param(p) if p.name == weight);
    model
        .iter()
        .find(|(_, n)| matches!(n.op, Op::LayerNorm { .. }) && n.inputs.iter().any(reads_weight))
        .map(|(_, n)| n.name.clone())
        .with_context(|| format!("the {role} has no layer norm reading `{weight}`"))
}

/// How the run names itself in messages and checkpoints.
fn joint_spec(a: &TrainArgs, teacher_spec: &str) -> String {
    format!(
        "{} (teacher {teacher_spec}, {})",
        a.model,
        if a.distill.ssld() {
            "ssld"
        } else {
            a.distill.mode()
        }
    )
}

/// The loop reads initial weights from one file: with `--teacher-weights` (and no
/// `--resume`), the teacher's renamed into the joint step plus any `--weights` (joint
/// names) go to a scratch file, which `a.weights` then names. Returns that file.
fn initial_weights(a: &mut TrainArgs, pair: &DistillPair) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = a
        .distill
        .teacher_weights
        .as_ref()
        .filter(|_| a.resume.is_none())
    else {
        return Ok(None);
    };
    let own = load_safetensors(path)
        .with_context(|| format!("cannot read --teacher-weights {}", path.display()))?;
    let mut joint = renamed_params(&own, &pair.teacher, TEACHER_PREFIX)
        .with_context(|| format!("--teacher-weights {}", path.display()))?;
    if let Some(p) = &a.weights {
        joint.extend(load_safetensors(p)?);
    }
    let file = std::env::temp_dir().join(format!(
        "oar-distill-init-{}.safetensors",
        std::process::id()
    ));
    save_safetensors(&file, &joint)?;
    a.weights = Some(file.clone());
    Ok(Some(file))
}

fn remove_scratch(file: Option<PathBuf>) {
    if let Some(f) = file {
        // Best effort: a leftover scratch file in the temp dir is harmless.
        let _ = std::fs::remove_file(f);
    }
}

/// The teacher's parameters in `own` (its own names) under `prefix`; each must be there.
fn renamed_params(own: &Weights, model: &Graph, prefix: &str) -> anyhow::Result<Weights> {
    let mut out = Weights::new();
    for (_, n) in model.iter() {
        if let oar::ir::op::Op::Param(p) = &n.op {
            let t = own
                .get(&p.name)
                .with_context(|| format!("no tensor `{}` for the teacher", p.name))?;
            out.insert(format!("{prefix}{}", p.name), t.clone());
        }
    }
    Ok(out)
}

/// Both models on the validation split (accuracy; for text, token accuracy and the
/// validation MLM loss).
fn report<L: BatchSource>(
    s: &DistillSetup,
    state: &TrainState<L>,
    val: &L::Validation,
    seed: u64,
    a: &TrainArgs,
) -> anyhow::Result<()> {
    if L::validation_len(val) == 0 {
        return Ok(());
    }
    for (who, eval) in [("student", &s.student_eval), ("teacher", &s.teacher_eval)] {
        let mut runner =
            InterpRunner::new(s.step.graph.clone(), seed)?.with_eval_graph(eval.clone());
        let r = evaluate(&mut runner, state, val, a.batch)?;
        match r.tokens {
            Some(tokens) => println!(
                "{who} eval accuracy {:.2}% MLM loss {:.4} on {tokens} masked tokens",
                100.0 * r.eval_accuracy,
                r.eval_loss
            ),
            None => println!(
                "{who} eval accuracy {:.2}% on {} samples",
                100.0 * r.eval_accuracy,
                r.samples
            ),
        }
    }
    Ok(())
}

/// With `--save`, each model's weights under its own names next to the checkpoints.
fn save_split(pair: &DistillPair, weights: &Weights, a: &TrainArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.save {
        let (tw, sw) = split_weights(weights, &pair.teacher, &pair.student)?;
        for (name, w) in [("teacher", tw), ("student", sw)] {
            let path = dir.join(format!("{name}.safetensors"));
            save_safetensors(&path, &w)?;
            println!("{name} weights in {}", path.display());
        }
    }
    Ok(())
}

/// The log names of a step's scalar outputs after the logits: a distillation step's
/// (`build_online_distill_step`: teacher loss, student loss, distillation term); none for a
/// plain step.
pub(super) fn loss_parts(graph: &Graph) -> Vec<String> {
    use oar::passes::training::online::{LOSS_PARTS, TEACHER_PREFIX};
    let joint = graph.iter().any(
        |(_, n)| matches!(&n.op, oar::ir::op::Op::Param(p) if p.name.starts_with(TEACHER_PREFIX)),
    );
    if joint && graph.model_outputs().len() == 2 + LOSS_PARTS.len() {
        LOSS_PARTS.map(String::from).to_vec()
    } else {
        Vec::new()
    }
}
