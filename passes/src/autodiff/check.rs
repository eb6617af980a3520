//! Gradient checking against central finite differences, for tests of the rules.
//!
//! The scalar checked is `L = sum(u ⊙ y)` for the graph's first output `y` and a fixed
//! random cotangent `u`, so every output element matters. For each differentiated value `x`
//! (float inputs and trainable parameters) and a random direction `v`, the analytic
//! directional derivative `<dL/dx, v>` is compared with `(L(x + h·v) − L(x − h·v)) / 2h`.
//!
//! **Precision.** By default ([`Precision::F64`]) the graph under test is converted to f64
//! (every float value type, `cast` target, input and parameter; constants are f64
//! literals already) before it is differentiated, and the reference interpreter runs both
//! sides in f64. The central difference then has two error terms: truncation,
//! `h²/6 · |∂³L/∂t³|`, about 1e-10 relative with `h = 1e-5` and well-conditioned inputs of
//! order one; and rounding, `ε_f64 · |L| / h` ≈ 2e-11 · |L|. [`GradCheck::default`] accepts
//! `|analytic − numeric| ≤ 1e-8 + 1e-6 · max(|analytic|, |numeric|)`. The margin is for
//! ill-conditioned draws, which random shapes do produce: a layer_norm over two elements
//! or a batch_norm over four with nearly equal values has a third derivative ~1/var^1.5,
//! and at h = 1e-4 such draws missed 1e-6 by up to 6×; at 1e-5 they pass 100× inside it.
//! A subtly wrong rule still fails: gelu's 0.044715 written 0.04472 is off by 3e-6, and a
//! missing term, a dropped `eps` or one border cell of padding by far more. Rules must not
//! embed f32-rounded constants: resize's taps in f32 were off by 1e-5 (now f64).
//!
//! Non-smooth points (relu and abs at 0, clip bounds, max/min and max-pool ties) must stay
//! more than `h` away from the inputs: the tests draw from domains that keep a margin of
//! 0.1 or more (see `passes/tests/autodiff_core.rs`).
//!
//! [`Precision::F32`] ([`GradCheck::f32`]) keeps the graph in f32, with `h = 1e-2` and
//! rtol 1e-2: the interpreter's f32 rounding (≈ ε_f32 · |L| / h ≈ 1e-4) is too loud for
//! anything tighter. It remains for graphs that only exist in f32 (bf16/f16 rounding).

use super::append_backward;
use oar_ir::op::{BinaryOp, Literal, Op, ReduceOverAxes};
use oar_ir::{dist::ReduceOp, DType, Graph, TensorType, ValueRef};
use oar_runtime::interp::{run_with_options, RunOptions};
use oar_runtime::{HostTensor, TensorData, Weights};

/// The float type both sides of a check compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// The graph as given (f32).
    F32,
    /// Every float converted to f64 first.
    F64,
}

/// Settings of a check.
#[derive(Debug, Clone)]
pub struct GradCheck {
    /// Finite-difference step.
    pub h: f64,
    /// Relative tolerance on the directional derivative.
    pub rtol: f64,
    /// Absolute tolerance (for derivatives near zero).
    pub atol: f64,
    /// Seed of the cotangent and the directions.
    pub seed: u64,
    /// The float type of both sides.
    pub precision: Precision,
}

impl Default for GradCheck {
    /// The f64 check: h = 1e-5, rtol 1e-6, atol 1e-8 (see the module docs for why).
    fn default() -> Self {
        GradCheck {
            h: 1e-5,
            rtol: 1e-6,
            atol: 1e-8,
            seed: 7,
            precision: Precision::F64,
        }
    }
}

impl GradCheck {
    /// The f32 check: h = 1e-2, rtol 1e-2, atol 1e-3.
    pub fn f32() -> Self {
        GradCheck {
            h: 1e-2,
            rtol: 1e-2,
            atol: 1e-3,
            seed: 7,
            precision: Precision::F32,
        }
    }
}

/// `graph` with every float value typed f64 (f32, bf16 and f16 alike: a gradient check
/// wants exact arithmetic, not storage rounding), `cast`s to a float retargeted to f64, and
/// the same in every fused body.
pub fn graph_to_f64(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    let ids: Vec<_> = g.iter().map(|(id, _)| id).collect();
    for id in ids {
        let n = g.node_mut(id);
        for t in &mut n.outputs {
            if t.dtype.is_float() {
                t.dtype = DType::F64;
            }
        }
        if let Op::Cast { to } = &mut n.op {
            if to.is_float() {
                *to = DType::F64;
            }
        }
    }
    for f in g.functions.values_mut() {
        *f = graph_to_f64(f);
    }
    g
}

/// `t` converted to the float type of `p` (non-float tensors unchanged).
pub fn to_precision(t: &HostTensor, p: Precision) -> HostTensor {
    t.to_float(match p {
        Precision::F32 => DType::F32,
        Precision::F64 => DType::F64,
    })
}

/// One compared derivative.
#[derive(Debug, Clone)]
pub struct Compared {
    /// Input or parameter name.
    pub name: String,
    pub analytic: f64,
    pub numeric: f64,
}

/// Deterministic uniform numbers in [-1, 1) (splitmix64).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn opts(g: &Graph) -> RunOptions {
    RunOptions {
        mode: g.mode,
        seed: 1,
        step: 0,
        batch_shard: 0,
    }
}

fn eval_scalar(g: &Graph, inputs: &[HostTensor], w: &Weights) -> Result<f64, String> {
    let r = run_with_options(g, inputs, w, opts(g)).map_err(|e| e.to_string())?;
    Ok(r.outputs[0].to_f64()[0])
}

