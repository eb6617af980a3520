//! Optimizer updates as IR: gradient accumulation, global-norm clipping and the update of
//! every parameter and its optimizer state, written into the graph as ordinary ops whose new
//! values are state updates. The step therefore fuses and compiles like the forward pass, and
//! only the learning rate (`lr`) and the 1-based optimizer step (`step`), two rank-0 f32
//! graph inputs, change from one run to the next.
//!
//! Formulas follow Paddle (and PyTorch where they agree): see each [`Optimizer`] variant.
//! Optimizer state lives in new parameters `"<param>.<slot>"` (`fc.weight.moment1`),
//! created with a constant initialiser ([`Slot`]) so `init_weights` or
//! [`super::TrainStep::init_state`] can create them.
//!
//! Gradient accumulation (`accumulate = k > 1`) keeps one graph and adds a third rank-0 f32
//! input, `apply`, which must be exactly 0 or 1: every run adds the micro-batch gradient into
//! `"<param>.grad_acc"`; a run with `apply = 1` also takes the mean of the `k` accumulated
//! gradients, clips it, updates the parameters and optimizer state and clears the
//! accumulators, while a run with `apply = 0` leaves parameters and optimizer state as they
//! are. Each state value is kept as `new·apply + old·(1 − apply)`, exact for finite values
//! when `apply` is 0 or 1; arithmetic rather than a `where` on a bool, so it compiles where
//! bool-valued elementwise ops do not. The update is computed and discarded on `apply = 0`
//! runs, which costs one update's elementwise work per micro-batch but needs one compiled
//! program, not two. `step` counts optimizer updates, not micro-batches.

use super::emit::Emit;
use super::update;
use super::TrainError;
use oar_ir::op::Op;
use oar_ir::{DType, ExecMode, Graph, TensorType, ValueRef};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The optimizer and its hyper-parameters. Defaults ([`FromStr`]) are Paddle's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with optional (Nesterov) momentum, no dampening, L2 weight decay added to the
    /// gradient (Paddle's `Momentum` with `L2Decay`, PyTorch's `SGD`):
    /// `g += wd·p; v = μ·v + g; p -= lr·(nesterov ? g + μ·v : v)` (`p -= lr·g` when μ = 0).
    Sgd {
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdamW with decoupled weight decay and bias correction (`paddle.optimizer.AdamW`,
    /// `torch.optim.AdamW`): `p -= lr·wd·p; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
    /// p -= lr·(m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + ε)`.
    #[serde(rename = "adamw")]
    AdamW {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
        weight_decay: f64,
    },
    /// LAMB (`paddle.optimizer.Lamb`): Adam's bias-corrected moments, `r = m̂/(sqrt(v̂)+ε) +
    /// wd·p`, `p -= lr·τ·r` with the trust ratio `τ = ‖p‖/‖r‖` (1 when either norm is 0).
    /// As Paddle with `always_adapt = false`, parameters without weight decay (excluded by
    /// the mask, or `weight_decay = 0`) take `τ = 1`.
    Lamb {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
        weight_decay: f64,
        #[serde(default)]
        always_adapt: bool,
    },
    /// Adagrad (`paddle.optimizer.Adagrad`): `g += wd·p; a += g²; p -= lr·g/(sqrt(a)+ε)`,
    /// the accumulator starting at `initial_accumulator`.
    Adagrad {
        epsilon: f64,
        initial_accumulator: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

/// Names [`Optimizer::from_str`] knows.
pub const OPTIMIZER_NAMES: [&str; 4] = ["sgd", "adamw", "lamb", "adagrad"];

impl FromStr for Optimizer {
    type Err = TrainError;

    /// An optimizer with Paddle's default hyper-parameters, by name (case-insensitive).
    fn from_str(s: &str) -> Result<Optimizer, TrainError> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            }),
            "adamw" => Ok(Optimizer::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
                weight_decay: 0.01,
            }),
            "lamb" => Ok(Optimizer::Lamb {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-6,
                weight_decay: 0.01,
                always_adapt: false,
            }),
            "adagrad" => Ok(Optimizer::Adagrad {
                epsilon: 1e-6,
                initial_accumulator: 0.0,
                weight_decay: 0.0,
            }),
            _ => Err(TrainError::UnknownOptimizer {
                name: s.to_string(),
                known: OPTIMIZER_NAMES.join(", "),
            }),
        }
    }
}

