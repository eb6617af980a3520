//! Builders the convolution, pooling and gather rules need beyond `cx.rs`: comparisons and
//! selects against scalars, and the derivative of an epilogue activation written with plain
//! IR ops on the pre-activation value.

use super::{AutodiffError, GradCx};
use oar_ir::op::{BinaryOp, Op, UnaryOp};
use oar_ir::{Graph, NodeId, ValueRef};

impl GradCx {
    /// A context over `graph` for driving one rule directly ([`super::rules::vjp`]), as the
    /// per-rule tests do; `finish` returns the graph with the emitted nodes.
    pub fn for_graph(graph: Graph) -> GradCx {
        GradCx::new(graph)
    }

    /// The graph with every node emitted so far.
    pub fn finish(self) -> Graph {
        self.into_graph()
    }

    /// `cmp(v, c)` for a scalar `c` (a bool tensor of `v`'s shape).
    fn cmp_scalar(
        &mut self,
        cmp: BinaryOp,
        v: ValueRef,
        c: f64,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let s = self.scalar(c, self.ty(v).dtype, of)?;
        self.binary(cmp, v, s, of)
    }

    /// `where(cond, a, 0)`.
    fn keep_where(
        &mut self,
        cond: ValueRef,
        a: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let zero = self.scalar(0.0, self.ty(a).dtype, of)?;
        self.emit(Op::Where, vec![cond, a, zero], of)
    }

    /// `g` where `lo < v < hi`, else 0 (the derivative of a clamp).
    fn keep_between(
        &mut self,
        v: ValueRef,
        lo: f64,
        hi: f64,
        g: ValueRef,
        of: NodeId,
    ) -> Result<ValueRef, AutodiffError> {
        let above = self.cmp_scalar(BinaryOp::Greater, v, lo, of)?;
        let below = self.cmp_scalar(BinaryOp::Less, v, hi, of)?;
        let inner = self.keep_where(below, g, of)?;
        self.keep_where(above, inner, of)
    }

    fn unary(&mut self, u: UnaryOp, v: ValueRef, of: NodeId) -> Result<ValueRef, AutodiffError> {
        self.emit(Op::Unary(u), vec![v], of)
    }

    /// `c - v` for a scalar `c`.
    fn rsub_scalar(&mut self, c: f64, v: ValueRef, of: NodeId) -> Result<ValueRef, AutodiffError> {
        let s = self.scalar(c, self.ty(v).dtype, of)?;
        self.sub(s, v, of)
    }

    /// `v + c` for a scalar `c`.
    fn add_scalar(&mut self, v: ValueRef, c: f64, of: NodeId) -> Result<ValueRef, AutodiffError> {
        let s = self.scalar(c, self.ty(v).dtype, of)?;
        self.add(v, s, of)
    }

