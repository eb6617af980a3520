//! What only a training step needs: dropout by a host-drawn mask, batch_norm's training
//! form (batch statistics and new running statistics), and the state updates' write-back.

use super::pointwise::map;
use super::{Arg, Builder};
use crate::kernel::{Body, Expr, IExpr, Stmt, Un};
use oar_ir::op::DropoutMode;
use oar_ir::{DType, Graph};
use oar_runtime::program::{BufferRole, MaskDecl};

/// Training dropout: `out = x · mask`, the mask (`keep` scale or 0 per element) drawn by the
/// executor before each run from (seed, step, `stream`) exactly as the interpreter draws it
/// (`Executor::set_dropout`). A backward dropout replaying its forward's stream shares the
/// forward's mask buffer.
pub(crate) fn dropout(
    b: &mut Builder,
    name: &str,
    stream: &str,
    p: f64,
    mode: DropoutMode,
    x: &Arg,
    out: &Arg,
) -> Result<(), String> {
    if x.dtype != DType::F32 {
        return Err(format!("dropout of {} is not compiled", x.dtype.name()));
    }
    // p = 1 drops everything (the interpreter returns zeros rather than 0 · ∞).
    let keep = match mode {
        DropoutMode::UpscaleInTrain if p < 1.0 => (1.0 / (1.0 - p)) as f32,
        DropoutMode::UpscaleInTrain => 0.0,
        DropoutMode::DownscaleInInfer => 1.0,
    };
    let shape: Vec<usize> = out.shape.iter().map(|&d| d as usize).collect();
    let existing = b.program.masks.iter().find(|m| {
        m.stream == stream && m.p == p && m.keep == keep && b.program.buffers[m.buf].shape == shape
    });
    let buf = match existing {
        Some(m) => m.buf,
        None => {
            let buf = b.temp(&format!("{stream}.mask"), &out.shape, DType::F32);
            b.program.masks.push(MaskDecl {
                buf,
                stream: stream.to_string(),
                p,
                keep,
                infer: mode.inference_scale(p) as f32,
            });
            buf
        }
    };
    let mask = Arg {
        buf,
        shape: out.shape.clone(),
        dtype: DType::F32,
    };
    map(b, name, &[x.clone(), mask], out, |v, _| {
        v[0].clone().mul(v[1].clone())
    })
}

/// batch_norm's training form `[y, new mean, new var]`: per channel (dim 1, one parallel
/// iteration each) the batch mean and biased variance over every other dim (two passes:
/// mean, then squared deviations), `y = (x − mean)/sqrt(var + eps)·scale + bias`, and
/// `new = momentum·running + (1 − momentum)·batch` (Paddle's convention, as the
/// interpreter). Sums are f32 (the interpreter's f64): at the zoo's sizes (≤ 10⁵ elements
/// per channel) the statistics agree to ~1e-6 relative.
pub(crate) fn batch_norm(
    b: &mut Builder,
    name: &str,
    eps: f64,
    momentum: f64,
    ins: &[Arg],
    outs: &[Arg],
) -> Result<(), String> {
    let x = &ins[0];
    if x.shape.len() < 2 || ins.len() != 5 || outs.len() != 3 {
        return Err("batch_norm's training form takes x of rank ≥ 2 and 4 parameters".into());
    }
    if ins.iter().chain(outs).any(|a| a.dtype != DType::F32) {
        return Err("only f32 batch_norm is compiled".into());
    }
    let (n, c) = (x.shape[0], x.shape[1]);
    let inner: i64 = x.shape[2..].iter().product();
    let count = (n * inner) as f32;
    let ch = IExpr::v(0);
    // Element (v1, c, v2): ((v1·C + c)·inner + v2).
    let at = IExpr::v(1)
        .mul(c)
        .add(ch.clone())
        .mul(inner)
        .add(IExpr::v(2));
    // Parameters: y, new mean, new var, x, scale, bias, running mean, running var.
    let xv = Expr::Load(3, at.clone());
    let (mean, var) = (Expr::Local(0), Expr::Local(1));
    let over_batch = |body: Vec<Stmt>| Stmt::seq(1, n, vec![Stmt::seq(2, inner, body)]);
    let dev = xv.clone().sub(mean.clone());
    let m = momentum as f32;
    let running = |buf: usize, batch: Expr| {
        Expr::C(m)
            .mul(Expr::Load(buf, ch.clone()))
            .add(Expr::C(1.0 - m).mul(batch))
    };
    let body = vec![Stmt::par(
        c,
        vec![
            Stmt::Local {
                id: 0,
                init: Expr::C(0.0),
            },
            over_batch(vec![Stmt::Assign {
                id: 0,
                val: mean.clone().add(xv.clone()),
            }]),
            Stmt::Assign {
                id: 0,
                val: mean.clone().div(Expr::C(count)),
            },
            Stmt::Local {
                id: 1,
                init: Expr::C(0.0),
            },
            over_batch(vec![Stmt::Assign {
                id: 1,
                val: var.clone().add(dev.clone().mul(dev.clone())),
            }]),
            Stmt::Assign {
                id: 1,
                val: var.clone().div(Expr::C(count)),
            },
            Stmt::Store {
                buf: 1,
                idx: ch.clone(),
                val: running(6, mean.clone()),
            },
            Stmt::Store {
                buf: 2,
                idx: ch.clone(),
                val: running(7, var.clone()),
            },
            Stmt::Local {
                id: 2,
                init: Expr::C(1.0).div(var.add(Expr::C(eps as f32)).un(Un::Sqrt)),
            },
            Stmt::Local {
                id: 3,
                init: Expr::Load(4, ch.clone()).mul(Expr::Local(2)),
            },
            over_batch(vec![Stmt::Store {
                buf: 0,
                idx: at,
                val: dev.mul(Expr::Local(3)).add(Expr::Load(5, ch)),
            }]),
        ],
    )];
    let args = [
        outs[0].buf,
        outs[1].buf,
        outs[2].buf,
        x.buf,
        ins[1].buf,
        ins[2].buf,
        ins[3].buf,
        ins[4].buf,
    ];
    b.kernel(name, &args, Body::Loops(body), c, 1)
}

/// Records the state updates of training graph `g`: the graph output after the model
/// outputs at position k is the new value of the weight `g.state[k]`.
pub(crate) fn state_updates(b: &mut Builder, g: &Graph) -> Result<(), String> {
    let first = g.model_outputs().len();
    for (k, name) in g.state.iter().enumerate() {
        let from =
            *b.program.outputs.get(first + k).ok_or_else(|| {
                format!("state update `{name}` (output {}) is missing", first + k)
            })?;
        let to = b
            .program
            .buffers
            .iter()
            .position(|d| matches!(&d.role, BufferRole::Weight(w) if w == name))
            .ok_or_else(|| format!("state update `{name}` names no parameter of the graph"))?;
        if b.program.buffers[from].shape != b.program.buffers[to].shape
            || b.program.buffers[from].dtype != b.program.buffers[to].dtype
        {
            return Err(format!(
                "state update `{name}` is {:?}, its parameter {:?}",
                b.program.buffers[from].shape, b.program.buffers[to].shape
            ));
        }
        b.program.updates.push((from, to));
    }
    Ok(())
}
