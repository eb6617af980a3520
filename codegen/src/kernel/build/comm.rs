//! Collectives and send/recv: no kernel, a program step the executor runs through its
//! communicator. The group is kept as a mesh axis; the executor resolves it from the rank.

use super::{Arg, Builder};
use oar_ir::op::Op;
use oar_runtime::program::{Collective, Step, StepKind};

pub(super) fn lower(b: &mut Builder, op: &Op, ins: &[Arg], outs: &[Arg]) -> Result<(), String> {
    // Send and recv are picked out here; every other op goes through the exhaustive
    // `Collective::of_op`, which refuses ops that do not communicate.
    let (kind, args) = if let Op::Send { peer } = op {
        (StepKind::Send { peer: *peer }, vec![ins[0].buf])
    } else if let Op::Recv { peer } = op {
        (StepKind::Recv { peer: *peer }, vec![outs[0].buf])
    } else {
        let g = op
            .comm_group()
            .ok_or_else(|| format!("`{}` is not a collective", op.name()))?;
        let mesh = b
            .meshes
            .get(&g.mesh)
            .ok_or_else(|| format!("unknown mesh @{}", g.mesh))?
            .clone();
        let c = Collective::of_op(op, ins[0].shape.len())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("`{}` is not a collective", op.name()))?;
        let kind = StepKind::Collective {
            op: c,
            mesh,
            axis: g.axis,
            shape: ins[0].shape.iter().map(|&d| d as usize).collect(),
        };
        (kind, vec![ins[0].buf, outs[0].buf])
    };
    b.program.steps.push(Step { kind, args });
    // Never fixed: a collective's result depends on other ranks, so it cannot move to the
    // prologue even when its operand is a weight.
    b.step_fixed.push(false);
    Ok(())
}
