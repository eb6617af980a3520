//! Built-in clusters of one node each (override the count with `with_nodes`). Every figure
//! carries its source. Peak rates are dense (no structured sparsity). Link bandwidths are
//! per device and per direction: NVIDIA quotes NVLink as bidirectional totals, halved here.
//! Latencies are not datasheet figures: they are the per-message start-up costs typically
//! fitted to nccl-tests runs (a few µs in a node, about 10 µs across InfiniBand), stated as
//! assumptions until a calibration run replaces them.

use super::{
    AttentionPoint, Cluster, DeviceSpec, EfficiencyTable, GemmPoint, Link, NodeGroup, PeakTflops,
    ScaleEffects,
};
use crate::dist::DeviceKind;
use crate::types::DType;

/// A named preset.
pub struct PresetInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    pub build: fn() -> Cluster,
}

/// Every preset.
pub const PRESETS: &[PresetInfo] = &[
    PresetInfo {
        name: "dgx-a100-80g",
        aliases: &["a100"],
        description: "8x A100-SXM4-80GB, NVSwitch, 8x 200 Gb/s HDR InfiniBand per node",
        build: dgx_a100,
    },
    PresetInfo {
        name: "dgx-v100-32g",
        aliases: &["v100"],
        description:
            "8x V100-SXM2-32GB, NVLink hybrid cube-mesh, 4x 100 Gb/s EDR InfiniBand per node",
        build: dgx_v100,
    },
    PresetInfo {
        name: "dgx-h100-80g",
        aliases: &["h100"],
        description: "8x H100-SXM5-80GB, NVSwitch, 8x 400 Gb/s NDR InfiniBand per node",
        build: dgx_h100,
    },
    PresetInfo {
        name: "hgx-h200-141g",
        aliases: &["h200"],
        description: "8x H200-SXM-141GB, NVSwitch, 8x 400 Gb/s NDR InfiniBand per node",
        build: hgx_h200,
    },
    PresetInfo {
        name: "atlas-800-910",
        aliases: &["ascend910"],
        description: "8x Ascend 910 (32 GB HBM2), HCCS, 8x 100 Gb/s RoCE per node",
        build: atlas_910,
    },
    PresetInfo {
        name: "cpu-epyc-7763",
        aliases: &["cpu"],
        description: "2x AMD EPYC 7763 (64 cores) sockets per node, 100 Gb/s Ethernet",
        build: cpu_epyc,
    },
];

/// Names of all presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// A preset by name or alias.
pub fn preset(name: &str) -> Option<Cluster> {
    PRESETS
        .iter()
        .find(|p| p.name == name || p.aliases.contains(&name))
        .map(|p| (p.build)())
}

fn link(kind: &str, bandwidth_gbs: f64, latency_us: f64) -> Link {
    Link {
        kind: kind.into(),
        bandwidth_gbs,
        latency_us,
    }
}

fn one_node(name: &str, devices: u32, device: DeviceSpec, intra: Link, inter: Link) -> Cluster {
    Cluster {
        name: name.into(),
        node_groups: vec![NodeGroup {
            name: device.model.clone(),
            nodes: 1,
            devices_per_node: devices,
            device,
            intra_node: intra,
        }],
        inter_node: inter,
        scale_effects: ScaleEffects::default(),
    }
}

fn dgx_a100() -> Cluster {
    // NVIDIA A100 Tensor Core GPU datasheet (2021), SXM4 80GB column.
    let device = DeviceSpec {
        kind: DeviceKind::Gpu,
        model: "A100-SXM4-80GB".into(),
        peak_tflops: PeakTflops {
            f64: Some(19.5), // FP64 Tensor Core (9.7 without)
            f32: Some(19.5),
            tf32: Some(156.0),
            f16: Some(312.0),
            bf16: Some(312.0),
            i8: Some(624.0),
        },
        memory_gib: 80.0, // 80 GB HBM2e (81920 MiB as nvidia-smi reports)
        memory_bandwidth_gbs: 2039.0, // datasheet: 2,039 GB/s
        price_per_hour: 5.12, // AWS p4de.24xlarge on-demand $40.96/h ÷ 8 (us-east-1, 2023)
        efficiency: Some(a100_efficiency()),
    };
    one_node(
        "dgx-a100-80g",
        8,
        device,
        // NVLink 3: 600 GB/s bidirectional per GPU through NVSwitch (datasheet).
        link("NVLink3 via NVSwitch", 300.0, 3.0),
        // DGX A100 datasheet: 8 single-port ConnectX-6 HDR 200 Gb/s, one per GPU.
        link("HDR InfiniBand 200 Gb/s per GPU", 25.0, 10.0),
    )
}

