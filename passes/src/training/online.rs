//! Online distillation: a teacher and a student in one training step.
//!
//! [`build_online_distill_step`] copies both models into one graph — parameters and nodes
//! renamed under [`TEACHER_PREFIX`] / [`STUDENT_PREFIX`] so they never collide, graph inputs
//! of the same name shared (both read the same batch) — and minimises
//!
//! `L = L_hard(teacher) + (1 − α)·L_hard(student) + α·T²·soft(student ‖ sg(teacher))
//!      + Σ wᵢ·MSE(P·hᵢ(student), sg(hᵢ(teacher))) + Σ wⱼ·MSE(aⱼ(student), sg(aⱼ(teacher)))`
//!
//! with one optimizer over both models' parameters (ERNIE 3.0 Titan's online distillation;
//! the hidden-state and attention-map terms are TinyBERT's / ERNIE-Tiny's). `sg` is a
//! stop-gradient ([`append_backward_with`]): the distillation terms move only the student,
//! so the teacher's gradients are exactly those of its own hard loss. `P` is a learnable
//! projection, present only when the student's hidden width differs from the teacher's.
//! In [`TeacherMode::Frozen`] the teacher's parameters get no update and its hard loss is
//! not in `L`: the classic distillation from a fixed teacher, computed in the same graph
//! instead of fed as `teacher_logits`.
//!
//! The step follows the training-step contract: outputs `[loss, student logits,
//! teacher hard loss, student hard loss, distillation term]` (the last is everything in `L`
//! that couples the models: the weighted soft term and the feature-matching terms, so a
//! log can show `L` in its three parts) then the state updates; inputs the models' inputs,
//! `labels`, `lr`, `step` (and `apply` when accumulating). [`split_weights`] turns the joint
//! weights back into each model's own.

use super::emit::Emit;
use super::{
    batch_norm_training_form, labels_type, loss, optim, LossKind, OptimConfig, Optimizer, SoftLoss,
    TrainError, TrainStep, LABELS_INPUT, TEACHER_INPUT,
};
use crate::autodiff::append_backward_with;
use oar_ir::op::{BinaryOp, Init, Literal, MatMulAttrs, Op, ParamAttrs};
use oar_ir::{DType, Graph, TensorType, ValueRef};
use oar_runtime::Weights;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Prefix of the teacher's parameters and nodes in the joint graph.
pub const TEACHER_PREFIX: &str = "teacher.";
/// Prefix of the student's parameters and nodes in the joint graph.
pub const STUDENT_PREFIX: &str = "student.";
/// Prefix of the learnable hidden-state projections (`distill.proj.K`).
pub const PROJECTION_PREFIX: &str = "distill.proj.";
/// Names of the step's outputs 2, 3 and 4 (after the loss and the student's logits), as a
/// training log reports them.
pub const LOSS_PARTS: [&str; 3] = ["teacher_loss", "student_loss", "distill_loss"];

/// Whether the teacher trains in the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherMode {
    /// Teacher and student train together; the teacher's hard loss is part of `L`.
    Online,
    /// The teacher's parameters are not updated, its batch_norms and dropouts keep their
    /// inference form (running statistics, not updated; no masks); its hard loss is
    /// reported, not minimised.
    Frozen,
}

/// An intermediate-value matching term: `weight · MSE(student node, teacher node)`, node
/// names as in each model's own graph (their first output is matched).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMatch {
    pub student: String,
    pub teacher: String,
    pub weight: f64,
}

