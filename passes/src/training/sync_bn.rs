//! SyncBatchNorm: under data parallelism, batch_norm in training form normalises with the
//! statistics of the *global* batch, so a model with batch_norm trains as one process
//! would on the whole batch.
//!
//! **Forward.** Each training-form `batch_norm` becomes explicit ops over per-channel sums,
//! two-pass as the single-process kernel computes them: `μ = AR(Σ x) / M`, then
//! `σ² = AR(Σ (x − μ)²) / M` (biased, as Paddle), `x̂ = (x − μ)·r` with
//! `r = 1/√(σ² + ε)`, `y = γ·x̂ + β`, and the running statistics from `μ` and `σ²`. `AR` is
//! an all_reduce over the data-parallel group and `M` the global count per channel
//! (`dp ×` the rank's, the shards being equal).
//!
//! **Backward.** Autodiff differentiates the rank's own loss with the two all-reduced sums
//! treated as constants (a stop-gradient: collectives have no autodiff rule), which gives at
//! the batch_norm's input the cotangent `g = r·γ·ȳ` (`ȳ` the output's cotangent). The
//! exact gradient of the global loss `Σ_s w_s·L_s` (`w_s` each rank's share, the
//! gradients being scaled by `w_r` afterwards) with respect to rank r's input is
//! `w_r·dx_r` with
//!
//! `dx_r = g − AR(w·Σ g) / (w_r·M) − x̂ · AR(w·Σ g·x̂) / (w_r·M)`
//!
//! (sums per channel over the rank's elements; for equal shares `w = 1/dp` this is the
//! single-process `r·(ĝ − mean ĝ − x̂·mean(ĝ·x̂))` with means over the global batch). The
//! input of each batch_norm is read through an identity reshape (`syncbn.<bn>.x`), whose
//! gradient is the one reshape autodiff emits for it (named `grad.syncbn.<bn>.x.<k>`);
//! [`splice`] replaces that reshape's operand `g` by `dx_r`, so the corrected gradient is
//! what flows into the layers below.

use super::data_parallel::dp_group;
use super::TrainError;
use crate::rebuild::Rebuilder;
use oar_ir::dist::ReduceOp;
use oar_ir::op::{BinaryOp, Literal, Op, ReduceOverAxes, ReshapeDim, UnaryOp};
use oar_ir::{DType, Dim, Graph, NodeId, TensorType, ValueRef};
use std::collections::BTreeSet;

/// One synchronised batch_norm, for the backward splice.
pub(crate) struct SyncBn {
    /// The name of the identity reshape the batch_norm reads its input through.
    marker: String,
    xhat: ValueRef,
    axes: Vec<i64>,
    /// Elements per channel over the whole group.
    count: u64,
}

/// The rewritten forward: its values to stop autodiff at and the batch_norms to splice.
pub(crate) struct Decomposed {
    pub graph: Graph,
    pub stop: BTreeSet<ValueRef>,
    pub bns: Vec<SyncBn>,
    /// `keep` (the caller's values) in the new graph.
    pub kept: Vec<ValueRef>,
}

/// Whether `g` has a batch_norm in training form.
fn has_training_bn(g: &Graph) -> bool {
    g.iter().any(|(_, n)| {
        matches!(
            n.op,
            Op::BatchNorm {
                momentum: Some(_),
                ..
            }
        )
    })
}

