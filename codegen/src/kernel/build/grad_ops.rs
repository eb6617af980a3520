//! Gradient ops (`conv2d_grad_weight`, `pool_grad`, `scatter_add`, `gather_grad`).

use super::{Arg, Builder};
use oar_ir::op::GradOp;

pub(crate) fn lower(
    _b: &mut Builder,
    _name: &str,
    g: &GradOp,
    _ins: &[Arg],
    _out: &Arg,
) -> Result<(), String> {
    match g {
        GradOp::Conv2dWeight { .. }
        | GradOp::Pool(_)
        | GradOp::ScatterAdd { .. }
        | GradOp::Gather { .. } => Err(format!(
            "the gradient op `{}` has no CPU kernel yet; run the training step in the interpreter",
            g.name()
        )),
    }
}
