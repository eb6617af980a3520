//! What a job loses by being large: the slowest of n ranks sets every synchronised step
//! (stragglers), collectives that cross an oversubscribed spine share its links
//! (contention), and the all-reduce algorithm changes with group and message size (ring,
//! tree or hierarchical, as NCCL chooses). Formulas are listed in passes/README.md.

use crate::comm_cost::{hierarchical_all_reduce, ring_all_reduce, tree_all_reduce, Topology};
use oar_ir::cluster::Link;
use serde::Serialize;

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// below 1.2e-9 on (0, 1)); `p` is clamped into the open interval.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Expected maximum of `n` independent standard normals (Blom's order-statistic
/// approximation Φ⁻¹((n − 0.375)/(n + 0.25)); exactly 0 for one rank, ≈ √(2 ln n) for
/// large n, within 5% of the exact values for n ≥ 2 and 1% from n = 10).
pub fn expected_max_normal(n: u64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    inverse_normal_cdf((n - 0.375) / (n + 0.25))
}

/// Seconds the slowest of `n` ranks adds to a synchronised step of `step` seconds when each
/// rank's step time varies with coefficient of variation `cv`: `step · cv · E[max of n]`.
pub fn straggler_seconds(step: f64, n: u64, cv: f64) -> f64 {
    step * cv.max(0.0) * expected_max_normal(n)
}

/// The inter-node link as a group spanning `nodes` nodes sees it: its bandwidth divided by
/// the spine's `oversubscription` once the group leaves one leaf of `nodes_per_leaf` nodes,
/// unchanged inside a leaf or on a non-blocking (1:1, or unset) network.
pub fn contended_link(
    link: &Link,
    nodes: u64,
    nodes_per_leaf: Option<u32>,
    oversubscription: Option<f64>,
) -> Link {
    let ratio = oversubscription.unwrap_or(1.0).max(1.0);
    let crosses = nodes_per_leaf.is_none_or(|leaf| nodes > leaf as u64);
    let mut out = link.clone();
    if nodes > 1 && crosses && ratio > 1.0 {
        out.bandwidth_gbs /= ratio;
    }
    out
}

/// Nodes a group of `size` ranks at `stride` spans when each node holds `per_node` devices.
pub fn nodes_spanned(size: u64, stride: u64, per_node: u64) -> u64 {
    let per_node = per_node.max(1);
    size.min((size * stride.max(1)).div_ceil(per_node)).max(1)
}

/// The all-reduce algorithm NCCL would pick for a group and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllReduceAlgorithm {
    /// One rank: nothing to reduce.
    None,
    /// Bandwidth-optimal for large messages: `2(n−1)/n · B/β + 2(n−1)·α`.
    Ring,
    /// Latency-optimal for small messages or many ranks: `2·B/β + 2⌈log₂n⌉·α`.
    Tree,
    /// Reduce-scatter in the node, all-reduce of 1/g shards across nodes, all-gather.
    Hierarchical,
}