/// Rewrites every training-form batch_norm of `g` (which has the `dp` mesh) over global
/// statistics (module docs); `keep` are values to carry over.
pub(crate) fn decompose(g: &Graph, dp: u64, keep: &[ValueRef]) -> Result<Decomposed, TrainError> {
    if !has_training_bn(g) {
        // Nothing to synchronise: the graph as it is.
        return Ok(Decomposed {
            graph: g.clone(),
            stop: BTreeSet::new(),
            bns: Vec::new(),
            kept: keep.to_vec(),
        });
    }
    let mut r = Rebuilder::new(g);
    let mut stop = BTreeSet::new();
    let mut bns = Vec::new();
    for (id, n) in g.iter() {
        if r.is_mapped(id) {
            continue;
        }
        let Op::BatchNorm {
            eps,
            momentum: Some(m),
        } = n.op
        else {
            r.copy(id)?;
            continue;
        };
        let [x, gamma, beta, rmean, rvar] = [0, 1, 2, 3, 4].map(|i| r.value(n.inputs[i]));
        let ty = n.outputs[0].clone();
        let dims = ty.shape.as_static().ok_or_else(|| TrainError::Symbolic {
            node: n.name.clone(),
            ty: ty.to_string(),
        })?;
        if dims.len() < 2 {
            return Err(TrainError::Config {
                message: format!("batch_norm `{}` needs an input of rank ≥ 2", n.name),
            });
        }
        let c = dims[1];
        let axes: Vec<i64> = (0..dims.len() as i64).filter(|&i| i != 1).collect();
        let count = dp * dims.iter().product::<u64>() / c.max(1);
        let cshape: Vec<u64> = (0..dims.len())
            .map(|i| if i == 1 { c } else { 1 })
            .collect();
        let mut b = Build {
            r: &mut r,
            dtype: ty.dtype,
            tag: n.name.clone(),
        };
        let marker_name = format!("syncbn.{}.x", n.name);
        let xm = b.op(reshape_op(&dims), vec![x], Some(&marker_name))?;
        let marker = b.r.new.node(xm.node).name.clone();
        let s1 = b.reduce_sum(xm, &axes)?;
        let sum = b.op(all_reduce(), vec![s1], None)?;
        let mu = b.scale(sum, 1.0 / count as f64)?;
        let xc = b.binary(BinaryOp::Sub, xm, mu)?;
        let sq = b.binary(BinaryOp::Mul, xc, xc)?;
        let s2 = b.reduce_sum(sq, &axes)?;
        let sqs = b.op(all_reduce(), vec![s2], None)?;
        let var = b.scale(sqs, 1.0 / count as f64)?;
        let eps_c = b.scalar(eps)?;
        let ve = b.binary(BinaryOp::Add, var, eps_c)?;
        let rs = b.op(Op::Unary(UnaryOp::Rsqrt), vec![ve], None)?;
        let xhat = b.binary(BinaryOp::Mul, xc, rs)?;
        let gc = b.op(reshape_op(&cshape), vec![gamma], None)?;
        let bc = b.op(reshape_op(&cshape), vec![beta], None)?;
        let scaled = b.binary(BinaryOp::Mul, xhat, gc)?;
        let y = b.binary(BinaryOp::Add, scaled, bc)?;
        let mut stats = Vec::with_capacity(2);
        for (run, batch) in [(rmean, mu), (rvar, var)] {
            let flat = b.op(reshape_op(&[c]), vec![batch], None)?;
            let old = b.scale(run, m)?;
            let new = b.scale(flat, 1.0 - m)?;
            stats.push(b.binary(BinaryOp::Add, old, new)?);
        }
        stop.insert(sum);
        stop.insert(sqs);
        r.alias(id, vec![y, stats[0], stats[1]]);
        bns.push(SyncBn {
            marker,
            xhat,
            axes,
            count,
        });
    }
    let kept = keep.iter().map(|&v| r.value(v)).collect();
    Ok(Decomposed {
        graph: r.finish(),
        stop,
        bns,
        kept,
    })
}

