//! Pins the formulas: each case is worked by hand from the α-β expressions.

use super::*;
use oar_ir::dist::ReduceOp;
use oar_ir::op::CommGroup;

fn link(gbs: f64, us: f64) -> Link {
    Link {
        kind: "t".into(),
        bandwidth_gbs: gbs,
        latency_us: us,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
}

#[test]
fn ring_all_reduce_is_two_n_minus_one_over_n_bytes_plus_two_n_minus_one_latencies() {
    // 1 GB over 4 ranks at 100 GB/s, 2 µs: 2·3/4 · 0.01 s + 2·3 · 2 µs.
    let l = link(100.0, 2.0);
    assert!(close(ring_all_reduce(4, 1e9, &l, 1.0), 0.015 + 12e-6));
    // Efficiency scales the bandwidth only.
    assert!(close(ring_all_reduce(4, 1e9, &l, 0.5), 0.030 + 12e-6));
    assert_eq!(ring_all_reduce(1, 1e9, &l, 1.0), 0.0);
}

#[test]
fn gather_scatter_all_to_all_broadcast_and_p2p() {
    let l = link(100.0, 2.0);
    // All-gather / reduce-scatter: (n−1)/n · B/β + (n−1)α.
    assert!(close(ring_gather(4, 1e9, &l, 1.0), 0.0075 + 6e-6));
    // All-to-all: the same volume and latency.
    assert!(close(all_to_all(4, 1e9, &l, 1.0), 0.0075 + 6e-6));
    // Broadcast: B/β + (n−1)α.
    assert!(close(broadcast(4, 1e9, &l, 1.0), 0.01 + 6e-6));
    // One message: α + B/β.
    assert!(close(p2p(1e9, &l, 1.0), 0.01 + 2e-6));
}

#[test]
fn tree_wins_for_small_messages_and_all_reduce_takes_the_faster() {
    let slow = link(100.0, 10.0);
    // Tree: 2B/β + 2⌈log₂ 64⌉α = 2e3/1e11 + 12 · 10 µs.
    assert!(close(tree_all_reduce(64, 1e3, &slow, 1.0), 2e-8 + 120e-6));
    assert!(all_reduce(64, 1e3, &slow, 1.0) < ring_all_reduce(64, 1e3, &slow, 1.0));
    assert_eq!(
        all_reduce(64, 1e3, &slow, 1.0),
        tree_all_reduce(64, 1e3, &slow, 1.0)
    );
    // Large messages: the ring's 2(n−1)/n < 2.
    assert_eq!(
        all_reduce(8, 1e9, &slow, 1.0),
        ring_all_reduce(8, 1e9, &slow, 1.0)
    );
}

#[test]
fn hierarchical_is_intra_scatter_inter_all_reduce_of_a_shard_intra_gather() {
    let (fast, net) = (link(300.0, 3.0), link(25.0, 10.0));
    let h = hierarchical_all_reduce(8, 16, 1e9, &fast, &net, 1.0);
    let want = 2.0 * ring_gather(8, 1e9, &fast, 1.0) + all_reduce(16, 1e9 / 8.0, &net, 1.0);
    assert!(close(h, want));
    assert!(h < ring_all_reduce(128, 1e9, &net, 1.0));
}

fn topo() -> Topology {
    Topology {
        devices_per_node: 4,
        intra_node: link(100.0, 1.0),
        inter_node: link(10.0, 20.0),
    }
}

#[test]
fn a_group_inside_a_node_uses_the_intra_node_link() {
    let t = topo();
    assert_eq!(t.link(4, 1).kind, t.intra_node.kind);
    assert_eq!(t.link_of(&[0, 1, 2, 3]), &t.intra_node);
    // Stride 2 over 4 ranks spans 8 devices: two nodes.
    assert_eq!(t.link(4, 2), &t.inter_node);
    assert_eq!(t.link_of(&[2, 6]), &t.inter_node);
    // Across nodes the hierarchical form is tried and is never slower than flat.
    let flat = all_reduce(8, 1e9, &t.inter_node, 1.0);
    let g = t.group_all_reduce(8, 1, 1e9, 1.0);
    assert!(g < flat);
    assert!(close(
        g,
        t.members_all_reduce(&[0, 1, 2, 3, 4, 5, 6, 7], 1e9, 1.0)
    ));
}

#[test]
fn graph_collectives_are_priced_by_their_mesh_axis() {
    let t = topo();
    // A 2×4 mesh over devices 0..8: axis 1 (4 ranks, stride 1) stays in a node, axis 0
    // (2 ranks, stride 4) crosses nodes.
    let mesh = ProcessMesh::new(vec![2, 4], vec!["dp".into(), "tp".into()]);
    let group = |axis| CommGroup {
        mesh: "m".into(),
        axis,
    };
    let ar = |axis| Op::AllReduce {
        op: ReduceOp::Sum,
        group: group(axis),
    };
    let b = 4e6;
    assert_eq!(
        t.op_time(&ar(1), Some(&mesh), b, 0.8),
        Some(all_reduce(4, b, &t.intra_node, 0.8))
    );
    assert_eq!(
        t.op_time(&ar(0), Some(&mesh), b, 0.8),
        Some(all_reduce(2, b, &t.inter_node, 0.8))
    );
    // All-gather's operand is one shard of the n× larger result.
    let ag = Op::AllGather {
        axis: 0,
        group: group(1),
    };
    assert_eq!(
        t.op_time(&ag, Some(&mesh), b, 0.8),
        Some(ring_gather(4, 4.0 * b, &t.intra_node, 0.8))
    );
    assert_eq!(
        t.op_time(&Op::Send { peer: 1 }, None, b, 0.8),
        Some(p2p(b, &t.intra_node, 0.8))
    );
    assert_eq!(
        t.op_time(&Op::Unary(oar_ir::op::UnaryOp::Relu), Some(&mesh), b, 0.8),
        None
    );
}
