//! Training steps: an inference model graph turned into one graph that computes the loss,
//! differentiates it and updates the parameters and optimizer state.
//!
//! [`build_train_step`] is the entry point. Its pieces are usable alone: [`loss`] builds
//! losses, [`optim::insert_optimizer`] adds clipping, accumulation and an optimizer's
//! updates given gradients, [`schedule`] gives the host-side learning rate. Everything that
//! runs per step is IR (state updates carry the new values, see `ir/README.md`), so the step
//! goes through the same passes and backends as inference; only the schedule runs on the
//! host and reaches the graph through the `lr` input.

pub mod arcmargin;
pub mod data_parallel;
mod emit;
pub mod loss;
pub mod online;
pub mod optim;
pub mod pipeline;
pub mod precision;
pub mod recompute;
pub mod sync_bn;
pub mod tensor_parallel;
mod update;
pub mod zero;

pub use emit::Emit;
pub use loss::SoftLoss;
pub use oar_runtime::train::schedule::{self, Decay, Schedule};
pub use online::{
    build_online_distill_step, split_weights, FeatureMatch, OnlineDistill, TeacherMode,
};
pub use optim::{DecayMask, OptimConfig, Optimizer, Slot, OPTIMIZER_NAMES};
pub use precision::{LossScaling, Precision, PRECISION_NAMES};
pub use recompute::{Recompute, RecomputeConfig, RECOMPUTE_NAMES};

use crate::autodiff::{append_backward_with, AutodiffError};
use oar_ir::op::Op;
use oar_ir::{DType, ExecMode, Graph, NodeError, TensorType, ValueRef};
use oar_runtime::{HostTensor, Weights};
use serde::{Deserialize, Serialize};

/// Why a training step could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the model has no outputs; its first output must be the logits")]
    NoOutputs,
    #[error("the logits (the model's first output, `{node}`) must be f32, found {ty}")]
    NonFloatLogits { node: String, ty: String },
    #[error("`{node}` has the symbolic type {ty}; a training step needs static shapes (bind the symbols first, e.g. --batch)")]
    Symbolic { node: String, ty: String },
    #[error(
        "batch_norm `{node}`: its running {which} is not a parameter, so training cannot update it"
    )]
    BatchNormStats { node: String, which: &'static str },
    #[error("unknown optimizer `{name}`; known: {known}")]
    UnknownOptimizer { name: String, known: String },
    #[error("invalid training configuration: {message}")]
    Config { message: String },
    #[error("the graph already has a parameter `{name}`, the name of a new optimizer slot (was the optimizer inserted twice?)")]
    SlotTaken { name: String },
    #[error("no parameter named `{name}` in the graph")]
    NoParam { name: String },
    #[error("the gradient of `{param}` ({grad_ty}) does not match the parameter ({param_ty})")]
    GradType {
        param: String,
        param_ty: String,
        grad_ty: String,
    },
    #[error("the graph input `{name}` exists as {found}, but the training step needs {want}")]
    InputType {
        name: String,
        want: String,
        found: String,
    },
    #[error("loss: the {what} must be {want}, found {found}")]
    LossOperand {
        what: String,
        want: String,
        found: String,
    },
    #[error("differentiating the loss: {0}")]
    Autodiff(#[from] AutodiffError),
    #[error("building `{node}`: {message}")]
    Graph { node: String, message: String },
    #[error("the training step does not verify: {0}")]
    Verify(String),
}

impl From<NodeError> for TrainError {
    fn from(e: NodeError) -> TrainError {
        TrainError::Graph {
            node: e.node.clone(),
            message: e.detail().to_string(),
        }
    }
}

/// The loss a training step minimises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LossKind {
    /// Softmax cross-entropy against an `i64` input `labels` (see
    /// [`loss::softmax_cross_entropy`]).
    CrossEntropy {
        #[serde(default)]
        label_smoothing: f64,
    },
    /// Mean squared error against an input `labels` of the logits' type.
    Mse,
    /// Masked language modelling: softmax cross-entropy against `i64` token ids `labels`,
    /// scored only where the label is not [`loss::IGNORE_INDEX`] (see
    /// [`loss::masked_cross_entropy`]).
    MaskedLm,
    /// Knowledge distillation: `alpha·T²·soft(student/T, teacher/T) + (1 − alpha)·CE`, the
    /// teacher's logits an input `teacher_logits` of the logits' type after `labels`.
    Distill {
        temperature: f64,
        alpha: f64,
        soft: SoftLoss,
    },
    /// Metric learning (PP-ShiTu): the model's first output is an embedding `f32[N, D]`;
    /// an ArcMargin head over `classes` classes (additive angular `margin`, logit `scale`)
    /// and softmax cross-entropy against `i64` `labels` (see [`arcmargin::arc_margin`]).
    /// The step's logits are `scale·cos θ` without the margin.
    ArcMargin {
        classes: u64,
        margin: f64,
        scale: f64,
    },
}