/// Configuration of an online-distillation step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineDistill {
    pub optim: OptimConfig,
    /// Both models' hard loss: [`LossKind::CrossEntropy`] or [`LossKind::MaskedLm`].
    pub hard: LossKind,
    pub temperature: f64,
    /// Weight of the soft term; the student's hard loss is weighted `1 − alpha`.
    pub alpha: f64,
    pub soft: SoftLoss,
    pub teacher: TeacherMode,
    /// Hidden-state MSE terms; a width mismatch (last dim) adds a learnable projection of
    /// the student's state, `[student width, teacher width]`.
    #[serde(default)]
    pub hidden: Vec<FeatureMatch>,
    /// Attention-map MSE terms; the two maps must have one type (same heads and length).
    #[serde(default)]
    pub attention: Vec<FeatureMatch>,
    /// Momentum of the running statistics of every training-form batch_norm.
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// Some rows carry no label ([`loss::IGNORE_INDEX`]: SSLD's unlabelled images): the
    /// hard losses score only the labelled rows, the soft term covers every row.
    #[serde(default)]
    pub unlabeled: bool,
}

fn default_bn_momentum() -> f64 {
    0.9
}

impl OnlineDistill {
    /// Online cross-entropy distillation at `T = 2`, `α = 0.5`, KL, with `optimizer`.
    pub fn new(optimizer: Optimizer) -> OnlineDistill {
        OnlineDistill {
            optim: OptimConfig::new(optimizer),
            hard: LossKind::CrossEntropy {
                label_smoothing: 0.0,
            },
            temperature: 2.0,
            alpha: 0.5,
            soft: SoftLoss::Kl,
            teacher: TeacherMode::Online,
            hidden: Vec::new(),
            attention: Vec::new(),
            bn_momentum: default_bn_momentum(),
            unlabeled: false,
        }
    }
}

/// The joint graph with its loss appended, before differentiation.
#[derive(Debug, Clone)]
pub struct OnlineLossGraph {
    pub graph: Graph,
    /// `L` (see the module docs).
    pub loss: ValueRef,
    pub student_logits: ValueRef,
    pub teacher_logits: ValueRef,
    /// The two models' own hard losses (the teacher's is in `L` only when online).
    pub teacher_hard: ValueRef,
    pub student_hard: ValueRef,
    /// `α·T²·soft + Σ feature terms`: the part of `L` that couples the two models.
    pub distill: ValueRef,
    /// The teacher-side values of the distillation terms: differentiate with
    /// [`append_backward_with`] and this set.
    pub stop: BTreeSet<ValueRef>,
    /// The names of the learnable projections the hidden-state terms added.
    pub projections: Vec<String>,
}

fn config(message: String) -> TrainError {
    TrainError::Config { message }
}

/// Checks a model the way [`super::append_loss`] does: logits first and f32, static
/// shapes, no input named like one the step adds. Returns the logits.
fn check_model(model: &Graph, role: &str) -> Result<ValueRef, TrainError> {
    let logits = *model.model_outputs().first().ok_or(TrainError::NoOutputs)?;
    for (_, n) in model.iter() {
        if let Some(t) = n.outputs.iter().find(|t| t.shape.as_static().is_none()) {
            return Err(TrainError::Symbolic {
                node: format!("{role} {}", n.name),
                ty: t.to_string(),
            });
        }
    }
    match model.value_type(logits) {
        Some(t) if t.dtype == DType::F32 => {}
        t => {
            return Err(TrainError::NonFloatLogits {
                node: format!("{role} {}", model.node(logits.node).name),
                ty: t.map_or("nothing".into(), ToString::to_string),
            })
        }
    }
    let reserved = [
        LABELS_INPUT,
        TEACHER_INPUT,
        optim::LR_INPUT,
        optim::STEP_INPUT,
        optim::APPLY_INPUT,
    ];
    for &id in model.inputs() {
        let name = &model.node(id).name;
        if reserved.contains(&name.as_str()) {
            return Err(config(format!(
                "the {role} has an input `{name}`, a name the training step adds; rename it"
            )));
        }
    }
    Ok(logits)
}

/// A model copied into the joint graph: the joint value of each of its nodes (port 0, by
/// node index) and its state updates, renamed, which the caller re-adds after the outputs.
struct Copied {
    map: Vec<ValueRef>,
    state: Vec<(String, ValueRef)>,
}

