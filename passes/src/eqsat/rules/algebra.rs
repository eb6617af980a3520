//! Algebra: transpose and reshape chains, squeeze/unsqueeze pairs, matmuls that share an
//! operand merged into one matmul and a split (Q/K/V), convs on one input merged along
//! output channels.

use super::*;
use crate::eqsat::lang::TensorNode;
use oar_ir::op::{ConvAttrs, MatMulAttrs};
use std::collections::BTreeMap;

#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // transpose(transpose(x, p), q) = transpose(x, p∘q), or x when that is the identity
        Rule { name: "transpose-transpose", search: Search::Local(transpose_transpose) },
        // reshape(reshape(x, s1), s2) = reshape(x, s2)
        Rule { name: "reshape-reshape", search: Search::Local(reshape_reshape) },
        // reshape(x, s) = x when s is x's shape
        Rule { name: "reshape-identity", search: Search::Local(reshape_identity) },
        // squeeze(unsqueeze(x, a), a) = x
        Rule { name: "squeeze-unsqueeze", search: Search::Local(squeeze_unsqueeze) },
        // x·w1, x·w2, … = split(x·[w1 w2 …])   (constant rank-2 weights)
        Rule { name: "merge-matmuls-sharing-lhs", search: Search::Global(merge_matmuls) },
        // conv(x, w1), conv(x, w2), … = split(conv(x, [w1; w2; …]))   (same attributes)
        Rule { name: "merge-convs-sharing-input", search: Search::Global(merge_convs) },
    ]
}

fn transpose_transpose(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    let Op::Transpose { perm: q } = o else {
        return vec![];
    };
    ops(eg, ch[0])
        .filter_map(|(inner, ich)| match inner {
            Op::Transpose { perm: p } => {
                let r: Vec<usize> = q.iter().map(|&i| p[i]).collect();
                let t = if r.iter().enumerate().all(|(i, &v)| i == v) {
                    class(ich[0])
                } else {
                    op(Op::Transpose { perm: r }, vec![class(ich[0])])
                };
                Some(rewrite(id, t))
            }
            _ => None,
        })
        .collect()
}

fn reshape_reshape(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    let Op::Reshape { .. } = o else { return vec![] };
    ops(eg, ch[0])
        .filter(|(inner, _)| matches!(inner, Op::Reshape { .. }))
        .map(|(_, ich)| rewrite(id, op(o.clone(), vec![class(ich[0])])))
        .collect()
}

fn reshape_identity(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    match o {
        Op::Reshape { .. } | Op::Flatten { .. } if ty(eg, ch[0]) == ty(eg, id) => {
            vec![rewrite(id, class(ch[0]))]
        }
        _ => vec![],
    }
}

fn norm_axes(axes: &[i64], rank: usize) -> Vec<i64> {
    let mut v: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + rank as i64 } else { a })
        .collect();
    v.sort();
    v
}

fn squeeze_unsqueeze(eg: &EG, id: Id, o: &Op, ch: &[Id]) -> Vec<Rewrite> {
    let Op::Squeeze { axes } = o else {
        return vec![];
    };
    let rank = ty(eg, ch[0]).rank();
    ops(eg, ch[0])
        .filter_map(|(inner, ich)| match inner {
            Op::Unsqueeze { axes: u }
                if !axes.is_empty() && norm_axes(u, rank) == norm_axes(axes, rank) =>
            {
                Some(rewrite(id, class(ich[0])))
            }
            _ => None,
        })
        .collect()
}

/// Groups of (output class, weight class, output width) keyed by a shared operand and attrs.
type Groups<K> = BTreeMap<K, Vec<(Id, Id, u64)>>;

fn proj_rewrites(group: &[(Id, Id, u64)], merged: Term, axis: i64) -> Vec<Rewrite> {
    let sizes: Vec<u64> = group.iter().map(|g| g.2).collect();
    let split = op(Op::Split { axis, sizes }, vec![merged]);
    group
        .iter()
        .enumerate()
        .map(|(i, g)| rewrite(g.0, Term::Proj(i as u32, Box::new(split.clone()))))
        .collect()
}

fn dedup(groups: &mut Groups<impl Ord>) {
    for v in groups.values_mut() {
        v.sort();
        v.dedup_by_key(|g| g.1);
        // At most four at a time keeps the e-graph small (Q, K, V and one more).
        v.truncate(4);
    }
}

fn merge_matmuls(eg: &EG) -> Vec<Rewrite> {
    let mut groups: Groups<(Id, bool)> = BTreeMap::new();
    for class in eg.classes() {
        for n in &class.nodes {
            let TensorNode::Op(k, ch) = n else { continue };
            let Op::MatMul(MatMulAttrs {
                transpose_a,
                transpose_b: false,
            }) = &k.op
            else {
                continue;
            };
            let w = ty(eg, ch[1]);
            let Some(width) = w.shape.0.get(1).and_then(|d| d.as_static()) else {
                continue;
            };
            if w.rank() == 2 && known(eg, ch[1]) && !known(eg, ch[0]) {
                groups
                    .entry((eg.find(ch[0]), *transpose_a))
                    .or_default()
                    .push((class.id, eg.find(ch[1]), width));
            }
        }
    }
    dedup(&mut groups);
    let mut out = Vec::new();
    for ((x, transpose_a), g) in groups.into_iter().filter(|(_, g)| g.len() >= 2) {
        let m = MatMulAttrs {
            transpose_a,
            transpose_b: false,
        };
        let w = op(
            Op::Concat { axis: 1 },
            g.iter().map(|e| class(e.1)).collect(),
        );
        out.extend(proj_rewrites(&g, op(Op::MatMul(m), vec![class(x), w]), -1));
    }
    out
}

fn merge_convs(eg: &EG) -> Vec<Rewrite> {
    let mut groups: Groups<(Id, String)> = BTreeMap::new();
    let mut attrs_of: BTreeMap<String, ConvAttrs> = BTreeMap::new();
    let mut biases: BTreeMap<Id, Id> = BTreeMap::new();
    for class in eg.classes() {
        for n in &class.nodes {
            let TensorNode::Op(k, ch) = n else { continue };
            let Op::Conv2d(a) = &k.op else { continue };
            let Some(width) = ty(eg, ch[1]).shape.0[0].as_static() else {
                continue;
            };
            if a.groups != 1 || !ch[1..].iter().all(|&c| known(eg, c)) {
                continue;
            }
            let key = format!("{a:?}|bias={}", ch.len() == 3);
            attrs_of.insert(key.clone(), a.clone());
            if let Some(&b) = ch.get(2) {
                biases.insert(eg.find(ch[1]), b);
            }
            groups.entry((eg.find(ch[0]), key)).or_default().push((
                class.id,
                eg.find(ch[1]),
                width,
            ));
        }
    }
    dedup(&mut groups);
    let mut out = Vec::new();
    for ((x, key), g) in groups.into_iter().filter(|(_, g)| g.len() >= 2) {
        let w = op(
            Op::Concat { axis: 0 },
            g.iter().map(|e| class(e.1)).collect(),
        );
        let mut ins = vec![class(x), w];
        if key.ends_with("bias=true") {
            let bs: Option<Vec<Term>> = g
                .iter()
                .map(|e| biases.get(&e.1).map(|&b| class(b)))
                .collect();
            let Some(bs) = bs else { continue };
            ins.push(op(Op::Concat { axis: 0 }, bs));
        }
        out.extend(proj_rewrites(
            &g,
            op(Op::Conv2d(attrs_of[&key].clone()), ins),
            1,
        ));
    }
    out
}