impl Optimizer {
    /// The weight-decay coefficient.
    pub fn weight_decay(&self) -> f64 {
        match self {
            Optimizer::Sgd { weight_decay, .. }
            | Optimizer::AdamW { weight_decay, .. }
            | Optimizer::Lamb { weight_decay, .. }
            | Optimizer::Adagrad { weight_decay, .. } => *weight_decay,
        }
    }
}

/// Which parameters weight decay applies to. Name lists match by substring, the usual
/// `no_decay = ["bias", "norm"]` convention.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", content = "names", rename_all = "snake_case")]
pub enum DecayMask {
    /// Parameters of rank 2 or more: norm scales and biases (rank 1) are not decayed.
    #[default]
    Auto,
    /// Every parameter (Paddle's and PyTorch's default).
    All,
    /// Only parameters whose name contains one of these.
    Only(Vec<String>),
    /// Every parameter except those whose name contains one of these.
    Except(Vec<String>),
}

impl DecayMask {
    /// Whether parameter `name` of type `ty` is decayed.
    pub fn decays(&self, name: &str, ty: &TensorType) -> bool {
        let hit = |list: &[String]| list.iter().any(|s| name.contains(s.as_str()));
        match self {
            DecayMask::Auto => ty.rank() >= 2,
            DecayMask::All => true,
            DecayMask::Only(list) => hit(list),
            DecayMask::Except(list) => !hit(list),
        }
    }
}

/// Everything about the update step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub optimizer: Optimizer,
    #[serde(default)]
    pub decay_mask: DecayMask,
    /// Global-norm gradient clipping (Paddle's `ClipGradByGlobalNorm`): all gradients are
    /// scaled by `clip / max(‖g‖, clip)`, `‖g‖` the norm over every gradient together.
    #[serde(default)]
    pub clip_global_norm: Option<f64>,
    /// Micro-batches per update (1: no accumulation); see the module docs.
    #[serde(default = "one")]
    pub accumulate: u32,
}

fn one() -> u32 {
    1
}

impl OptimConfig {
    /// `optimizer` with the default mask, no clipping, no accumulation.
    pub fn new(optimizer: Optimizer) -> OptimConfig {
        OptimConfig {
            optimizer,
            decay_mask: DecayMask::Auto,
            clip_global_norm: None,
            accumulate: 1,
        }
    }
}

/// A parameter the optimizer added: its name, type and constant initial value.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    pub ty: TensorType,
    pub init: f64,
}

/// The scalar inputs every update reads: the learning rate and the 1-based step.
pub(super) struct Scalars {
    pub lr: ValueRef,
    pub step: ValueRef,
}

/// Names of the scalar inputs the optimizer reads.
pub const LR_INPUT: &str = "lr";
pub const STEP_INPUT: &str = "step";
pub const APPLY_INPUT: &str = "apply";

/// Adds the update of each `(parameter name, gradient)` to `g` as state updates, with the
/// inputs `lr`, `step` (and `apply` when accumulating) added if `g` lacks them. Switches `g`
/// to training mode. Returns the optimizer state it created. Weight decay follows
/// `cfg.decay_mask`; [`insert_optimizer_with`] takes any predicate instead. On error `g` may
/// be left partly built: insert into a clone when the original must survive.
pub fn insert_optimizer(
    g: &mut Graph,
    param_grads: &[(String, ValueRef)],
    cfg: &OptimConfig,
) -> Result<Vec<Slot>, TrainError> {
    insert_optimizer_with(g, param_grads, cfg, &|name, ty| {
        cfg.decay_mask.decays(name, ty)
    })
}