/// Copies `model` into `joint` with its nodes and parameters renamed under `prefix`; graph
/// inputs are shared by name (`shared`: name → (value in `joint`, type, the role that added
/// it)) and must agree in type. Fused functions and meshes are merged by name. With
/// `frozen`, each dropout becomes its inference form (`x · inference_scale`): a frozen
/// teacher gives the student its deterministic targets, as `teacher.eval()` does.
fn copy_into(
    joint: &mut Graph,
    model: &Graph,
    prefix: &str,
    role: &str,
    shared: &mut BTreeMap<String, (ValueRef, TensorType, String)>,
    frozen: bool,
) -> Result<Copied, TrainError> {
    for (name, body) in &model.functions {
        match joint.functions.get(name) {
            Some(have) if have != body => {
                return Err(config(format!(
                    "the two models have different fused functions named `{name}`"
                )))
            }
            _ => {
                joint.functions.insert(name.clone(), body.clone());
            }
        }
    }
    for (name, mesh) in &model.meshes {
        match joint.meshes.get(name) {
            Some(have) if have != mesh => {
                return Err(config(format!(
                    "the two models have different meshes named `{name}`"
                )))
            }
            _ => {
                joint.meshes.insert(name.clone(), mesh.clone());
            }
        }
    }
    let mut map: Vec<ValueRef> = Vec::with_capacity(model.len());
    for (_, n) in model.iter() {
        if matches!(n.op, Op::Input) {
            let ty = n.outputs[0].clone();
            let v = match shared.get(&n.name) {
                Some((v, have, _)) if *have == ty => *v,
                Some((_, have, other)) => {
                    return Err(config(format!(
                        "the {other} takes the input `{}` as {have} but the {role} as {ty}: \
                         online distillation feeds both models the same batch, so shared \
                         inputs must have one type",
                        n.name
                    )))
                }
                None => {
                    let v = joint.add_input(n.name.clone(), ty.clone());
                    shared.insert(n.name.clone(), (v, ty, role.to_string()));
                    v
                }
            };
            map.push(v);
            continue;
        }
        let mut op = n.op.clone();
        // Parameters move under the prefix; masks are drawn per node name, so a replayed
        // mask keeps pointing at its (renamed) source. Other ops are copied as they are.
        if let Op::Param(p) = &mut op {
            p.name = format!("{prefix}{}", p.name);
        } else if let Op::Dropout {
            mask_of: Some(m), ..
        } = &mut op
        {
            *m = format!("{prefix}{m}");
        }
        let inputs: Vec<ValueRef> = n.inputs.iter().map(|v| remap(&map, *v)).collect();
        if let (true, Op::Dropout { p, mode, .. }) = (frozen, &op) {
            let ty = TensorType::new(n.outputs[0].dtype, vec![]);
            let c = joint.add_node_typed(
                Op::Constant(Literal::Floats(vec![mode.inference_scale(*p)])),
                vec![],
                vec![ty],
                Some(format!("{prefix}{}.inference_scale", n.name)),
            )?;
            let id = joint.add_node(
                Op::Binary(BinaryOp::Mul),
                vec![inputs[0], c.into()],
                Some(format!("{prefix}{}", n.name)),
            )?;
            map.push(ValueRef::new(id, 0));
            continue;
        }
        let id = joint.add_node_typed(
            op,
            inputs,
            n.outputs.clone(),
            Some(format!("{prefix}{}", n.name)),
        )?;
        let copy = joint.node_mut(id);
        copy.dist = n.dist.clone();
        copy.device = n.device;
        map.push(ValueRef::new(id, 0));
    }
    let state = model
        .state_updates()
        .map(|(name, v)| (format!("{prefix}{name}"), remap(&map, v)))
        .collect();
    Ok(Copied { map, state })
}

