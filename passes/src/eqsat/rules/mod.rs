//! Rewrite rules, as tables by topic. A rule looks at one e-node (or, for global rules, the
//! whole e-graph) and proposes terms equal to existing classes; the saturation loop adds and
//! unions them. Matchers check both operand orders of `add` and `mul` themselves: no blanket
//! commutativity or associativity rules.

pub mod algebra;
pub mod fold;
pub mod fusion;
pub mod recover;

use super::lang::{TensorNode, EG};
use egg::Id;
use oar_ir::op::{Literal, Op, UnaryOp};
use oar_ir::TensorType;

/// A term to add: existing classes, new ops over terms, literal constants, projections.
#[derive(Debug, Clone)]
pub enum Term {
    Class(Id),
    Op(Op, Vec<Term>),
    /// A scalar f32 constant.
    Scalar(f64),
    /// An i64 or f32 constant of a given type.
    Const(Literal, TensorType),
    Proj(u32, Box<Term>),
}

/// `target` equals `term`.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub target: Id,
    pub term: Term,
}

/// How a rule searches.
#[derive(Clone, Copy)]
pub enum Search {
    /// Called for every e-node with its class.
    Local(fn(&EG, Id, &Op, &[Id]) -> Vec<Rewrite>),
    /// Called once per iteration over the whole e-graph.
    Global(fn(&EG) -> Vec<Rewrite>),
}

/// A named rewrite rule.
#[derive(Clone, Copy)]
pub struct Rule {
    /// kebab-case name used in reports.
    pub name: &'static str,
    pub search: Search,
}

/// Every rule, by topic.
pub fn all_rules() -> Vec<Rule> {
    [
        fold::rules(),
        recover::rules(),
        algebra::rules(),
        fusion::rules(),
    ]
    .concat()
}

/// Rules by name (for tests and `--rules`).
pub fn rule(name: &str) -> Option<Rule> {
    all_rules().into_iter().find(|r| r.name == name)
}

// Helpers shared by the rule tables.

/// The op nodes of a class.
pub fn ops(eg: &EG, c: Id) -> impl Iterator<Item = (&Op, &[Id])> {
    eg[c].nodes.iter().filter_map(|n| match n {
        TensorNode::Op(k, ch) => Some((&k.op, ch.as_slice())),
        TensorNode::Proj(..) => None,
    })
}

/// Whether two ids are the same class.
pub fn same(eg: &EG, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

/// The single value of a one-element constant class.
pub fn scalar(eg: &EG, c: Id) -> Option<f64> {
    ops(eg, c).find_map(|(op, _)| match op {
        Op::Constant(Literal::Floats(v)) if v.len() == 1 => Some(v[0]),
        Op::Constant(Literal::Ints(v)) if v.len() == 1 => Some(v[0] as f64),
        _ => None,
    })
}

/// `c` is a constant close to `want`.
pub fn is_scalar(eg: &EG, c: Id, want: f64) -> bool {
    scalar(eg, c).is_some_and(|v| (v - want).abs() <= 1e-4 * want.abs().max(1.0))
}

/// The class's (first) type.
pub fn ty(eg: &EG, c: Id) -> &TensorType {
    &eg[c].data.types[0]
}

/// Computed from parameters and constants only.
pub fn known(eg: &EG, c: Id) -> bool {
    eg[c].data.known
}

/// Both orders of a binary op's operands.
pub fn both(ch: &[Id]) -> [(Id, Id); 2] {
    [(ch[0], ch[1]), (ch[1], ch[0])]
}

/// The operand of a unary op of the given kind in class `c`.
pub fn unary_arg(eg: &EG, c: Id, is: impl Fn(&UnaryOp) -> bool) -> Option<Id> {
    ops(eg, c).find_map(|(op, ch)| match op {
        Op::Unary(u) if is(u) => Some(ch[0]),
        _ => None,
    })
}

/// Operand pairs of binary ops of kind `b` in class `c`, both orders for commutative ops.
pub fn binary_args(eg: &EG, c: Id, b: oar_ir::op::BinaryOp) -> Vec<(Id, Id)> {
    use oar_ir::op::BinaryOp::*;
    ops(eg, c)
        .filter(|(op, _)| matches!(op, Op::Binary(x) if *x == b))
        .flat_map(|(_, ch)| {
            if matches!(b, Add | Mul | Max | Min) {
                both(ch).to_vec()
            } else {
                vec![(ch[0], ch[1])]
            }
        })
        .collect()
}

pub(crate) fn class(id: Id) -> Term {
    Term::Class(id)
}

pub(crate) fn op(o: Op, ch: Vec<Term>) -> Term {
    Term::Op(o, ch)
}

pub(crate) fn rewrite(target: Id, term: Term) -> Rewrite {
    Rewrite { target, term }
}