/// A training step's configuration (serialisable, e.g. from a TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optim: OptimConfig,
    pub loss: LossKind,
    /// Momentum of the running statistics of every batch_norm (Paddle's 0.9 by default).
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// Compute precision (see [`precision`]); f32 by default.
    #[serde(default)]
    pub precision: Precision,
    /// Dynamic loss scaling, used with `precision = fp16`.
    #[serde(default)]
    pub loss_scaling: LossScaling,
    /// Activation recomputation (see [`recompute`]); none by default.
    #[serde(default)]
    pub recompute: RecomputeConfig,
}

fn default_bn_momentum() -> f64 {
    0.9
}

impl TrainConfig {
    /// Cross-entropy training with `optimizer`, defaults elsewhere.
    pub fn new(optimizer: Optimizer) -> TrainConfig {
        TrainConfig {
            optim: OptimConfig::new(optimizer),
            loss: LossKind::CrossEntropy {
                label_smoothing: 0.0,
            },
            bn_momentum: default_bn_momentum(),
            precision: Precision::default(),
            loss_scaling: LossScaling::default(),
            recompute: RecomputeConfig::default(),
        }
    }
}

/// Input names the training step adds after the model's inputs.
pub const LABELS_INPUT: &str = "labels";
pub const TEACHER_INPUT: &str = "teacher_logits";

/// A built training step.
#[derive(Debug, Clone)]
pub struct TrainStep {
    /// Outputs `[loss, logits]`, then the state updates (running statistics, parameters,
    /// optimizer state).
    pub graph: Graph,
    /// Graph input names in order: the model's, `labels`, `teacher_logits` (distillation),
    /// `lr`, `step`, `apply` (accumulation).
    pub inputs: Vec<String>,
    /// The optimizer state the step created (not in the model's weights).
    pub slots: Vec<Slot>,
    /// Trainable parameters the loss does not depend on: they are never updated.
    pub unused_params: Vec<String>,
    /// Where a ZeRO rank's sharded optimizer state lives (`None` without ZeRO).
    pub zero: Option<zero::ZeroLayout>,
    /// Each parameter's gradient as the backward gives it (before clipping and the
    /// update), as (parameter, node name, output port); empty for a data-parallel step.
    /// Tensor parallelism declares placements on them (`tensor_parallel`).
    pub gradients: Vec<(String, String, u32)>,
}

impl TrainStep {
    /// Initial optimizer state: each slot filled with its initial value.
    pub fn init_state(&self) -> Weights {
        self.slots
            .iter()
            .map(|s| {
                let dims: Vec<usize> =
                    s.ty.shape
                        .as_static()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|d| d as usize)
                        .collect();
                let n = dims.iter().product();
                (
                    s.name.clone(),
                    HostTensor::f32(dims, vec![s.init as f32; n]),
                )
            })
            .collect()
    }
}

/// A model in training form with its loss appended, before differentiation.
#[derive(Debug, Clone)]
pub struct LossGraph {
    /// The model's outputs and state updates are unchanged (batch_norm's new running
    /// statistics added); the loss is not an output yet.
    pub graph: Graph,
    pub loss: ValueRef,
    pub logits: ValueRef,
}