/// The joint value of the model's value `v`: the node's copy, same port. `map` holds
/// port 0 of each copied node.
fn remap(map: &[ValueRef], v: ValueRef) -> ValueRef {
    ValueRef::new(map[v.node.index()].node, v.port)
}

/// The joint value of the node named `name` in the model (its first output).
fn find_value(model: &Graph, c: &Copied, name: &str, role: &str) -> Result<ValueRef, TrainError> {
    let id = model
        .find(name)
        .ok_or_else(|| config(format!("the {role} has no node named `{name}`")))?;
    Ok(c.map[id.index()])
}

/// A value of the teacher read by a distillation term: a copy (`x · 1`) only the term reads,
/// put in the stop set, so the teacher's own loss still differentiates through `x`.
fn stopped(
    e: &mut Emit,
    stop: &mut BTreeSet<ValueRef>,
    v: ValueRef,
) -> Result<ValueRef, TrainError> {
    let c = e.scale(v, 1.0)?;
    stop.insert(c);
    Ok(c)
}

fn hard_loss(
    e: &mut Emit,
    cfg: &OnlineDistill,
    logits: ValueRef,
    labels: ValueRef,
) -> Result<ValueRef, TrainError> {
    let kind = &cfg.hard;
    match kind {
        // Unlabelled rows: the masked form, which skips IGNORE_INDEX labels.
        LossKind::CrossEntropy { label_smoothing } if cfg.unlabeled => {
            if *label_smoothing != 0.0 {
                return Err(config(format!(
                    "label smoothing ({label_smoothing}) with unlabelled rows is not supported"
                )));
            }
            loss::masked_cross_entropy(e, logits, labels)
        }
        LossKind::CrossEntropy { label_smoothing } => {
            loss::softmax_cross_entropy(e, logits, labels, *label_smoothing)
        }
        LossKind::MaskedLm => loss::masked_cross_entropy(e, logits, labels),
        LossKind::Mse | LossKind::Distill { .. } | LossKind::ArcMargin { .. } => {
            Err(config(format!(
                "the hard loss of online distillation is cross_entropy or masked_lm, not {kind:?}"
            )))
        }
    }
}

fn check_weight(what: &str, w: f64) -> Result<(), TrainError> {
    if w.is_finite() && w >= 0.0 {
        Ok(())
    } else {
        Err(config(format!("{what} = {w} must be finite and ≥ 0")))
    }
}

