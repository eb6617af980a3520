//! Activation placements, planned and declared: Megatron-SP on ernie-3.0-titan-tiny (tp 2 with
//! sequence parallelism on the 4-device CPU cluster), and a user's `#dist` on activations of
//! a small text-format graph. Both are partitioned into per-rank graphs that run in threads
//! with the in-process communicator and match the single-device graph to 1e-5.

mod support;

use oar_ir::dist::{Placement, ReduceOp};
use oar_ir::op::Op;
use oar_ir::{Graph, Node, NodeId};
use oar_passes::parallel::intra_op::{Layout, OpLayout};
use oar_passes::parallel::{partition, Constraints, Evaluation, RankGraph};
use oar_runtime::{init::init_weights, run, HostTensor};
use std::collections::BTreeMap;
use support::*;

/// The parameter name a node reads directly, if it is a parameter.
fn param_name<'a>(g: &'a Graph, n: &Node, operand: usize) -> Option<&'a str> {
    if let Op::Param(p) = &g.node(n.inputs.get(operand)?.node).op {
        Some(p.name.as_str())
    } else {
        None
    }
}

/// Matmuls of a rank's graph whose weight's name ends with one of `suffixes`.
fn linears<'a>(rg: &'a RankGraph, suffixes: &[&str]) -> Vec<(NodeId, &'a Node)> {
    let g = &rg.graph;
    g.iter()
        .filter(|(_, n)| matches!(n.op, Op::MatMul(_)))
        .filter(|(_, n)| {
            param_name(g, n, 1).is_some_and(|w| suffixes.iter().any(|s| w.ends_with(s)))
        })
        .collect()
}

fn count(rg: &RankGraph, what: fn(&Op) -> bool) -> usize {
    rg.graph.nodes().iter().filter(|n| what(&n.op)).count()
}

/// Each layer's parameter prefix, in the planner's layer order.
const LAYERS: [&str; 4] = [
    "encoder.layers.0.",
    "encoder.layers.1.",
    "nlu.encoder.layers.0.",
    "nlg.encoder.layers.0.",
];

/// The layer whose output each layer reads (the task modules both read the universal
/// stack's last layer); the first reads the replicated embeddings.
const PREVIOUS: [Option<usize>; 4] = [None, Some(0), Some(1), Some(1)];

/// Whether a layer's output is token-sharded. ERNIE's layers are post-norm: the output is
/// `norm(residual + ffn)`, with the residual the attention block's norm output (the
/// chain's `norm2`), so it is token-sharded when either that norm or the chain's exit
/// (`norm1`'s input) is; an elementwise add keeps its operand's shard.
fn output_tokens(e: &Evaluation, l: usize) -> bool {
    let ls = &e.layer_layouts[l];
    ls.iter()
        .any(|c| (c.op == "norm1" || c.op == "norm2") && c.input == Layout::Tokens)
}

/// The chain choices of the layer a weight belongs to, and where `op` is among them.
fn choice<'a>(e: &'a Evaluation, weight: &str, op: &str) -> (&'a [OpLayout], usize) {
    let l = LAYERS.iter().position(|p| weight.starts_with(p)).unwrap();
    let ls = &e.layer_layouts[l];
    (ls, ls.iter().position(|c| c.op == op).unwrap())
}