    /// The cotangent of `z` given that of `act(z)`: `g · act'(z)`, from IR ops on the
    /// pre-activation `z`. `None` for an activation without a derivative here.
    pub(crate) fn activation_vjp(
        &mut self,
        act: UnaryOp,
        z: ValueRef,
        g: ValueRef,
        of: NodeId,
    ) -> Result<Option<ValueRef>, AutodiffError> {
        let r = match act {
            UnaryOp::Relu => {
                let pos = self.cmp_scalar(BinaryOp::Greater, z, 0.0, of)?;
                self.keep_where(pos, g, of)?
            }
            UnaryOp::Relu6 => self.keep_between(z, 0.0, 6.0, g, of)?,
            UnaryOp::LeakyRelu { alpha } => {
                // The forward takes x for x >= 0.
                let neg = self.cmp_scalar(BinaryOp::Less, z, 0.0, of)?;
                let scaled = self.scale(g, alpha, of)?;
                self.emit(Op::Where, vec![neg, scaled, g], of)?
            }
            UnaryOp::HardSigmoid { alpha, beta } => {
                let t = self.scale(z, alpha, of)?;
                let t = self.add_scalar(t, beta, of)?;
                let ga = self.scale(g, alpha, of)?;
                self.keep_between(t, 0.0, 1.0, ga, of)?
            }
            UnaryOp::HardSwish => {
                // y = z·clamp((z+3)/6, 0, 1): 0 below -3, 1 above 3, (2z+3)/6 between.
                let mid = self.scale(z, 2.0 / 6.0, of)?;
                let mid = self.add_scalar(mid, 0.5, of)?;
                let gmid = self.mul(g, mid, of)?;
                let above = self.cmp_scalar(BinaryOp::Greater, z, 3.0, of)?;
                let inner = self.emit(Op::Where, vec![above, g, gmid], of)?;
                let alive = self.cmp_scalar(BinaryOp::Greater, z, -3.0, of)?;
                self.keep_where(alive, inner, of)?
            }
            UnaryOp::Sigmoid => {
                let s = self.unary(UnaryOp::Sigmoid, z, of)?;
                let one_minus = self.rsub_scalar(1.0, s, of)?;
                let d = self.mul(s, one_minus, of)?;
                self.mul(g, d, of)?
            }
            UnaryOp::Silu => {
                // d/dz z·σ(z) = σ(z)·(1 + z·(1 − σ(z))).
                let s = self.unary(UnaryOp::Sigmoid, z, of)?;
                let one_minus = self.rsub_scalar(1.0, s, of)?;
                let zt = self.mul(z, one_minus, of)?;
                let t = self.add_scalar(zt, 1.0, of)?;
                let d = self.mul(s, t, of)?;
                self.mul(g, d, of)?
            }
            UnaryOp::Gelu { tanh: false } => {
                // Φ(z) + z·φ(z), Φ(z) = (1 + erf(z/√2))/2, φ(z) = exp(−z²/2)/√(2π).
                let zs = self.scale(z, std::f64::consts::FRAC_1_SQRT_2, of)?;
                let e = self.unary(UnaryOp::Erf, zs, of)?;
                let e1 = self.add_scalar(e, 1.0, of)?;
                let cdf = self.scale(e1, 0.5, of)?;
                let z2 = self.mul(z, z, of)?;
                let ex = self.scale(z2, -0.5, of)?;
                let ex = self.unary(UnaryOp::Exp, ex, of)?;
                let pdf = self.scale(ex, 1.0 / (2.0 * std::f64::consts::PI).sqrt(), of)?;
                let zp = self.mul(z, pdf, of)?;
                let d = self.add(cdf, zp, of)?;
                self.mul(g, d, of)?
            }
            UnaryOp::Gelu { tanh: true } => {
                // y = z(1 + tanh u)/2, u = c(z + k z³):
                // y' = (1 + t)/2 + z(1 − t²)·c(1 + 3k z²)/2.
                let (c, k) = ((2.0 / std::f64::consts::PI).sqrt(), 0.044715);
                let z2 = self.mul(z, z, of)?;
                let z3 = self.mul(z2, z, of)?;
                let kz3 = self.scale(z3, k, of)?;
                let inner = self.add(z, kz3, of)?;
                let u = self.scale(inner, c, of)?;
                let t = self.unary(UnaryOp::Tanh, u, of)?;
                let t1 = self.add_scalar(t, 1.0, of)?;
                let first = self.scale(t1, 0.5, of)?;
                let t2 = self.mul(t, t, of)?;
                let sech2 = self.rsub_scalar(1.0, t2, of)?;
                let kz2 = self.scale(z2, 3.0 * k, of)?;
                let du = self.add_scalar(kz2, 1.0, of)?;
                let du = self.scale(du, 0.5 * c, of)?;
                let zs = self.mul(z, sech2, of)?;
                let second = self.mul(zs, du, of)?;
                let d = self.add(first, second, of)?;
                self.mul(g, d, of)?
            }
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Tanh
            | UnaryOp::Erf
            | UnaryOp::Abs
            | UnaryOp::Mish
            | UnaryOp::Clip { .. } => return Ok(None),
        };
        Ok(Some(r))
    }
}