/// Builds the joint graph and `L` (see the module docs); [`build_online_distill_step`]
/// differentiates it.
pub fn append_online_loss(
    teacher: &Graph,
    student: &Graph,
    cfg: &OnlineDistill,
) -> Result<OnlineLossGraph, TrainError> {
    if !(0.0..=1.0).contains(&cfg.alpha) {
        return Err(config(format!("alpha = {} must be in [0, 1]", cfg.alpha)));
    }
    let t_logits = check_model(teacher, "teacher")?;
    let s_logits = check_model(student, "student")?;
    let mut t = teacher.clone();
    if cfg.teacher == TeacherMode::Online {
        batch_norm_training_form(&mut t, cfg.bn_momentum)?;
    }
    let mut s = student.clone();
    batch_norm_training_form(&mut s, cfg.bn_momentum)?;

    let mut g = Graph::new(format!("distill_{}_{}", t.name, s.name));
    g.mode = oar_ir::ExecMode::Training;
    let mut shared = BTreeMap::new();
    let frozen = cfg.teacher == TeacherMode::Frozen;
    let tc = copy_into(&mut g, &t, TEACHER_PREFIX, "teacher", &mut shared, frozen)?;
    let sc = copy_into(&mut g, &s, STUDENT_PREFIX, "student", &mut shared, false)?;
    let (tl, sl) = (remap(&tc.map, t_logits), remap(&sc.map, s_logits));
    let lt = g.value_type(sl).cloned().ok_or(TrainError::NoOutputs)?;

    let mut stop = BTreeSet::new();
    let mut projections = Vec::new();
    let mut e = Emit::new(&mut g, "distill");
    let labels = e.input(LABELS_INPUT, labels_type(&lt))?;
    let teacher_hard = hard_loss(&mut e, cfg, tl, labels)?;
    let student_hard = hard_loss(&mut e, cfg, sl, labels)?;
    let target = stopped(&mut e, &mut stop, tl)?;
    let soft = match cfg.hard {
        // A masked LM is scored where the labels are: the soft term too, so it weighs the
        // positions the hard loss weighs (the others see the token itself in the input).
        LossKind::MaskedLm => {
            let rows = loss::distillation_rows(&mut e, sl, target, cfg.temperature, cfg.soft)?;
            let mean = loss::masked_mean(&mut e, rows, labels)?;
            e.scale(mean, cfg.temperature * cfg.temperature)?
        }
        _ => loss::distillation(&mut e, sl, target, cfg.temperature, cfg.soft)?,
    };
    let mut distill = e.scale(soft, cfg.alpha)?;
    for (k, m) in cfg.hidden.iter().enumerate() {
        check_weight(&format!("hidden-state term {k} weight"), m.weight)?;
        let sv = find_value(&s, &sc, &m.student, "student")?;
        let tv = find_value(&t, &tc, &m.teacher, "teacher")?;
        let tv = stopped(&mut e, &mut stop, tv)?;
        let (st, tt) = (e.ty(sv)?, e.ty(tv)?);
        let (ds, dt) = (last_dim(&st), last_dim(&tt));
        let sv = if ds != dt {
            let name = format!("{PROJECTION_PREFIX}{k}");
            let p = projection(&mut e, &name, ds, dt)?;
            projections.push(name);
            e.op(Op::MatMul(MatMulAttrs::default()), vec![sv, p], "proj")?
        } else {
            sv
        };
        let mse = loss::mean_squared_error(&mut e, sv, tv).map_err(|err| {
            config(format!(
                "hidden-state term `{}` ~ `{}` ({st} vs {tt}): {err}",
                m.student, m.teacher
            ))
        })?;
        let w = e.scale(mse, m.weight)?;
        distill = e.add(distill, w)?;
    }
    for (k, m) in cfg.attention.iter().enumerate() {
        check_weight(&format!("attention-map term {k} weight"), m.weight)?;
        let sv = find_value(&s, &sc, &m.student, "student")?;
        let tv = find_value(&t, &tc, &m.teacher, "teacher")?;
        let tv = stopped(&mut e, &mut stop, tv)?;
        let mse = loss::mean_squared_error(&mut e, sv, tv).map_err(|err| {
            config(format!(
                "attention-map term `{}` ~ `{}` (maps must have one type): {err}",
                m.student, m.teacher
            ))
        })?;
        let w = e.scale(mse, m.weight)?;
        distill = e.add(distill, w)?;
    }
    let b = e.scale(student_hard, 1.0 - cfg.alpha)?;
    let mut total = e.add(distill, b)?;
    if cfg.teacher == TeacherMode::Online {
        total = e.add(total, teacher_hard)?;
    }
    // The models' own state updates (running statistics), prefixed.
    for (name, v) in tc.state.into_iter().chain(sc.state) {
        g.add_state_update(name, v);
    }
    Ok(OnlineLossGraph {
        graph: g,
        loss: total,
        student_logits: sl,
        teacher_logits: tl,
        teacher_hard,
        student_hard,
        distill,
        stop,
        projections,
    })
}

fn last_dim(t: &TensorType) -> u64 {
    t.shape
        .0
        .last()
        .and_then(|d| d.as_static())
        .unwrap_or_default()
}

