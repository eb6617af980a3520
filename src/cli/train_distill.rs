//! `oar train STUDENT --teacher TEACHER`: distillation with the teacher in the step
//! (`passes::training::online`). `--distill online` trains both models at once (each on its
//! hard loss, the student also on the teacher's softened logits); `--distill frozen` keeps
//! the teacher's weights (`--teacher-weights`, e.g. a checkpoint of an earlier run) fixed.
//!
//! A model family plugs in with a [`DistillPair`] — its two inference models with static
//! shapes and its hard loss — and [`setup`]; the image classifiers below are one such front
//! end, feeding the joint step to the ordinary image loop (`train_graph`), which evaluates
//! the student; the teacher is evaluated after the run.

use super::{train_config, train_graph, TrainArgs};
use anyhow::{bail, Context};
use clap::Args;
use oar::ir::Graph;
use oar::passes::parallel::partition::specialize;
use oar::passes::training::online::{prefixed, STUDENT_PREFIX, TEACHER_PREFIX};
use oar::passes::training::{
    build_online_distill_step, split_weights, LossKind, OnlineDistill, OptimConfig, SoftLoss,
    TeacherMode, TrainStep,
};
use oar::runtime::data::{load_dir, Dataset};
use oar::runtime::io::weights::{load_safetensors, save_safetensors};
use oar::runtime::train::{evaluate, InterpRunner, TrainState};
use oar::runtime::Weights;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DistillArgs {
    /// Distil from this teacher (a zoo image classifier such as `lcnet_x0_5`, or an inference
    /// graph file taking the same input as the student): the model above is the student.
    #[arg(long, value_name = "MODEL")]
    pub(super) teacher: Option<String>,
    /// `online`: teacher and student train in the same step; `frozen`: the teacher's
    /// weights stay fixed (give them with --teacher-weights).
    #[arg(long, value_name = "MODE", default_value = "online", value_parser = ["online", "frozen"])]
    distill: String,
    /// Weight of the soft (teacher) term; the student's hard loss gets 1 − alpha.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Softmax temperature of the soft term (scaled by T² so its gradient keeps its size).
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// How the softened distributions are compared.
    #[arg(long, default_value = "kl", value_parser = ["kl", "soft-ce"])]
    soft_loss: String,
    /// The teacher's initial weights (safetensors under the teacher's own parameter names,
    /// e.g. `weights.safetensors` of an `oar train TEACHER --save` checkpoint).
    #[arg(long, value_name = "FILE", requires = "teacher")]
    teacher_weights: Option<PathBuf>,
}

/// What a model family supplies: two inference models with static shapes whose first
/// outputs are the logits, taking the same inputs, and the hard loss both train on.
pub(crate) struct DistillPair {
    pub teacher: Graph,
    pub student: Graph,
    pub hard: LossKind,
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
        temperature: d.temperature,
        alpha: d.alpha,
        soft: match d.soft_loss.as_str() {
            "kl" => SoftLoss::Kl,
            "soft-ce" => SoftLoss::SoftCrossEntropy,
            other => bail!("unknown --soft-loss `{other}`; known: kl, soft-ce"),
        },
        teacher: match d.distill.as_str() {
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
    let cfg = config(d, optim, pair.hard.clone())?;
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

/// `oar train STUDENT --teacher TEACHER` on image data.
pub(super) fn run(mut a: TrainArgs) -> anyhow::Result<()> {
    let Some(teacher_spec) = a.distill.teacher.clone() else {
        bail!("distillation needs --teacher MODEL");
    };
    if a.distill.distill == "frozen" && a.distill.teacher_weights.is_none() && a.resume.is_none() {
        bail!(
            "--distill frozen keeps the teacher's weights fixed: give trained ones with \
             --teacher-weights FILE (e.g. weights.safetensors of `oar train {teacher_spec} --save DIR`)"
        );
    }
    let data = load_dir(&a.data)?;
    let pair = DistillPair {
        teacher: image_model(&teacher_spec, &a, &data)?,
        student: image_model(&a.model, &a, &data)?,
        hard: LossKind::CrossEntropy {
            label_smoothing: a.label_smoothing,
        },
    };
    // The joint step has its own loss; the flags' optimizer settings apply to it.
    let optim = train_config(&a, pair.hard.clone())?.optim;
    let s = setup(&pair, &a.distill, optim)?;
    // The loop reads initial weights from one file: the teacher's, renamed into the joint
    // step, plus any --weights (joint names), written to a scratch file for the run.
    let scratch = match &a.distill.teacher_weights {
        Some(path) if a.resume.is_none() => {
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
            Some(file)
        }
        _ => None,
    };
    let spec = format!(
        "{} (teacher {teacher_spec}, {})",
        a.model, a.distill.distill
    );
    let result = train_graph(
        s.step.graph.clone(),
        Some(s.student_eval.clone()),
        &spec,
        &a,
    );
    if let Some(f) = scratch {
        // Best effort: a leftover scratch file in the temp dir is harmless.
        let _ = std::fs::remove_file(f);
    }
    let state = result?;
    report(
        &s.step,
        [s.student_eval, s.teacher_eval],
        &pair,
        &state,
        &a,
        &data,
    )
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

/// Both models' accuracy on the held-out split, and (with --save) each model's weights
/// under its own names next to the checkpoints.
fn report(
    step: &TrainStep,
    [student_eval, teacher_eval]: [Graph; 2],
    pair: &DistillPair,
    state: &TrainState,
    a: &TrainArgs,
    data: &Dataset,
) -> anyhow::Result<()> {
    let seed = state.loader.config().seed;
    let (_, val) = data.split(a.holdout, seed)?;
    if !val.is_empty() {
        for (who, eval) in [("student", student_eval), ("teacher", teacher_eval)] {
            let mut runner = InterpRunner::new(step.graph.clone(), seed)?.with_eval_graph(eval);
            let r = evaluate(&mut runner, state, &val, a.batch)?;
            println!(
                "{who} eval accuracy {:.2}% on {} samples",
                100.0 * r.eval_accuracy,
                r.samples
            );
        }
    }
    if let Some(dir) = &a.save {
        let (tw, sw) = split_weights(&state.weights, &pair.teacher, &pair.student)?;
        for (name, w) in [("teacher", tw), ("student", sw)] {
            let path = dir.join(format!("{name}.safetensors"));
            save_safetensors(&path, &w)?;
            println!("{name} weights in {}", path.display());
        }
    }
    Ok(())
}