/// Annotates, partitions and runs `e` on ernie-3.0-titan-tiny (dp 2 × tp 2), checking the
/// collectives around every linear against the layer's chain choices: a row-parallel
/// product is reduce-scattered along tokens when the next op consumes token-sharded
/// activations (else all-reduced); the FFN all-gathers its input when the norm before it ran
/// token-sharded, and attention when the layer it reads left its output token-sharded (q,
/// k and v sharing one gather). Returns the number of reduce-scatters and all-gathers on
/// rank 0.
fn check_sequence_parallel(e: &Evaluation) -> (usize, usize) {
    let seq = 8;
    let g = annotated(e, 4, seq);
    let ranks = partition(&g).unwrap();
    assert_eq!(ranks.len(), 4);
    for rg in &ranks {
        let rows = linears(rg, &["out_proj.weight", "linear2.weight"]);
        assert_eq!(rows.len(), 2 * LAYERS.len());
        for &(id, n) in &rows {
            let w = param_name(&rg.graph, n, 1).unwrap();
            let (ls, at) = choice(
                e,
                w,
                if w.ends_with("linear2.weight") {
                    "ffn2"
                } else {
                    "out"
                },
            );
            let tokens = ls[(at + 1) % ls.len()].input == Layout::Tokens;
            let users: Vec<&Node> = rg
                .graph
                .nodes()
                .iter()
                .filter(|u| u.inputs.iter().any(|v| v.node == id))
                .collect();
            let ok = users.len() == 1
                && match (&users[0].op, tokens) {
                    (
                        Op::ReduceScatter {
                            op: ReduceOp::Sum,
                            axis: 1,
                            ..
                        },
                        true,
                    ) => true,
                    (
                        Op::AllReduce {
                            op: ReduceOp::Sum, ..
                        },
                        false,
                    ) => true,
                    (_, _) => false,
                };
            assert!(
                ok,
                "rank {} {w}: token-sharded next {tokens}, users {:?}",
                rg.rank,
                users.iter().map(|u| u.op.name()).collect::<Vec<_>>()
            );
        }
        let cols = linears(rg, &["q_proj.weight", "k_proj.weight", "v_proj.weight"]);
        let ffn1 = linears(rg, &["linear1.weight"]);
        assert_eq!((cols.len(), ffn1.len()), (3 * LAYERS.len(), LAYERS.len()));
        for &(_, n) in cols.iter().chain(&ffn1) {
            let w = param_name(&rg.graph, n, 1).unwrap();
            let l = LAYERS.iter().position(|p| w.starts_with(p)).unwrap();
            let ffn = w.ends_with("linear1.weight");
            let (ls, at) = choice(e, w, if ffn { "ffn1" } else { "qkv" });
            assert_eq!(ls[at].input, Layout::Replicated, "{w}: column-parallel");
            let tokens = if ffn {
                ls[choice(e, w, "norm2").1].input == Layout::Tokens
            } else {
                PREVIOUS[l].is_some_and(|p| output_tokens(e, p))
            };
            let x = rg.graph.node(n.inputs[0].node);
            assert_eq!(
                matches!(x.op, Op::AllGather { axis: 1, .. }),
                tokens,
                "rank {} {w}: operand from {}",
                rg.rank,
                x.op.name()
            );
        }
        // One operand for q, k and v together, and one for both task modules, which read
        // the same universal output (gathered once).
        let mut qkv_in: Vec<_> = cols.iter().map(|(_, n)| n.inputs[0]).collect();
        qkv_in.dedup();
        assert_eq!(qkv_in.len(), LAYERS.len() - 1);
    }

    let weights = init_weights(&g, 3).unwrap();
    let ins = inputs(&g, seq);
    let want = run(&g, &ordered(&g, &ins), &weights).unwrap();
    let got = run_ranks(&ranks, &g, &ins, &weights);
    for rg in &ranks {
        assert_eq!(rg.outputs, (0..want.len()).collect::<Vec<_>>());
    }
    assert_ranks_match(&ranks, &got, &want);
    let r0 = &ranks[0];
    (
        count(r0, |op| matches!(op, Op::ReduceScatter { .. })),
        count(r0, |op| matches!(op, Op::AllGather { .. })),
    )
}

#[test]
fn the_planner_s_sequence_parallelism_reaches_the_ranks_as_megatron_sp() {
    let e = plan_constrained(&Constraints {
        dp: Some(2),
        tp: Some(2),
        pp: Some(1),
        sequence_parallel: Some(true),
        ..Default::default()
    });
    assert!(e.plan.sequence_parallel);
    // Korthikanti et al.'s layout: norms, dropouts and residual adds on token-sharded
    // activations between the tensor-parallel blocks.
    assert_eq!(
        e.layer_strategy,
        [
            "norm1: sharded",
            "qkv: column",
            "attention: heads",
            "out: row",
            "norm2: sharded",
            "ffn1: column",
            "gelu: sharded",
            "ffn2: row"
        ]
    );
    // Written onto the graph: the row-parallel results token-sharded (their operands
    // feature-sharded); the column-parallel operands gathered.
    let g = annotated(&e, 4, 8);
    let dist = |w: &str| {
        let n = g
            .nodes()
            .iter()
            .find(|n| matches!(n.op, Op::MatMul(_)) && param_name(&g, n, 1) == Some(w))
            .unwrap();
        n.dist.clone().unwrap()
    };
    let (s0, s1, s2, r) = (
        Placement::Shard(0),
        Placement::Shard(1),
        Placement::Shard(2),
        Placement::Replicate,
    );
    let out = dist("encoder.layers.1.self_attn.out_proj.weight");
    assert_eq!(out.outputs, vec![vec![s0, s1]]);
    assert_eq!(out.inputs, vec![vec![s0, s2], vec![r, s0]]);
    let ffn1 = dist("encoder.layers.1.linear1.weight");
    assert_eq!(ffn1.inputs, vec![vec![s0, r], vec![r, s1]]);
    assert!(ffn1.outputs.is_empty());
    let ffn2 = dist("encoder.layers.1.linear2.weight");
    assert_eq!(ffn2.outputs, vec![vec![s0, s1]]);
    let qkv = dist("encoder.layers.1.self_attn.q_proj.weight");
    assert_eq!(qkv.inputs, vec![vec![s0, r], vec![r, s1]]);
    // Two reduce-scatters per layer; an all-gather before each FFN and before attention
    // but in the first layer (which reads the replicated embeddings) and once for both
    // task modules (plus the heads' gathers).
    let (rs, ag) = check_sequence_parallel(&e);
    assert_eq!(rs, 2 * LAYERS.len());
    assert!(ag >= 2 * LAYERS.len() - 2, "{ag}");
}