/// The first half of [`build_train_step`]: checks the model, switches it to training form
/// and appends the labels input(s) and the loss.
pub fn append_loss(model: &Graph, cfg: &TrainConfig) -> Result<LossGraph, TrainError> {
    let logits = *model.model_outputs().first().ok_or(TrainError::NoOutputs)?;
    for (_, n) in model.iter() {
        for t in &n.outputs {
            if t.shape.as_static().is_none() {
                return Err(TrainError::Symbolic {
                    node: n.name.clone(),
                    ty: t.to_string(),
                });
            }
        }
    }
    let lt = model
        .value_type(logits)
        .cloned()
        .ok_or(TrainError::NoOutputs)?;
    if lt.dtype != DType::F32 {
        return Err(TrainError::NonFloatLogits {
            node: model.node(logits.node).name.clone(),
            ty: lt.to_string(),
        });
    }
    // The step adds these inputs; a model input of the same name would be taken for them.
    for &id in model.inputs() {
        let name = &model.node(id).name;
        if [
            LABELS_INPUT,
            TEACHER_INPUT,
            optim::LR_INPUT,
            optim::STEP_INPUT,
            optim::APPLY_INPUT,
        ]
        .contains(&name.as_str())
        {
            return Err(TrainError::Config {
                message: format!(
                    "the model has an input `{name}`, a name the training step adds; rename it"
                ),
            });
        }
    }
    let mut g = model.clone();
    batch_norm_training_form(&mut g, cfg.bn_momentum)?;

    let mut e = Emit::new(&mut g, "loss");
    let mut logits = logits;
    let loss = match &cfg.loss {
        LossKind::CrossEntropy { label_smoothing } => {
            let labels = e.input(LABELS_INPUT, labels_type(&lt))?;
            loss::softmax_cross_entropy(&mut e, logits, labels, *label_smoothing)?
        }
        LossKind::MaskedLm => {
            let labels = e.input(LABELS_INPUT, labels_type(&lt))?;
            loss::masked_cross_entropy(&mut e, logits, labels)?
        }
        LossKind::Mse => {
            let labels = e.input(LABELS_INPUT, lt.clone())?;
            loss::mean_squared_error(&mut e, logits, labels)?
        }
        LossKind::Distill {
            temperature,
            alpha,
            soft,
        } => {
            let labels = e.input(LABELS_INPUT, labels_type(&lt))?;
            let teacher = e.input(TEACHER_INPUT, lt.clone())?;
            let hard = loss::softmax_cross_entropy(&mut e, logits, labels, 0.0)?;
            let soft = loss::distillation(&mut e, logits, teacher, *temperature, *soft)?;
            let a = e.scale(soft, *alpha)?;
            let b = e.scale(hard, 1.0 - alpha)?;
            e.add(a, b)?
        }
        LossKind::ArcMargin {
            classes,
            margin,
            scale,
        } => {
            let labels = e.input(LABELS_INPUT, labels_type(&lt))?;
            let (loss, cos_logits) =
                arcmargin::arc_margin(&mut e, logits, labels, *classes, *margin, *scale)?;
            logits = cos_logits;
            loss
        }
    };
    Ok(LossGraph {
        graph: g,
        loss,
        logits,
    })
}

/// Builds the training step of `model` (see the module docs and [`TrainStep`]):
/// [`append_loss`], `append_backward`, then [`optim::insert_optimizer`]. The model's outputs
/// after the logits are not outputs of the step.
pub fn build_train_step(model: &Graph, cfg: &TrainConfig) -> Result<TrainStep, TrainError> {
    build_step(model, cfg, None)
}

