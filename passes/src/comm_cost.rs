//! The one price of communication: α-β models of collectives over `ir::Cluster` links, and
//! the topology that says which link a group of ranks spans. The graph cost model
//! (`roofline::CostModel`, pricing `all_reduce`/`all_gather`/… nodes) and the training cost model
//! (`parallel::step_cost`) both use these functions; their formulas are pinned by the tests below
//! and listed in passes/README.md.
//!
//! Notation: `n` ranks, `B` bytes per rank, link bandwidth `β` (bytes/s) reached at a
//! fraction `e`, latency `α` per message.

use oar_ir::cluster::{Cluster, Link};
use oar_ir::dist::ProcessMesh;
use oar_ir::op::{CollectiveKind, Op};

/// Fraction of link bandwidth collectives reach (NCCL bus bandwidth over link rate).
pub const COMM_EFFICIENCY: f64 = 0.8;

/// Ring all-reduce (Thakur et al. 2005; NCCL): `2(n−1)/n · B/(β·e) + 2(n−1)·α`.
pub fn ring_all_reduce(n: u64, bytes: f64, link: &Link, eff: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    2.0 * (n - 1.0) / n * bytes / (link.bandwidth() * eff) + 2.0 * (n - 1.0) * link.latency()
}

/// Ring all-gather or reduce-scatter, half an all-reduce: `(n−1)/n · B/(β·e) + (n−1)·α`.
/// `bytes` is the whole (gathered) tensor.
pub fn ring_gather(n: u64, bytes: f64, link: &Link, eff: f64) -> f64 {
    ring_all_reduce(n, bytes, link, eff) / 2.0
}

/// Tree (double binary tree) all-reduce: `2·B/(β·e) + 2⌈log₂n⌉·α`; wins for small messages.
pub fn tree_all_reduce(n: u64, bytes: f64, link: &Link, eff: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    2.0 * bytes / (link.bandwidth() * eff) + 2.0 * (n as f64).log2().ceil() * link.latency()
}

/// The faster of ring and tree, as NCCL picks.
pub fn all_reduce(n: u64, bytes: f64, link: &Link, eff: f64) -> f64 {
    ring_all_reduce(n, bytes, link, eff).min(tree_all_reduce(n, bytes, link, eff))
}

/// Two-level all-reduce for a group of `nodes × per_node` ranks: reduce-scatter inside each
/// node, all-reduce of the 1/per_node shards across nodes, all-gather inside the node
/// (NCCL's and Horovod's hierarchical algorithm).
pub fn hierarchical_all_reduce(
    per_node: u64,
    nodes: u64,
    bytes: f64,
    intra: &Link,
    inter: &Link,
    eff: f64,
) -> f64 {
    2.0 * ring_gather(per_node, bytes, intra, eff)
        + all_reduce(nodes, bytes / per_node.max(1) as f64, inter, eff)
}

/// All-to-all among `n` ranks, each sending `(n−1)/n` of its `B`:
/// `(n−1)/n · B/(β·e) + (n−1)·α`.
pub fn all_to_all(n: u64, bytes: f64, link: &Link, eff: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    (n as f64 - 1.0) / n as f64 * bytes / (link.bandwidth() * eff)
        + (n as f64 - 1.0) * link.latency()
}

/// Pipelined (chain) broadcast from one root: `B/(β·e) + (n−1)·α`.
pub fn broadcast(n: u64, bytes: f64, link: &Link, eff: f64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    bytes / (link.bandwidth() * eff) + (n as f64 - 1.0) * link.latency()
}

/// One point-to-point message: `α + B/(β·e)`.
pub fn p2p(bytes: f64, link: &Link, eff: f64) -> f64 {
    link.latency() + bytes / (link.bandwidth() * eff)
}

/// Which links a group of ranks may span: the cluster's intra-node link for ranks on one
/// node, its network otherwise. Device `d` sits on node `d / devices_per_node`.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub devices_per_node: u64,
    pub intra_node: Link,
    pub inter_node: Link,
}

impl Topology {
    /// The topology of a cluster (its first node group: clusters are homogeneous today).
    pub fn of(cluster: &Cluster) -> Topology {
        let g = &cluster.node_groups[0];
        Topology {
            devices_per_node: (g.devices_per_node as u64).max(1),
            intra_node: g.intra_node.clone(),
            inter_node: cluster.inter_node.clone(),
        }
    }