/// A user's placements on activations: `%h` declared token-sharded (a local slice), `%y`'s
/// operand declared replicated (an all-gather), and `%z`, a row-parallel product, declared
/// sharded (a reduce-scatter).
const DECLARED: &str = r#"
mesh @m = {shape=[2], axes=["x"]}

graph @declared(%x: f32[4,6] #dist<mesh=@m, [R]>) -> (f32[4,6], f32[4,6]) {
  %w1 = param "w1" {init=normal(0.0, 0.5)} : f32[6,6] #dist<mesh=@m, [R]>
  %h = matmul(%x, %w1) : f32[4,6] #dist<mesh=@m, [S(0)]>
  %a = tanh(%h) : f32[4,6]
  %w2 = param "w2" {init=normal(0.0, 0.5)} : f32[6,6] #dist<mesh=@m, [S(1)]>
  %y = matmul(%a, %w2) : f32[4,6] #dist<mesh=@m, in=[[R], [S(1)]]>
  %w3 = param "w3" {init=normal(0.0, 0.5)} : f32[6,6] #dist<mesh=@m, [S(0)]>
  %z = matmul(%y, %w3) : f32[4,6] #dist<mesh=@m, [S(0)]>
  return %y, %z
}
"#;

#[test]
fn declared_activation_placements_are_honoured() {
    let g = oar_ir::parse(DECLARED).unwrap();
    let ranks = partition(&g).unwrap();
    assert_eq!(ranks.len(), 2);
    for rg in &ranks {
        let ops: Vec<&str> = rg.graph.nodes().iter().map(|n| n.op.name()).collect();
        // %h replicated → S(0) by a slice; %a is computed on half the rows; %y needs %a
        // whole (all-gather) and ends column-split; %z is partial and declared S(0).
        let after = |name: &str| {
            let id = rg.graph.find(name).unwrap();
            rg.graph
                .nodes()
                .iter()
                .find(|u| u.inputs.iter().any(|v| v.node == id))
                .map(|u| u.op.name())
        };
        assert_eq!(after("h"), Some("slice"), "{ops:?}");
        let a = rg.graph.find("a").unwrap();
        assert_eq!(rg.graph.node(a).outputs[0].to_string(), "f32[2,6]");
        assert_eq!(after("a"), Some("all_gather"), "{ops:?}");
        assert_eq!(after("z"), Some("reduce_scatter"), "{ops:?}");
        let z = rg.graph.find("z").unwrap();
        let rs = rg
            .graph
            .nodes()
            .iter()
            .find(|n| n.inputs.first().is_some_and(|v| v.node == z))
            .unwrap();
        assert_eq!(rs.outputs[0].to_string(), "f32[2,6]");
    }
    // Random non-zero inputs; the ranks return the whole outputs.
    let weights = init_weights(&g, 11).unwrap();
    let x: Vec<f32> = (0..24).map(|k| ((k * 7 % 11) as f32 - 5.0) / 4.0).collect();
    let ins = BTreeMap::from([("x".to_string(), HostTensor::f32(vec![4, 6], x))]);
    let want = run(&g, &ordered(&g, &ins), &weights).unwrap();
    let got = run_ranks(&ranks, &g, &ins, &weights);
    assert_ranks_match(&ranks, &got, &want);
    // Without the declarations the same graph needs no gather or reduce-scatter.
    let plain = oar_ir::parse(
        &DECLARED
            .replace("#dist<mesh=@m, [S(0)]>\n  %a", "\n  %a")
            .replace(" #dist<mesh=@m, in=[[R], [S(1)]]>", ""),
    )
    .unwrap();
    let r0 = &partition(&plain).unwrap()[0];
    assert_eq!(count(r0, |op| matches!(op, Op::Slice(_))), 0);
}
