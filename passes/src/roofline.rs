//! The cost interface: an op's time on an `ir::DeviceSpec` as a roofline of FLOPs and bytes
//! with efficiency factors, plus a per-kernel launch overhead. Later issues calibrate the
//! factors from measured profiles; the structure (max of compute and memory time, one launch
//! per node) is what extraction and fusion decisions rely on. Communication nodes are
//! priced by the one α-β collective model (`comm_cost`) on the link their group spans.

use crate::comm_cost::{Topology, COMM_EFFICIENCY};
use oar_ir::cluster::{DeviceSpec, Link};
use oar_ir::dist::{DeviceKind, ProcessMesh};
use oar_ir::op::{op_cost, Op, OpCost};
use oar_ir::{DType, Graph, Node, TensorType};
use std::collections::BTreeMap;

/// Roofline parameters for one device.
#[derive(Debug, Clone)]
pub struct CostModel {
    pub peak_flops: f64,
    pub bandwidth: f64,
    /// Fraction of peak that GEMM-like ops (matmul, conv) reach.
    pub contraction_efficiency: f64,
    /// Fraction of peak that other arithmetic reaches (no matrix units, more bookkeeping).
    pub vector_efficiency: f64,
    /// Fraction of memory bandwidth reached.
    pub memory_efficiency: f64,
    /// Fixed cost per kernel launch, seconds.
    pub launch_s: f64,
    /// The links collectives and send/recv cross.
    pub topology: Topology,
}

impl CostModel {
    /// Factors for a device: typical sustained fractions of peak (GEMM 70%, vector 25%,
    /// memory 75%), 5 µs per GPU kernel launch and 0.5 µs per CPU op dispatch.
    pub fn for_device(d: &DeviceSpec) -> CostModel {
        CostModel {
            peak_flops: d.peak_flops(DType::F32).unwrap_or(1e12),
            bandwidth: d.memory_bandwidth(),
            contraction_efficiency: 0.7,
            vector_efficiency: 0.25,
            memory_efficiency: 0.75,
            launch_s: if d.kind == DeviceKind::Gpu {
                5e-6
            } else {
                0.5e-6
            },
            topology: through_memory(d),
        }
    }

    /// Collectives priced on a cluster's links instead of the device's memory.
    pub fn with_topology(mut self, topology: Topology) -> CostModel {
        self.topology = topology;
        self
    }

    /// The model a pass context asks for: its device, and its cluster's links if it has one.
    pub fn for_context(cx: &crate::PassContext) -> CostModel {
        let m = CostModel::for_device(&cx.device);
        match &cx.topology {
            Some(t) => m.with_topology(t.clone()),
            None => m,
        }
    }

    /// Seconds for a communication node (`None` for other ops): the α-β model of
    /// `comm_cost` on the operand's bytes (a `recv`'s result's), plus one launch.
    pub fn comm_time(
        &self,
        op: &Op,
        mesh: Option<&ProcessMesh>,
        ins: &[TensorType],
        outs: &[TensorType],
        b: &BTreeMap<String, u64>,
    ) -> Option<f64> {
        let t = ins.first().or(outs.first());
        let bytes = t.map(|t| t.bytes(b, 1)).unwrap_or(0) as f64;
        self.topology
            .op_time(op, mesh, bytes, COMM_EFFICIENCY)
            .map(|s| s + self.launch_s)
    }

    /// Seconds for work of this size.
    pub fn time(&self, c: OpCost, contraction: bool) -> f64 {
        let eff = if contraction {
            self.contraction_efficiency
        } else {
            self.vector_efficiency
        };
        let compute = c.flops as f64 / (self.peak_flops * eff);
        let memory = c.bytes as f64 / (self.bandwidth * self.memory_efficiency);
        compute.max(memory) + self.launch_s
    }

    /// Seconds for one op; sources and views are free.
    pub fn op_time(
        &self,
        op: &Op,
        ins: &[TensorType],
        outs: &[TensorType],
        b: &BTreeMap<String, u64>,
    ) -> f64 {
        if op.is_free() {
            return 0.0;
        }
        if let Some(t) = self.comm_time(op, None, ins, outs, b) {
            return t;
        }
        self.time(op_cost(op, ins, outs, b, 1), op.is_contraction())
    }

    /// Seconds for one node of `g`; a `fused` node costs its body's FLOPs at vector speed and
    /// only its own inputs and outputs in bytes, with one launch.
    pub fn node_time(&self, g: &Graph, n: &Node, b: &BTreeMap<String, u64>) -> f64 {
        let ins: Vec<TensorType> = n
            .inputs
            .iter()
            .filter_map(|v| g.value_type(*v).cloned())
            .collect();
        if let Op::Fused { func } = &n.op {
            let body_flops: u64 = g
                .functions
                .get(func)
                .map(|f| graph_flops(f, b))
                .unwrap_or(0);
            let io = op_cost(&n.op, &ins, &n.outputs, b, 1);
            return self.time(
                OpCost {
                    flops: body_flops,
                    bytes: io.bytes,
                    macs: 0,
                },
                false,
            );
        }
        if let Some(group) = n.op.comm_group() {
            let mesh = g.meshes.get(&group.mesh);
            if let Some(t) = self.comm_time(&n.op, mesh, &ins, &n.outputs, b) {
                return t;
            }
        }
        self.op_time(&n.op, &ins, &n.outputs, b)
    }

    /// Seconds per run of the whole graph, nodes one after another. Computations on weights
    /// alone (folded batch norms) happen once at load time and are not counted.
    pub fn graph_time(&self, g: &Graph, b: &BTreeMap<String, u64>) -> f64 {
        let load_time = oar_ir::analysis::weight_only(g);
        g.iter()
            .filter(|(id, _)| !load_time[id.index()])
            .map(|(_, n)| self.node_time(g, n, b))
            .sum()
    }
}

/// Without a cluster, ranks on one host exchange through its memory: both links are the
/// device's memory bandwidth with no latency.
fn through_memory(d: &DeviceSpec) -> Topology {
    let memory = Link {
        kind: "memory".into(),
        bandwidth_gbs: d.memory_bandwidth_gbs,
        latency_us: 0.0,
    };
    Topology {
        devices_per_node: u64::MAX,
        intra_node: memory.clone(),
        inter_node: memory,
    }
}

fn graph_flops(g: &Graph, b: &BTreeMap<String, u64>) -> u64 {
    g.nodes()
        .iter()
        .map(|n| {
            let ins: Vec<TensorType> = n
                .inputs
                .iter()
                .filter_map(|v| g.value_type(*v).cloned())
                .collect();
            op_cost(&n.op, &ins, &n.outputs, b, 1).flops
        })
        .sum()
}