/// [`build_train_step`], optionally as one rank of a data-parallel group (see
/// [`data_parallel`]).
pub(crate) fn build_step(
    model: &Graph,
    cfg: &TrainConfig,
    dp: Option<&data_parallel::DataParallel>,
) -> Result<TrainStep, TrainError> {
    let LossGraph {
        graph,
        loss,
        logits,
    } = append_loss(model, cfg)?;
    let (graph, mapped) =
        precision::cast_compute(&graph, cfg.precision.compute_dtype(), &[loss, logits])?;
    let [loss, logits] = mapped[..] else {
        return Err(TrainError::Verify("cast_compute lost the loss".into()));
    };
    if let Some(dp) = dp.filter(|d| d.zero_stage > 0) {
        zero::check_config(cfg, dp)?;
    }
    let forward_len = graph.len();
    let (mut graph, [loss, logits], dist) = match dp {
        Some(dp) => {
            let (g, d) = data_parallel_forward(graph, [loss, logits], cfg, dp)?;
            (g, [d.loss, d.logits], Some(d))
        }
        None => (graph, [loss, logits], None),
    };
    let stop = dist
        .as_ref()
        .map(|d| d.sync.stop.clone())
        .unwrap_or_default();
    // fp16: differentiate the scaled loss; the step still outputs the unscaled one.
    let (scaler, diff) = match cfg.precision {
        Precision::Fp16 => {
            let (s, scaled) = precision::Scaler::scale_loss(&mut graph, loss, &cfg.loss_scaling)?;
            (Some(s), scaled)
        }
        Precision::Fp32 | Precision::Bf16 => (None, loss),
    };
    let bwd_start = graph.len();
    let bwd = append_backward_with(&graph, diff, false, &stop)?;
    let mut g = bwd.graph;
    let (loss, param_grads) = match (dp, dist) {
        (Some(dp), Some(d)) => {
            // SyncBatchNorm: the gradients through the global statistics.
            let mut keep = vec![loss, logits, d.share];
            keep.extend(bwd.param_grads.iter().map(|(_, v)| *v));
            let (spliced, kept) = sync_bn::splice(&g, &d.sync.bns, d.share, &keep)?;
            g = spliced;
            let [loss, logits, share] = [kept[0], kept[1], kept[2]];
            let grads: Vec<(String, ValueRef)> = bwd
                .param_grads
                .into_iter()
                .zip(&kept[3..])
                .map(|((n, _), v)| (n, *v))
                .collect();
            let loss = data_parallel::global_loss(&mut g, loss, share)?;
            if dp.zero_stage > 0 {
                let grads = (grads, bwd.unused_params);
                let at = (forward_len, bwd_start);
                return build_zero(g, (loss, logits), share, grads, cfg, dp, at);
            }
            let grads = data_parallel::combine_gradients(&mut g, grads, share, dp)?;
            (loss, grads)
        }
        _ => (loss, bwd.param_grads),
    };
    let gradients: Vec<(String, String, u32)> = param_grads
        .iter()
        .map(|(p, v)| (p.clone(), g.node(v.node).name.clone(), v.port))
        .collect();
    // Outputs: loss and logits, then the state updates the forward already had (less the
    // loss scaler's placeholders, which `unscale` replaces).
    set_step_outputs(&mut g, vec![loss, logits], |n| {
        scaler.is_none() || !precision::Scaler::names().contains(&n)
    });
    let decays = |name: &str, ty: &TensorType| cfg.optim.decay_mask.decays(name, ty);
    let slots = match &scaler {
        Some(s) => {
            let (grads, gate) = s.unscale(&mut g, &param_grads)?;
            let mut slots =
                optim::insert_optimizer_gated(&mut g, &grads, &cfg.optim, &decays, Some(gate))?;
            slots.extend(s.slots());
            slots
        }
        None => optim::insert_optimizer(&mut g, &param_grads, &cfg.optim)?,
    };
    let (g, _) = recompute::recompute(&g, forward_len, &cfg.recompute)?;
    let mut step = finish_step(g, slots, bwd.unused_params)?;
    if dp.is_none() {
        step.gradients = gradients;
    }
    Ok(step)
}

/// The forward of a data-parallel rank: the rank's loss share, and batch_norm over global
/// statistics ([`sync_bn`]).
struct DpForward {
    loss: ValueRef,
    logits: ValueRef,
    share: ValueRef,
    sync: sync_bn::Decomposed,
}

fn data_parallel_forward(
    mut graph: Graph,
    [loss, logits]: [ValueRef; 2],
    cfg: &TrainConfig,
    dp: &data_parallel::DataParallel,
) -> Result<(Graph, DpForward), TrainError> {
    let share = data_parallel::loss_share(&mut graph, &cfg.loss, dp)?;
    let mut sync = sync_bn::decompose(&graph, dp.size, &[loss, logits, share])?;
    let graph = std::mem::take(&mut sync.graph);
    let [loss, logits, share] = [sync.kept[0], sync.kept[1], sync.kept[2]];
    Ok((
        graph,
        DpForward {
            loss,
            logits,
            share,
            sync,
        },
    ))
}