/// A100 bf16 kernel efficiency by shape. The top point is the published "maximum
/// achievable matmul FLOPS" of an A100 SXM: 267.9 of 312 TFLOP/s bf16 (85.9%) at its best
/// shape 6912×16384×2048, CUDA 12.1 (S. Bekman, *Machine Learning Engineering*,
/// github.com/stas00/ml-engineering, compute/accelerator/README.md, "Maximum Achievable
/// Matmul FLOPS comparison table": a torch.matmul sweep of shapes, mamf-finder.py). It is
/// held as 0.86 at 8192³ (the validated table; the best shape's cube side is 6145, where
/// placing it would raise 4096³–8192³ shapes by up to 1.7%: not re-validated yet). The rise
/// towards it with size follows
/// NVIDIA's *Matrix Multiplication Background User's Guide* (2023, A100 figures: throughput
/// grows with size until tiles fill every SM in whole waves); the intermediate points are
/// approximate readings of public cuBLAS sweeps, not oar measurements, and a calibration run
/// on the target cluster replaces them. The attention points are for the unfused core of
/// 2021-era Megatron-LM (two batched GEMMs of head width around a softmax), an assumption
/// of the same status.
fn a100_efficiency() -> EfficiencyTable {
    let g = |m: u64, n: u64, k: u64, efficiency: f64| GemmPoint {
        dtype: DType::BF16,
        m,
        n,
        k,
        efficiency,
    };
    let a = |seq: u64, head_dim: u64, efficiency: f64| AttentionPoint {
        dtype: DType::BF16,
        seq,
        head_dim,
        efficiency,
    };
    EfficiencyTable {
        source: "A100 bf16 cuBLAS: top 267.9/312 TFLOP/s (85.9%, best shape 6912x16384x2048; Bekman, ML \
                 Engineering, compute/accelerator/README.md, MAMF table, CUDA 12.1); rise with \
                 size per NVIDIA Matrix Multiplication Background guide (approximate readings)"
            .into(),
        gemm: vec![
            g(512, 512, 512, 0.20),
            g(1024, 1024, 1024, 0.45),
            g(2048, 2048, 2048, 0.72),
            g(4096, 4096, 4096, 0.81),
            g(8192, 8192, 8192, 0.86),
        ],
        attention: vec![
            a(512, 64, 0.30),
            a(1024, 128, 0.45),
            a(2048, 128, 0.55),
            a(4096, 128, 0.60),
        ],
    }
}

fn dgx_v100() -> Cluster {
    // NVIDIA Tesla V100 datasheet (2020), SXM2 32GB column.
    let device = DeviceSpec {
        kind: DeviceKind::Gpu,
        model: "V100-SXM2-32GB".into(),
        peak_tflops: PeakTflops {
            f64: Some(7.8),
            f32: Some(15.7),
            tf32: None,
            f16: Some(125.0), // Tensor Core mixed precision
            bf16: None,
            i8: None,
        },
        memory_gib: 32.0,
        memory_bandwidth_gbs: 900.0,
        price_per_hour: 3.90, // AWS p3dn.24xlarge on-demand $31.212/h ÷ 8 (us-east-1, 2023)
        efficiency: None,
    };
    one_node(
        "dgx-v100-32g",
        8,
        device,
        // NVLink 2: 300 GB/s bidirectional per GPU over 6 links (datasheet); in DGX-1's hybrid
        // cube-mesh not every pair is directly linked, which the cost model accounts for.
        link("NVLink2 hybrid cube-mesh", 150.0, 5.0),
        // DGX-1 datasheet: 4x 100 Gb/s EDR InfiniBand for 8 GPUs = 6.25 GB/s per GPU.
        link("EDR InfiniBand 4x100 Gb/s per node", 6.25, 10.0),
    )
}