/// A learnable `[from, to]` projection, initialised like a linear layer (normal with std
/// `1/√from`) so it starts near an isometry in scale rather than at a symmetric constant.
fn projection(e: &mut Emit, name: &str, from: u64, to: u64) -> Result<ValueRef, TrainError> {
    if from == 0 || to == 0 {
        return Err(config(format!(
            "hidden-state projection `{name}`: the hidden states must have a static, non-empty last dim"
        )));
    }
    let op = Op::Param(ParamAttrs {
        name: name.to_string(),
        init: Some(Init::Normal {
            mean: 0.0,
            std: 1.0 / (from as f64).sqrt(),
        }),
    });
    let ty = TensorType::f32(&[from, to]);
    Ok(e.graph_mut()
        .add_node_typed(op, vec![], vec![ty], Some(name.to_string()))?
        .into())
}

/// Builds the online-distillation training step of `teacher` and `student` (see the module
/// docs): [`append_online_loss`], [`append_backward_with`] its stop set, then one optimizer
/// over every parameter that gets a gradient (the teacher's only when online).
/// `unused_params` lists trainable parameters that get no gradient, not counting a frozen
/// teacher's.
pub fn build_online_distill_step(
    teacher: &Graph,
    student: &Graph,
    cfg: &OnlineDistill,
) -> Result<TrainStep, TrainError> {
    let lg = append_online_loss(teacher, student, cfg)?;
    let bwd = append_backward_with(&lg.graph, lg.loss, false, &lg.stop)?;
    let mut g = bwd.graph;
    let outputs = vec![
        lg.loss,
        lg.student_logits,
        lg.teacher_hard,
        lg.student_hard,
        lg.distill,
    ];
    super::set_step_outputs(&mut g, outputs, |_| true);
    let frozen = cfg.teacher == TeacherMode::Frozen;
    let is_teacher = |name: &str| name.starts_with(TEACHER_PREFIX);
    // A frozen teacher gets no gradient (every path from it to `L` is stopped); filtering
    // keeps that true even if a term reached it some other way.
    let grads: Vec<(String, ValueRef)> = bwd
        .param_grads
        .into_iter()
        .filter(|(n, _)| !(frozen && is_teacher(n)))
        .collect();
    let slots = optim::insert_optimizer(&mut g, &grads, &cfg.optim)?;
    let unused = bwd
        .unused_params
        .into_iter()
        .filter(|n| !(frozen && is_teacher(n)))
        .collect();
    super::finish_step(g, slots, unused)
}

/// `model` with its parameters (and nodes) renamed under `prefix`: the inference graph that
/// reads one model's weights out of the joint weights (evaluation during training).
pub fn prefixed(model: &Graph, prefix: &str) -> Result<Graph, TrainError> {
    let mut g = Graph::new(model.name.clone());
    g.mode = model.mode;
    let c = copy_into(&mut g, model, prefix, "model", &mut BTreeMap::new(), false)?;
    g.set_outputs(
        model
            .model_outputs()
            .iter()
            .map(|v| remap(&c.map, *v))
            .collect(),
    );
    for (name, v) in c.state {
        g.add_state_update(name, v);
    }
    Ok(g)
}

/// Each model's own weights out of trained joint weights: the parameters of `teacher` and
/// `student` (by their names in those graphs) with the prefixes stripped. Optimizer state
/// and projections are left out; a parameter missing from `joint` is an error.
pub fn split_weights(
    joint: &Weights,
    teacher: &Graph,
    student: &Graph,
) -> Result<(Weights, Weights), TrainError> {
    let take = |model: &Graph, prefix: &str| -> Result<Weights, TrainError> {
        let mut w = Weights::new();
        for (_, n) in model.iter() {
            let Op::Param(p) = &n.op else { continue };
            let key = format!("{prefix}{}", p.name);
            let t = joint.get(&key).ok_or(TrainError::NoParam { name: key })?;
            w.insert(p.name.clone(), t.clone());
        }
        Ok(w)
    };
    Ok((
        take(teacher, TEACHER_PREFIX)?,
        take(student, STUDENT_PREFIX)?,
    ))
}
