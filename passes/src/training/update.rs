//! The per-parameter update of each optimizer, as IR (formulas on [`Optimizer`]'s variants).

use super::emit::Emit;
use super::optim::{Optimizer, Scalars};
use super::TrainError;
use oar_ir::op::BinaryOp;
use oar_ir::ValueRef;

/// The new value of a parameter and of its optimizer state, in [`slots`] order.
pub(super) struct Update {
    pub param: ValueRef,
    pub slots: Vec<ValueRef>,
}

/// The optimizer state one parameter needs: slot name and initial value.
pub(super) fn slots(opt: &Optimizer) -> Vec<(&'static str, f64)> {
    match opt {
        Optimizer::Sgd { momentum, .. } if *momentum > 0.0 => vec![("velocity", 0.0)],
        Optimizer::Sgd { .. } => vec![],
        Optimizer::AdamW { .. } | Optimizer::Lamb { .. } => {
            vec![("moment1", 0.0), ("moment2", 0.0)]
        }
        Optimizer::Adagrad {
            initial_accumulator,
            ..
        } => vec![("moment", *initial_accumulator)],
    }
}

/// The update of parameter `p` with gradient `g` and current state `state` (in [`slots`]
/// order); `decays` says whether weight decay applies to `p`.
pub(super) fn update(
    e: &mut Emit,
    opt: &Optimizer,
    sc: &Scalars,
    p: ValueRef,
    g: ValueRef,
    state: &[ValueRef],
    decays: bool,
) -> Result<Update, TrainError> {
    let wd = if decays { opt.weight_decay() } else { 0.0 };
    match *opt {
        Optimizer::Sgd {
            momentum, nesterov, ..
        } => {
            let g = l2(e, g, p, wd)?;
            let (dir, slots) = match state {
                [v] => {
                    let mv = e.scale(*v, momentum)?;
                    let v_new = e.add(mv, g)?;
                    let dir = if nesterov {
                        let mv_new = e.scale(v_new, momentum)?;
                        e.add(g, mv_new)?
                    } else {
                        v_new
                    };
                    (dir, vec![v_new])
                }
                _ => (g, vec![]),
            };
            let step = e.mul(sc.lr, dir)?;
            Ok(Update {
                param: e.sub(p, step)?,
                slots,
            })
        }
        Optimizer::AdamW {
            beta1,
            beta2,
            epsilon,
            ..
        } => {
            let [m, v] = two(state)?;
            // Decoupled decay first, with the same lr, as Paddle and PyTorch do.
            let p = if wd != 0.0 {
                let lr_wd = e.scale(sc.lr, wd)?;
                let d = e.mul(lr_wd, p)?;
                e.sub(p, d)?
            } else {
                p
            };
            let mo = Moments::new(e, sc, m, v, g, beta1, beta2)?;
            let ratio = mo.direction(e, epsilon)?;
            let step = e.mul(sc.lr, ratio)?;
            Ok(Update {
                param: e.sub(p, step)?,
                slots: vec![mo.m, mo.v],
            })
        }
        Optimizer::Lamb {
            beta1,
            beta2,
            epsilon,
            always_adapt,
            ..
        } => {
            let [m, v] = two(state)?;
            let mo = Moments::new(e, sc, m, v, g, beta1, beta2)?;
            let r = mo.direction(e, epsilon)?;
            let r = if wd != 0.0 {
                let dp = e.scale(p, wd)?;
                e.add(r, dp)?
            } else {
                r
            };
            let lr = if wd > 0.0 || always_adapt {
                let pn = e.sum_squares(p)?;
                let pn = e.sqrt(pn)?;
                let rn = e.sum_squares(r)?;
                let rn = e.sqrt(rn)?;
                // τ = ‖p‖/‖r‖ only where both norms are positive (both are ≥ 0, so their
                // min says it); the inner select keeps the unused branch finite.
                let least = e.binary(BinaryOp::Min, pn, rn)?;
                let zero = e.scalar(0.0)?;
                let both = e.binary(BinaryOp::Greater, least, zero)?;
                let one = e.scalar(1.0)?;
                let safe_rn = e.select(both, rn, one)?;
                let q = e.div(pn, safe_rn)?;
                let tau = e.select(both, q, one)?;
                e.mul(sc.lr, tau)?
            } else {
                sc.lr
            };
            let step = e.mul(lr, r)?;
            Ok(Update {
                param: e.sub(p, step)?,
                slots: vec![mo.m, mo.v],
            })
        }
        Optimizer::Adagrad { epsilon, .. } => {
            let [a] = state else {
                return Err(slot_count(state.len(), 1));
            };
            let g = l2(e, g, p, wd)?;
            let g2 = e.mul(g, g)?;
            let a_new = e.add(*a, g2)?;
            let root = e.sqrt(a_new)?;
            let denom = e.offset(root, epsilon)?;
            let ratio = e.div(g, denom)?;
            let step = e.mul(sc.lr, ratio)?;
            Ok(Update {
                param: e.sub(p, step)?,
                slots: vec![a_new],
            })
        }
    }
}

/// `g + wd·p` (coupled L2 decay); `g` itself when `wd` is 0.
fn l2(e: &mut Emit, g: ValueRef, p: ValueRef, wd: f64) -> Result<ValueRef, TrainError> {
    if wd == 0.0 {
        return Ok(g);
    }
    let dp = e.scale(p, wd)?;
    e.add(g, dp)
}

fn two(state: &[ValueRef]) -> Result<[ValueRef; 2], TrainError> {
    match state {
        [a, b] => Ok([*a, *b]),
        _ => Err(slot_count(state.len(), 2)),
    }
}

/// A broken invariant between [`slots`] and [`update`], reported rather than panicking.
fn slot_count(found: usize, want: usize) -> TrainError {
    TrainError::Config {
        message: format!("internal: the optimizer got {found} state slots, expected {want}"),
    }
}

/// Adam's moments and bias corrections `1 − β^step`.
struct Moments {
    m: ValueRef,
    v: ValueRef,
    bc1: ValueRef,
    bc2: ValueRef,
}

impl Moments {
    fn new(
        e: &mut Emit,
        sc: &Scalars,
        m: ValueRef,
        v: ValueRef,
        g: ValueRef,
        beta1: f64,
        beta2: f64,
    ) -> Result<Moments, TrainError> {
        let bm = e.scale(m, beta1)?;
        let gm = e.scale(g, 1.0 - beta1)?;
        let m = e.add(bm, gm)?;
        let bv = e.scale(v, beta2)?;
        let g2 = e.mul(g, g)?;
        let gv = e.scale(g2, 1.0 - beta2)?;
        let v = e.add(bv, gv)?;
        let bc1 = bias_correction(e, sc, beta1)?;
        let bc2 = bias_correction(e, sc, beta2)?;
        Ok(Moments { m, v, bc1, bc2 })
    }

    /// Adam's direction `m̂ / (sqrt(v̂) + ε)` from the bias-corrected moments.
    fn direction(&self, e: &mut Emit, epsilon: f64) -> Result<ValueRef, TrainError> {
        let mhat = e.div(self.m, self.bc1)?;
        let vhat = e.div(self.v, self.bc2)?;
        let root = e.sqrt(vhat)?;
        let denom = e.offset(root, epsilon)?;
        e.div(mhat, denom)
    }
}

/// `1 − β^step`.
fn bias_correction(e: &mut Emit, sc: &Scalars, beta: f64) -> Result<ValueRef, TrainError> {
    let b = e.scalar(beta)?;
    let pow = e.binary(BinaryOp::Pow, b, sc.step)?;
    e.rsub(1.0, pow)
}