fn hopper(model: &str, memory_gib: f64, bandwidth_gbs: f64, price: f64) -> DeviceSpec {
    // NVIDIA H100 Tensor Core GPU datasheet (2023), SXM5 column, dense figures (the datasheet's
    // headline numbers are with sparsity, twice these). H200 has the same compute.
    DeviceSpec {
        kind: DeviceKind::Gpu,
        model: model.into(),
        peak_tflops: PeakTflops {
            f64: Some(67.0), // FP64 Tensor Core
            f32: Some(67.0),
            tf32: Some(494.5),
            f16: Some(989.5),
            bf16: Some(989.5),
            i8: Some(1979.0),
        },
        memory_gib,
        memory_bandwidth_gbs: bandwidth_gbs,
        price_per_hour: price,
        efficiency: None,
    }
}

fn dgx_h100() -> Cluster {
    one_node(
        "dgx-h100-80g",
        8,
        // 80 GB HBM3 at 3.35 TB/s (datasheet); AWS p5.48xlarge on-demand $98.32/h ÷ 8 (2023).
        hopper("H100-SXM5-80GB", 80.0, 3350.0, 12.29),
        // NVLink 4: 900 GB/s bidirectional per GPU (datasheet).
        link("NVLink4 via NVSwitch", 450.0, 3.0),
        // DGX H100 datasheet: 8x ConnectX-7 400 Gb/s NDR, one per GPU.
        link("NDR InfiniBand 400 Gb/s per GPU", 50.0, 10.0),
    )
}

fn hgx_h200() -> Cluster {
    one_node(
        "hgx-h200-141g",
        8,
        // NVIDIA H200 datasheet (2024): 141 GB HBM3e at 4.8 TB/s. No list price is published;
        // assumed 1.15x the H100 per-GPU price above.
        hopper("H200-SXM-141GB", 141.0, 4800.0, 14.13),
        link("NVLink4 via NVSwitch", 450.0, 3.0),
        link("NDR InfiniBand 400 Gb/s per GPU", 50.0, 10.0),
    )
}

fn atlas_910() -> Cluster {
    // Huawei Ascend 910 as presented at Hot Chips 31 (2019, "DaVinci: A Scalable
    // Architecture for Neural Network Computing"): 256 TFLOP/s fp16, 512 TOPS int8,
    // 32 GB HBM2 at 1.2 TB/s; no bf16. ERNIE 3.0 Titan trained partly on these.
    let device = DeviceSpec {
        // An accelerator: the IR has no separate NPU kind, and the planner needs none.
        kind: DeviceKind::Gpu,
        model: "Ascend-910".into(),
        peak_tflops: PeakTflops {
            f16: Some(256.0),
            i8: Some(512.0),
            ..Default::default()
        },
        memory_gib: 32.0,
        memory_bandwidth_gbs: 1200.0,
        price_per_hour: 0.0, // no public cloud list price
        efficiency: None,
    };
    one_node(
        "atlas-800-910",
        8,
        device,
        // Hot Chips 31: HCCS 30 GB/s per chip between the NPUs of a server (assumed per
        // direction).
        link("HCCS", 30.0, 5.0),
        // Atlas 800 training server (model 9000) datasheet: 8x 100GE RoCE, one per NPU.
        link("100 Gb/s RoCE per NPU", 12.5, 15.0),
    )
}

fn cpu_epyc() -> Cluster {
    // AMD EPYC 7763 product page: 64 cores, 2.45 GHz base, 8 channels DDR4-3200
    // (8 × 25.6 GB/s = 204.8 GB/s per socket). Zen 3 retires two 256-bit FMAs per cycle:
    // 32 f32 FLOPs/cycle/core → 64 × 2.45e9 × 32 = 5.02 TFLOP/s f32, half that in f64.
    let device = DeviceSpec {
        kind: DeviceKind::Cpu,
        model: "EPYC-7763".into(),
        peak_tflops: PeakTflops {
            f64: Some(2.51),
            f32: Some(5.02),
            ..Default::default()
        },
        memory_gib: 256.0, // assumed 8 x 32 GiB DIMMs per socket
        memory_bandwidth_gbs: 204.8,
        price_per_hour: 3.67, // AWS c6a.48xlarge (2 sockets) on-demand $7.344/h ÷ 2 (2023)
        efficiency: None,
    };
    one_node(
        "cpu-epyc-7763",
        2,
        device,
        // Socket-to-socket Infinity Fabric (xGMI); assumed 64 GB/s per direction.
        link("Infinity Fabric xGMI", 64.0, 1.0),
        link("100 Gb/s Ethernet", 12.5, 20.0),
    )
}