/// [`insert_optimizer`] with weight decay applied where `decays(name, type)` says so
/// (`cfg.decay_mask` is not consulted).
pub fn insert_optimizer_with(
    g: &mut Graph,
    param_grads: &[(String, ValueRef)],
    cfg: &OptimConfig,
    decays: &dyn Fn(&str, &TensorType) -> bool,
) -> Result<Vec<Slot>, TrainError> {
    insert_optimizer_gated(g, param_grads, cfg, decays, None)
}

/// A condition on the whole update, computed in the graph (loss scaling's skipped steps).
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Rank-0 f32, 0 or 1: the update is kept only where it is 1, through the accumulation
    /// path's `apply` blend.
    pub apply: ValueRef,
    /// Rank-0 f32 optimizer step (1-based count of applied updates) used instead of the
    /// `step` input, so skipped steps do not advance Adam's bias correction (Paddle's
    /// `beta^t` accumulators do not move on a skipped step either).
    pub step: ValueRef,
}

/// [`insert_optimizer_with`] under a [`Gate`]. Not combinable with accumulation.
pub fn insert_optimizer_gated(
    g: &mut Graph,
    param_grads: &[(String, ValueRef)],
    cfg: &OptimConfig,
    decays: &dyn Fn(&str, &TensorType) -> bool,
    gate: Option<Gate>,
) -> Result<Vec<Slot>, TrainError> {
    validate(cfg)?;
    if gate.is_some() && cfg.accumulate > 1 {
        return Err(TrainError::Config {
            message: "loss scaling (fp16) with gradient accumulation is not supported".into(),
        });
    }
    g.mode = ExecMode::Training;
    let mut e = Emit::new(g, "optim");
    let scalar = TensorType::new(DType::F32, vec![]);
    let sc = Scalars {
        lr: e.input(LR_INPUT, scalar.clone())?,
        step: e.input(STEP_INPUT, scalar.clone())?,
    };
    let sc = match gate {
        Some(gt) => Scalars {
            step: gt.step,
            ..sc
        },
        None => sc,
    };
    // (apply, 1 − apply) when accumulating.
    let apply = if cfg.accumulate > 1 {
        let a = e.input(APPLY_INPUT, scalar)?;
        let keep = e.rsub(1.0, a)?;
        Some((a, keep))
    } else if let Some(gt) = gate {
        let keep = e.rsub(1.0, gt.apply)?;
        Some((gt.apply, keep))
    } else {
        None
    };
    let mut slots = Vec::new();
    let mut params = Vec::with_capacity(param_grads.len());
    for (name, grad) in param_grads {
        let p = find_param(e.graph(), name)?;
        let ty = e.ty(p)?;
        let gty = e.ty(*grad)?;
        if ty.dtype != DType::F32 {
            // The scalars (lr, step, hyper-parameters) are f32 and binary ops do not mix
            // dtypes; mixed precision would keep f32 master weights.
            return Err(TrainError::Config {
                message: format!(
                    "optimizer updates are built for f32 parameters; `{name}` is {ty}"
                ),
            });
        }
        if gty != ty {
            return Err(TrainError::GradType {
                param: name.clone(),
                param_ty: ty.to_string(),
                grad_ty: gty.to_string(),
            });
        }
        params.push((name.clone(), p, ty, *grad));
    }

    // Accumulate, then average over the micro-batches.
    let mut grads = Vec::with_capacity(params.len());
    for (name, _, ty, grad) in &params {
        let Some(apply) = apply.filter(|_| cfg.accumulate > 1) else {
            grads.push(*grad);
            continue;
        };
        let acc = slot(&mut e, &mut slots, name, "grad_acc", ty, 0.0)?;
        let sum = e.add(acc, *grad)?;
        let (_, keep) = apply;
        let kept = e.mul(sum, keep)?;
        e.graph_mut()
            .add_state_update(format!("{name}.grad_acc"), kept);
        grads.push(e.scale(sum, 1.0 / f64::from(cfg.accumulate))?);
    }

    if let Some(clip) = cfg.clip_global_norm {
        grads = clip_by_global_norm(&mut e, &grads, clip)?;
    }

    for ((name, p, ty, _), grad) in params.iter().zip(grads) {
        let decays = decays(name, ty);
        let mut olds = Vec::new();
        let mut names = Vec::new();
        for (slot_name, init) in update::slots(&cfg.optimizer) {
            olds.push(slot(&mut e, &mut slots, name, slot_name, ty, init)?);
            names.push(format!("{name}.{slot_name}"));
        }
        let up = update::update(&mut e, &cfg.optimizer, &sc, *p, grad, &olds, decays)?;
        let news = std::iter::once((name.clone(), *p, up.param)).chain(
            names
                .into_iter()
                .zip(olds)
                .zip(up.slots)
                .map(|((n, o), v)| (n, o, v)),
        );
        for (full, old, new) in news.collect::<Vec<_>>() {
            let kept = match apply {
                Some((a, keep)) => {
                    let n = e.mul(new, a)?;
                    let o = e.mul(old, keep)?;
                    e.add(n, o)?
                }
                None => new,
            };
            e.graph_mut().add_state_update(full, kept);
        }
    }
    Ok(slots)
}