    /// The link a group of `size` ranks at `stride` spans: inside one node or across nodes.
    pub fn link(&self, size: u64, stride: u64) -> &Link {
        if size * stride <= self.devices_per_node {
            &self.intra_node
        } else {
            &self.inter_node
        }
    }

    /// The link a group of explicit device ids spans.
    pub fn link_of(&self, devices: &[u64]) -> &Link {
        let node = |d: &u64| d / self.devices_per_node;
        match devices.first() {
            Some(first) if devices.iter().any(|d| node(d) != node(first)) => &self.inter_node,
            _ => &self.intra_node,
        }
    }

    /// All-reduce over a group of `size` ranks at `stride`: flat on the link it spans, or
    /// hierarchical when it spans nodes and that is faster.
    pub fn group_all_reduce(&self, size: u64, stride: u64, bytes: f64, eff: f64) -> f64 {
        let flat = all_reduce(size, bytes, self.link(size, stride), eff);
        let per_node = (self.devices_per_node / stride.max(1)).clamp(1, size);
        if per_node <= 1 || per_node >= size {
            return flat;
        }
        flat.min(hierarchical_all_reduce(
            per_node,
            size / per_node,
            bytes,
            &self.intra_node,
            &self.inter_node,
            eff,
        ))
    }

    /// The devices of the group along `axis` of `mesh` that contains the mesh's first device.
    pub fn axis_group(mesh: &ProcessMesh, axis: usize) -> Vec<u64> {
        let stride: u64 = mesh.shape[axis + 1..].iter().product();
        (0..mesh.shape[axis])
            .filter_map(|i| mesh.device_ids.get((i * stride) as usize).copied())
            .collect()
    }

    /// Seconds for one communication node: a collective over a mesh axis (its group size and
    /// the link that group spans) or a send/recv, given the bytes of its operand (for
    /// `recv`, of its result). `None` for ops that do not communicate.
    pub fn op_time(
        &self,
        op: &Op,
        mesh: Option<&ProcessMesh>,
        bytes: f64,
        eff: f64,
    ) -> Option<f64> {
        if let Op::Send { .. } | Op::Recv { .. } = op {
            // A node names only its peer, not its own device: priced on the intra-node link
            // (stages of a small pipeline share a node; a per-rank graph could say more).
            return Some(p2p(bytes, &self.intra_node, eff));
        }
        let (kind, group) = op.as_collective()?;
        let members = match mesh {
            Some(m) if group.axis < m.shape.len() => Topology::axis_group(m, group.axis),
            // Without the mesh (an op priced on its own) the group is taken as the smallest
            // that communicates: two ranks on one node.
            _ => vec![0, 1.min(self.devices_per_node - 1)],
        };
        let n = members.len() as u64;
        let link = self.link_of(&members);
        let nf = n as f64;
        Some(match kind {
            CollectiveKind::AllReduce { .. } => self.members_all_reduce(&members, bytes, eff),
            // The operand is one shard: the gathered tensor is n× as large.
            CollectiveKind::AllGather { .. } => ring_gather(n, bytes * nf, link, eff),
            CollectiveKind::ReduceScatter { .. } => ring_gather(n, bytes, link, eff),
            CollectiveKind::AllToAll { .. } => all_to_all(n, bytes, link, eff),
            CollectiveKind::Broadcast { .. } => broadcast(n, bytes, link, eff),
        })
    }

    /// All-reduce over explicit devices: flat on the link they span, or hierarchical when
    /// they span nodes with several members per node and that is faster.
    pub fn members_all_reduce(&self, members: &[u64], bytes: f64, eff: f64) -> f64 {
        let n = members.len() as u64;
        let flat = all_reduce(n, bytes, self.link_of(members), eff);
        let Some(first) = members.first() else {
            return 0.0;
        };
        let node = first / self.devices_per_node;
        let per_node = members
            .iter()
            .filter(|d| *d / self.devices_per_node == node)
            .count() as u64;
        if per_node <= 1 || per_node >= n || !n.is_multiple_of(per_node) {
            return flat;
        }
        flat.min(hierarchical_all_reduce(
            per_node,
            n / per_node,
            bytes,
            &self.intra_node,
            &self.inter_node,
            eff,
        ))
    }
}

#[cfg(test)]
mod tests;