/// `t + h·dir` in `t`'s own float type.
fn axpy(t: &HostTensor, dir: &[f32], h: f64) -> HostTensor {
    match &t.data {
        TensorData::F32(d) => HostTensor::f32(
            t.shape.clone(),
            d.iter()
                .zip(dir)
                .map(|(x, v)| (*x as f64 + h * *v as f64) as f32)
                .collect(),
        ),
        TensorData::F64(d) => HostTensor::f64(
            t.shape.clone(),
            d.iter().zip(dir).map(|(x, v)| x + h * *v as f64).collect(),
        ),
        TensorData::I64(_) | TensorData::Bool(_) => t.clone(),
    }
}

/// Checks every gradient of `graph`'s first output (contracted with a random cotangent)
/// against finite differences. Returns the compared derivatives, or a message naming the
/// first one outside tolerance.
pub fn check_gradients(
    graph: &Graph,
    inputs: &[HostTensor],
    weights: &Weights,
    cfg: &GradCheck,
) -> Result<Vec<Compared>, String> {
    // The scalar: L = sum(u * y), state updates dropped (they are not differentiated).
    let mut g = match cfg.precision {
        Precision::F32 => graph.clone(),
        Precision::F64 => graph_to_f64(graph),
    };
    let inputs: Vec<HostTensor> = inputs
        .iter()
        .map(|t| to_precision(t, cfg.precision))
        .collect();
    let inputs = inputs.as_slice();
    let weights: Weights = weights
        .iter()
        .map(|(k, t)| (k.clone(), to_precision(t, cfg.precision)))
        .collect();
    let weights = &weights;
    let y = *g.model_outputs().first().ok_or("the graph has no output")?;
    g.state.clear();
    let yt: TensorType = g.value_type(y).cloned().ok_or("bad output")?;
    let n = yt
        .shape
        .numel()
        .as_static()
        .ok_or("symbolic output shape")? as usize;
    let u = uniform(n, cfg.seed);
    let uc = g
        .add_node_typed(
            Op::Constant(Literal::Floats(u.iter().map(|&x| x as f64).collect())),
            vec![],
            vec![yt.clone()],
            Some("check.u".into()),
        )
        .map_err(|e| e.to_string())?;
    let prod = g
        .add_node(
            Op::Binary(BinaryOp::Mul),
            vec![y, uc.into()],
            Some("check.uy".into()),
        )
        .map_err(|e| e.to_string())?;
    let loss = g
        .add_node(
            Op::Reduce(ReduceOverAxes {
                op: ReduceOp::Sum,
                axes: vec![],
                keepdims: false,
            }),
            vec![prod.into()],
            Some("check.loss".into()),
        )
        .map_err(|e| e.to_string())?;
    let loss: ValueRef = loss.into();
    g.set_outputs(vec![loss]);

    let b = append_backward(&g, loss, true).map_err(|e| e.to_string())?;
    let mut bg = b.graph.clone();
    let mut outs = vec![loss];
    outs.extend(b.input_grads.iter().map(|(_, v)| *v));
    outs.extend(b.param_grads.iter().map(|(_, v)| *v));
    bg.set_outputs(outs);
    let r = run_with_options(&bg, inputs, weights, opts(&bg)).map_err(|e| e.to_string())?;

    let mut compared = Vec::new();
    let mut k = 1;
    let mut salt = cfg.seed;
    for (name, _) in &b.input_grads {
        let i = g
            .inputs()
            .iter()
            .position(|&id| &g.node(id).name == name)
            .ok_or("input vanished")?;
        salt += 1;
        let dir = uniform(inputs[i].numel(), salt);
        let analytic: f64 = r.outputs[k]
            .to_f64()
            .iter()
            .zip(&dir)
            .map(|(a, v)| a * *v as f64)
            .sum();
        k += 1;
        let mut plus = inputs.to_vec();
        plus[i] = axpy(&inputs[i], &dir, cfg.h);
        let mut minus = inputs.to_vec();
        minus[i] = axpy(&inputs[i], &dir, -cfg.h);
        let numeric =
            (eval_scalar(&g, &plus, weights)? - eval_scalar(&g, &minus, weights)?) / (2.0 * cfg.h);
        compared.push(Compared {
            name: name.clone(),
            analytic,
            numeric,
        });
    }
    for (name, _) in &b.param_grads {
        let w0 = weights
            .get(name)
            .ok_or_else(|| format!("no weight {name}"))?;
        salt += 1;
        let dir = uniform(w0.numel(), salt);
        let analytic: f64 = r.outputs[k]
            .to_f64()
            .iter()
            .zip(&dir)
            .map(|(a, v)| a * *v as f64)
            .sum();
        k += 1;
        let mut plus = weights.clone();
        plus.insert(name.clone(), axpy(w0, &dir, cfg.h));
        let mut minus = weights.clone();
        minus.insert(name.clone(), axpy(w0, &dir, -cfg.h));
        let numeric =
            (eval_scalar(&g, inputs, &plus)? - eval_scalar(&g, inputs, &minus)?) / (2.0 * cfg.h);
        compared.push(Compared {
            name: name.clone(),
            analytic,
            numeric,
        });
    }
    for c in &compared {
        let tol = cfg.atol + cfg.rtol * c.analytic.abs().max(c.numeric.abs());
        if (c.analytic - c.numeric).abs() > tol || !c.analytic.is_finite() {
            return Err(format!(
                "gradient of `{}`: analytic {} vs finite difference {} (tolerance {tol:.2e})",
                c.name, c.analytic, c.numeric
            ));
        }
    }
    Ok(compared)
}