/// Checks hyper-parameters that would make the update meaningless.
fn validate(cfg: &OptimConfig) -> Result<(), TrainError> {
    let bad = |what: &str, v: f64| TrainError::Config {
        message: format!("{what} = {v} is out of range"),
    };
    if cfg.accumulate == 0 {
        return Err(bad("accumulate", 0.0));
    }
    if let Some(c) = cfg.clip_global_norm {
        if c.is_nan() || c <= 0.0 {
            return Err(bad("clip_global_norm", c));
        }
    }
    let beta = |name: &str, b: f64| {
        if (0.0..1.0).contains(&b) {
            Ok(())
        } else {
            Err(bad(name, b))
        }
    };
    match &cfg.optimizer {
        Optimizer::Sgd { momentum, .. } => beta("momentum", *momentum)?,
        Optimizer::AdamW { beta1, beta2, .. } | Optimizer::Lamb { beta1, beta2, .. } => {
            beta("beta1", *beta1)?;
            beta("beta2", *beta2)?;
        }
        Optimizer::Adagrad { .. } => {}
    }
    Ok(())
}

/// The parameter node named `name`.
pub(super) fn find_param(g: &Graph, name: &str) -> Result<ValueRef, TrainError> {
    g.iter()
        .find(|(_, n)| matches!(&n.op, Op::Param(p) if p.name == name))
        .map(|(id, _)| id.into())
        .ok_or_else(|| TrainError::NoParam {
            name: name.to_string(),
        })
}

/// Creates the optimizer-state parameter `"<param>.<slot>"`.
fn slot(
    e: &mut Emit,
    slots: &mut Vec<Slot>,
    param: &str,
    slot: &str,
    ty: &TensorType,
    init: f64,
) -> Result<ValueRef, TrainError> {
    let name = format!("{param}.{slot}");
    // An existing parameter of that name would get two state updates, or a model weight
    // would be overwritten as optimizer state: refuse rather than guess.
    if find_param(e.graph(), &name).is_ok() {
        return Err(TrainError::SlotTaken { name });
    }
    slots.push(Slot {
        name: name.clone(),
        ty: ty.clone(),
        init,
    });
    e.param(&name, ty.clone(), init)
}

/// Every gradient scaled by `clip / max(‖g‖, clip)`, `‖g‖` over all of them.
fn clip_by_global_norm(
    e: &mut Emit,
    grads: &[ValueRef],
    clip: f64,
) -> Result<Vec<ValueRef>, TrainError> {
    let mut total: Option<ValueRef> = None;
    for &g in grads {
        let s = e.sum_squares(g)?;
        total = Some(match total {
            Some(t) => e.add(t, s)?,
            None => s,
        });
    }
    let Some(total) = total else {
        return Ok(Vec::new());
    };
    let norm = e.sqrt(total)?;
    let c = e.scalar(clip)?;
    let denom = e.max(norm, c)?;
    let scale = e.div(c, denom)?;
    grads.iter().map(|&g| e.mul(g, scale)).collect()
}