/// After autodiff: replaces the gradient reaching each batch_norm's input by the global
/// one (module docs). `share` is the rank's loss share; `keep` are values to carry over.
pub(crate) fn splice(
    g: &Graph,
    bns: &[SyncBn],
    share: ValueRef,
    keep: &[ValueRef],
) -> Result<(Graph, Vec<ValueRef>), TrainError> {
    if bns.is_empty() {
        return Ok((g.clone(), keep.to_vec()));
    }
    // The gradient reshape of each marker, by node.
    let mut at: Vec<Option<&SyncBn>> = vec![None; g.len()];
    for bn in bns {
        let prefix = format!("grad.{}.", bn.marker);
        let found = g.iter().find(|(_, n)| {
            matches!(n.op, Op::Reshape { .. })
                && n.name
                    .strip_prefix(&prefix)
                    .is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()))
        });
        // None: nothing below the batch_norm needs a gradient.
        if let Some((id, _)) = found {
            at[id.index()] = Some(bn);
        }
    }
    let mut r = Rebuilder::new(g);
    for (id, n) in g.iter() {
        if r.is_mapped(id) {
            continue;
        }
        let Some(bn) = at[id.index()] else {
            r.copy(id)?;
            continue;
        };
        let grad = r.value(n.inputs[0]);
        let ty = g.value_type(n.inputs[0]).cloned().ok_or_else(|| {
            TrainError::Verify("internal: the batch_norm gradient has no type".into())
        })?;
        let mut b = Build {
            r: &mut r,
            dtype: ty.dtype,
            tag: bn.marker.clone(),
        };
        let (xhat, share) = (b.r.value(bn.xhat), b.r.value(share));
        let inv_m = b.scalar(1.0 / bn.count as f64)?;
        let k = b.binary(BinaryOp::Div, inv_m, share)?;
        let mut means = Vec::with_capacity(2);
        let gx = b.binary(BinaryOp::Mul, grad, xhat)?;
        for v in [grad, gx] {
            let s = b.reduce_sum(v, &bn.axes)?;
            let ws = b.binary(BinaryOp::Mul, s, share)?;
            let total = b.op(all_reduce(), vec![ws], None)?;
            means.push(b.binary(BinaryOp::Mul, total, k)?);
        }
        let d1 = b.binary(BinaryOp::Sub, grad, means[0])?;
        let t = b.binary(BinaryOp::Mul, xhat, means[1])?;
        let dx = b.binary(BinaryOp::Sub, d1, t)?;
        let new = r.add(n.op.clone(), vec![dx], Some(&n.name))?;
        r.alias(id, vec![ValueRef::new(new, 0)]);
    }
    let kept = keep.iter().map(|&v| r.value(v)).collect();
    Ok((r.finish(), kept))
}

fn all_reduce() -> Op {
    Op::AllReduce {
        op: ReduceOp::Sum,
        group: dp_group(),
    }
}

fn reshape_op(dims: &[u64]) -> Op {
    Op::Reshape {
        shape: dims
            .iter()
            .map(|&d| ReshapeDim::Dim(Dim::Static(d)))
            .collect(),
    }
}

/// Adds nodes through a rebuilder, named `syncbn.<tag>.<k>` where free.
struct Build<'r, 'a> {
    r: &'r mut Rebuilder<'a>,
    dtype: DType,
    tag: String,
}

impl Build<'_, '_> {
    fn op(
        &mut self,
        op: Op,
        inputs: Vec<ValueRef>,
        name: Option<&str>,
    ) -> Result<ValueRef, TrainError> {
        let id: NodeId = self.r.add(op, inputs, name)?;
        Ok(id.into())
    }

    fn binary(&mut self, op: BinaryOp, a: ValueRef, b: ValueRef) -> Result<ValueRef, TrainError> {
        self.op(Op::Binary(op), vec![a, b], None)
    }

    fn scalar(&mut self, v: f64) -> Result<ValueRef, TrainError> {
        let ty = TensorType::new(self.dtype, vec![]);
        let name = format!("syncbn.{}.const", self.tag);
        let id = self
            .r
            .add_source(Op::Constant(Literal::Floats(vec![v])), ty, Some(&name))?;
        Ok(id.into())
    }

    fn scale(&mut self, v: ValueRef, c: f64) -> Result<ValueRef, TrainError> {
        let s = self.scalar(c)?;
        self.binary(BinaryOp::Mul, v, s)
    }

    fn reduce_sum(&mut self, v: ValueRef, axes: &[i64]) -> Result<ValueRef, TrainError> {
        let op = Op::Reduce(ReduceOverAxes {
            op: ReduceOp::Sum,
            axes: axes.to_vec(),
            keepdims: true,
        });
        self.op(op, vec![v], None)
    }
}