/// The rest of [`build_step`] under ZeRO (see [`zero`]): sharded reduction, update and
/// parameter gather instead of the replicated optimizer.
fn build_zero(
    mut g: Graph,
    (loss, logits): (ValueRef, ValueRef),
    share: ValueRef,
    (grads, unused): (Vec<(String, ValueRef)>, Vec<String>),
    cfg: &TrainConfig,
    dp: &data_parallel::DataParallel,
    (forward_len, bwd_start): (usize, usize),
) -> Result<TrainStep, TrainError> {
    let red = zero::reduce(&mut g, grads, share, &cfg.optim.optimizer, dp)?;
    set_step_outputs(&mut g, vec![loss, logits], |_| true);
    let decays = |name: &str, ty: &TensorType| cfg.optim.decay_mask.decays(name, ty);
    let slots = zero::insert_update(&mut g, &red, &cfg.optim, &decays)?;
    if red.layout.stage >= 3 {
        g = zero::gather_for_use(&g, &red.layout, bwd_start)?;
    }
    let (g, _) = recompute::recompute(&g, forward_len, &cfg.recompute)?;
    let mut step = finish_step(g, slots, unused)?;
    step.zero = Some(red.layout);
    Ok(step)
}

/// Makes `outputs` the step's outputs, followed by the state updates the graph already had
/// (those `keep` accepts, by name).
pub(crate) fn set_step_outputs(g: &mut Graph, outputs: Vec<ValueRef>, keep: impl Fn(&str) -> bool) {
    let old: Vec<(String, ValueRef)> = g
        .state_updates()
        .filter(|(n, _)| keep(n))
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    g.state.clear();
    g.set_outputs(outputs);
    for (n, v) in old {
        g.add_state_update(n, v);
    }
}

/// Orders and verifies a built step and lists its inputs.
pub(crate) fn finish_step(
    mut g: Graph,
    slots: Vec<Slot>,
    unused_params: Vec<String>,
) -> Result<TrainStep, TrainError> {
    g.canonicalize_order();
    oar_ir::verify(&g).map_err(|e| TrainError::Verify(e.to_string()))?;
    let inputs = g
        .inputs()
        .iter()
        .map(|&id| g.node(id).name.clone())
        .collect();
    Ok(TrainStep {
        graph: g,
        inputs,
        slots,
        unused_params,
        zero: None,
        gradients: Vec::new(),
    })
}

/// `i64` class ids: the logits' type without its class axis.
fn labels_type(logits: &TensorType) -> TensorType {
    let mut dims = logits.shape.0.clone();
    dims.pop();
    TensorType::new(DType::I64, dims)
}

/// Switches every inference-form batch_norm to its training form (batch statistics, three
/// outputs) and records the new running mean and variance as state updates. Users read only
/// output 0, so adding outputs keeps every existing reference valid.
pub fn batch_norm_training_form(g: &mut Graph, momentum: f64) -> Result<(), TrainError> {
    if !(0.0..=1.0).contains(&momentum) {
        return Err(TrainError::Config {
            message: format!("bn_momentum = {momentum} is out of range"),
        });
    }
    g.mode = ExecMode::Training;
    let ids: Vec<_> = g
        .iter()
        .filter(|(_, n)| matches!(n.op, Op::BatchNorm { momentum: None, .. }))
        .map(|(id, _)| id)
        .collect();
    for id in ids {
        let node = g.node(id).clone();
        let Op::BatchNorm { eps, .. } = node.op else {
            continue;
        };
        let mut names = Vec::with_capacity(2);
        for (port, which) in [(3, "mean"), (4, "variance")] {
            let src = g.node(node.inputs[port].node);
            let Op::Param(p) = &src.op else {
                return Err(TrainError::BatchNormStats {
                    node: node.name.clone(),
                    which,
                });
            };
            names.push(p.name.clone());
        }
        let stats: Vec<TensorType> = node.inputs[3..5]
            .iter()
            .filter_map(|v| g.value_type(*v).cloned())
            .collect();
        let n = g.node_mut(id);
        n.op = Op::BatchNorm {
            eps,
            momentum: Some(momentum),
        };
        n.outputs.extend(stats);
        for (port, name) in (1u32..).zip(names) {
            g.add_state_update(name, ValueRef::new(id, port));
        }
    }
    Ok(())
}