/// The cheapest all-reduce of `bytes` over `size` ranks at `stride` and its time: the
/// faster of ring and tree on the link the group spans, or the two-level algorithm when the
/// group spans nodes with several members in each (as `Topology::group_all_reduce`).
pub fn choose_all_reduce(
    topo: &Topology,
    size: u64,
    stride: u64,
    bytes: f64,
    eff: f64,
) -> (AllReduceAlgorithm, f64) {
    if size <= 1 {
        return (AllReduceAlgorithm::None, 0.0);
    }
    let link = topo.link(size, stride);
    let mut best = (
        AllReduceAlgorithm::Ring,
        ring_all_reduce(size, bytes, link, eff),
    );
    let tree = tree_all_reduce(size, bytes, link, eff);
    if tree < best.1 {
        best = (AllReduceAlgorithm::Tree, tree);
    }
    let per_node = (topo.devices_per_node / stride.max(1)).clamp(1, size);
    if per_node > 1 && per_node < size {
        let h = hierarchical_all_reduce(
            per_node,
            size / per_node,
            bytes,
            &topo.intra_node,
            &topo.inter_node,
            eff,
        );
        if h < best.1 {
            best = (AllReduceAlgorithm::Hierarchical, h);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_rank_has_no_straggler_and_many_follow_the_order_statistics() {
        assert_eq!(expected_max_normal(1), 0.0);
        assert_eq!(straggler_seconds(10.0, 1, 0.05), 0.0);
        // Exact expected maxima of n standard normals: 0.5642 (2), 1.5388 (10), 2.5076 (100).
        for (n, exact) in [(2u64, 0.5642), (10, 1.5388), (100, 2.5076)] {
            let e = expected_max_normal(n);
            let tol = if n < 10 { 0.05 } else { 0.01 };
            assert!((e - exact).abs() / exact < tol, "n={n}: {e} vs {exact}");
        }
        // The large-n rate √(2 ln n) bounds it from above.
        let n = 1u64 << 20;
        assert!(expected_max_normal(n) < (2.0 * (n as f64).ln()).sqrt());
        assert!((inverse_normal_cdf(0.975) - 1.959964).abs() < 1e-6);
        assert!(
            (straggler_seconds(2.0, 100, 0.01) - 2.0 * 0.01 * expected_max_normal(100)).abs()
                < 1e-15
        );
    }

    #[test]
    fn no_oversubscription_means_no_contention() {
        let l = Link {
            kind: "ib".into(),
            bandwidth_gbs: 25.0,
            latency_us: 10.0,
        };
        assert_eq!(contended_link(&l, 64, Some(16), None), l);
        assert_eq!(contended_link(&l, 64, Some(16), Some(1.0)), l);
        // Inside one leaf the spine is not used.
        assert_eq!(contended_link(&l, 16, Some(16), Some(4.0)), l);
        assert_eq!(
            contended_link(&l, 17, Some(16), Some(4.0)).bandwidth_gbs,
            6.25
        );
        assert_eq!(nodes_spanned(32, 4, 8), 16);
        assert_eq!(nodes_spanned(2, 4, 8), 1);
        assert_eq!(nodes_spanned(16, 64, 8), 16);
    }

    fn topo() -> Topology {
        let link = |bw: f64, lat: f64| Link {
            kind: "l".into(),
            bandwidth_gbs: bw,
            latency_us: lat,
        };
        Topology {
            devices_per_node: 8,
            intra_node: link(300.0, 3.0),
            inter_node: link(25.0, 10.0),
        }
    }

    #[test]
    fn algorithm_follows_message_size_as_nccl_does() {
        let t = topo();
        // Small message across many nodes: latency dominates, the tree wins.
        assert_eq!(
            choose_all_reduce(&t, 512, 8, 1e3, 0.8).0,
            AllReduceAlgorithm::Tree
        );
        // Large message, one rank per node: the ring.
        assert_eq!(
            choose_all_reduce(&t, 16, 8, 1e9, 0.8).0,
            AllReduceAlgorithm::Ring
        );
        // Large message, several ranks per node over many nodes: two levels.
        assert_eq!(
            choose_all_reduce(&t, 64, 2, 1e9, 0.8).0,
            AllReduceAlgorithm::Hierarchical
        );
        assert_eq!(
            choose_all_reduce(&t, 1, 1, 1e9, 0.8),
            (AllReduceAlgorithm::None, 0.0)
        );
        let (_, secs) = choose_all_reduce(&t, 64, 2, 1e9, 0.8);
        assert!((secs - t.group_all_reduce(64, 2, 1e9, 0.8)).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn stragglers_grow_with_ranks_and_contention_never_speeds_up(
            n in 1u64..100_000, ratio in 1.0f64..8.0, nodes in 1u64..512,
        ) {
            prop_assert!(expected_max_normal(n + 1) >= expected_max_normal(n));
            let l = Link { kind: "ib".into(), bandwidth_gbs: 25.0, latency_us: 10.0 };
            prop_assert!(contended_link(&l, nodes, Some(8), Some(ratio)).bandwidth_gbs <= 25.0);
        }
    }
}
