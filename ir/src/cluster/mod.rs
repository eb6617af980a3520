//! The unified cluster object: node groups of devices, their specs and the links between
//! them. Loaded from TOML or JSON, or taken from a preset. Figures are stored in the units
//! datasheets use (TFLOP/s, GB/s, GiB, µs); accessors return SI units for cost models.

mod efficiency;
mod presets;
mod summary;

pub use efficiency::{gemm_size, interpolate, AttentionPoint, EfficiencyTable, GemmPoint};
pub use presets::{preset, preset_names, PresetInfo, PRESETS};

use crate::dist::DeviceKind;
use crate::types::DType;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Peak dense throughput in TFLOP/s (TOPS for integers) per precision; absent = unsupported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakTflops {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f64: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32: Option<f64>,
    /// TensorFloat-32 matrix units, used for f32 matmuls when allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf32: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f16: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i8: Option<f64>,
}

impl PeakTflops {
    /// The (name, value) pairs that are set, in a fixed order.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        [
            ("f64", self.f64),
            ("f32", self.f32),
            ("tf32", self.tf32),
            ("f16", self.f16),
            ("bf16", self.bf16),
            ("i8", self.i8),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// One device: an accelerator, or a CPU socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    /// Product name, e.g. `A100-SXM4-80GB`.
    pub model: String,
    pub peak_tflops: PeakTflops,
    pub memory_gib: f64,
    /// Device-memory bandwidth, GB/s.
    pub memory_bandwidth_gbs: f64,
    /// On-demand price of one device, USD per hour.
    #[serde(default)]
    pub price_per_hour: f64,
    /// Kernel efficiency by shape (published or measured); absent = the planner's constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<EfficiencyTable>,
}

impl DeviceSpec {
    /// Peak FLOP/s for a dtype (f32 falls back to nothing else; tf32 is separate).
    pub fn peak_flops(&self, dtype: DType) -> Option<f64> {
        let p = &self.peak_tflops;
        let t = match dtype {
            DType::F64 => p.f64,
            DType::F32 => p.f32,
            DType::F16 => p.f16,
            DType::BF16 => p.bf16,
            DType::I8 | DType::U8 => p.i8,
            DType::I64 | DType::I32 | DType::Bool => None,
        };
        t.map(|t| t * 1e12)
    }

    /// Memory capacity in bytes.
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gib * (1u64 << 30) as f64) as u64
    }

    /// Memory bandwidth in bytes/s.
    pub fn memory_bandwidth(&self) -> f64 {
        self.memory_bandwidth_gbs * 1e9
    }
}

/// A link class: bandwidth per device per direction and latency of one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// e.g. `NVLink3 via NVSwitch`, `HDR InfiniBand`.
    pub kind: String,
    /// GB/s per device, one direction.
    pub bandwidth_gbs: f64,
    pub latency_us: f64,
}

impl Link {
    /// Bandwidth in bytes/s.
    pub fn bandwidth(&self) -> f64 {
        self.bandwidth_gbs * 1e9
    }

    /// Latency in seconds.
    pub fn latency(&self) -> f64 {
        self.latency_us * 1e-6
    }
}

/// Identical nodes: how many, devices in each, and how those devices talk inside a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    pub name: String,
    pub nodes: u32,
    pub devices_per_node: u32,
    pub device: DeviceSpec,
    pub intra_node: Link,
}

/// A whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "node_group")]
    pub node_groups: Vec<NodeGroup>,
    /// The network between nodes.
    pub inter_node: Link,
    /// What makes a large job slower or less reliable than its parts (all optional).
    #[serde(default, skip_serializing_if = "ScaleEffects::is_unset")]
    pub scale_effects: ScaleEffects,
}

/// Figures of a cluster at scale: run-to-run variation, the network's oversubscription
/// above the leaf switches, and node reliability (`[scale_effects]` in a cluster file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleEffects {
    /// Coefficient of variation of one device's step time (standard deviation over mean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_time_cv: Option<f64>,
    /// Bandwidth oversubscription above the leaf switches (1 = non-blocking fat tree):
    /// traffic between leaves shares the spine's links `oversubscription` ways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oversubscription: Option<f64>,
    /// Nodes under one leaf switch (a group within one leaf never crosses the spine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_per_leaf: Option<u32>,
    /// Mean time between failures of one node, hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mtbf_hours: Option<f64>,
}

impl ScaleEffects {
    /// Nothing set (omitted when serialising).
    pub fn is_unset(&self) -> bool {
        *self == ScaleEffects::default()
    }
}

/// A cluster description that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
    #[error("unknown cluster preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    /// A planner that minimises money (HeterPS placement) needs every device's price.
    #[error("{path}: node group `{group}` has no `price_per_hour` (or 0) on its device; the HeterPS planner minimises cost and needs the price of every device kind")]
    MissingPrice { path: String, group: String },
}

impl Cluster {
    /// Parses TOML text. `path` names the source in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Cluster, ClusterError> {
        let c: Cluster = toml::from_str(text).map_err(|e| ClusterError::Syntax {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        c.validate(path)?;
        Ok(c)
    }

    /// Parses JSON text. `path` names the source in errors.
    pub fn from_json(text: &str, path: &str) -> Result<Cluster, ClusterError> {
        let c: Cluster = serde_json::from_str(text).map_err(|e| ClusterError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })?;
        c.validate(path)?;
        Ok(c)
    }

    /// Loads a `.toml` or `.json` file (by extension; TOML otherwise).
    pub fn load(path: &Path) -> Result<Cluster, ClusterError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
            path: shown.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "json") {
            Cluster::from_json(&text, &shown)
        } else {
            Cluster::from_toml(&text, &shown)
        }
    }

    /// A preset by name, or a file if the argument is a path to one.
    pub fn resolve(spec: &str) -> Result<Cluster, ClusterError> {
        if let Some(c) = preset(spec) {
            return Ok(c);
        }
        let p = Path::new(spec);
        if p.exists() || spec.ends_with(".toml") || spec.ends_with(".json") {
            return Cluster::load(p);
        }
        Err(ClusterError::UnknownPreset {
            name: spec.into(),
            known: preset_names().join(", "),
        })
    }

    /// Sets the node count of every group (presets describe one node group).
    pub fn with_nodes(mut self, nodes: u32) -> Cluster {
        for g in &mut self.node_groups {
            g.nodes = nodes;
        }
        self
    }

    /// Checks that every figure is usable; names the first bad field.
    pub fn validate(&self, path: &str) -> Result<(), ClusterError> {
        let bad = |field: String, message: &str| {
            Err(ClusterError::Invalid {
                path: path.into(),
                field,
                message: message.into(),
            })
        };
        if self.node_groups.is_empty() {
            return bad(
                "node_group".into(),
                "a cluster needs at least one [[node_group]]",
            );
        }
        let link = |l: &Link, f: &str| -> Result<(), ClusterError> {
            if !(l.bandwidth_gbs.is_finite() && l.bandwidth_gbs > 0.0) {
                return bad(format!("{f}.bandwidth_gbs"), "must be a positive number");
            }
            if !(l.latency_us.is_finite() && l.latency_us >= 0.0) {
                return bad(format!("{f}.latency_us"), "must be zero or positive");
            }
            Ok(())
        };
        link(&self.inter_node, "inter_node")?;
        let s = &self.scale_effects;
        if s.step_time_cv.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            return bad(
                "scale_effects.step_time_cv".into(),
                "must be zero or positive",
            );
        }
        if s.oversubscription
            .is_some_and(|v| !(v.is_finite() && v >= 1.0))
        {
            return bad(
                "scale_effects.oversubscription".into(),
                "must be at least 1 (1 = non-blocking)",
            );
        }
        if s.nodes_per_leaf == Some(0) {
            return bad("scale_effects.nodes_per_leaf".into(), "must be at least 1");
        }
        if s.node_mtbf_hours
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            return bad(
                "scale_effects.node_mtbf_hours".into(),
                "must be a positive number",
            );
        }
        for (i, g) in self.node_groups.iter().enumerate() {
            let f = format!("node_group[{i}]");
            if g.nodes == 0 {
                return bad(format!("{f}.nodes"), "must be at least 1");
            }
            if g.devices_per_node == 0 {
                return bad(format!("{f}.devices_per_node"), "must be at least 1");
            }
            link(&g.intra_node, &format!("{f}.intra_node"))?;
            let d = &g.device;
            if !(d.memory_gib.is_finite() && d.memory_gib > 0.0) {
                return bad(
                    format!("{f}.device.memory_gib"),
                    "must be a positive number",
                );
            }
            if !(d.memory_bandwidth_gbs.is_finite() && d.memory_bandwidth_gbs > 0.0) {
                return bad(
                    format!("{f}.device.memory_bandwidth_gbs"),
                    "must be a positive number",
                );
            }
            if !(d.price_per_hour.is_finite() && d.price_per_hour >= 0.0) {
                return bad(
                    format!("{f}.device.price_per_hour"),
                    "must be zero or positive",
                );
            }
            if let Some((table, i)) = d.efficiency.as_ref().and_then(|t| t.invalid_point()) {
                return bad(
                    format!("{f}.device.efficiency.{table}[{i}].efficiency"),
                    "must be in (0, 1]",
                );
            }
            let peaks = d.peak_tflops.entries();
            if peaks.is_empty() {
                return bad(
                    format!("{f}.device.peak_tflops"),
                    "give at least one precision (f32, bf16, ...)",
                );
            }
            if let Some((k, _)) = peaks.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
                return bad(
                    format!("{f}.device.peak_tflops.{k}"),
                    "must be a positive number",
                );
            }
        }
        Ok(())
    }

    /// Total number of devices.
    pub fn num_devices(&self) -> u64 {
        self.node_groups
            .iter()
            .map(|g| g.nodes as u64 * g.devices_per_node as u64)
            .sum()
    }

    /// Total number of nodes.
    pub fn num_nodes(&self) -> u64 {
        self.node_groups.iter().map(|g| g.nodes as u64).sum()
    }

    /// Devices a node group offers: its nodes times devices per node (the most replicas a
    /// placement may run on that group's kind).
    pub fn available_devices(&self, group: usize) -> u64 {
        self.node_groups
            .get(group)
            .map_or(0, |g| g.nodes as u64 * g.devices_per_node as u64)
    }

    /// Checks that every node group's device has a positive price per hour; the error
    /// names the file (`path`) and the first group without one.
    pub fn require_prices(&self, path: &str) -> Result<(), ClusterError> {
        match self
            .node_groups
            .iter()
            .find(|g| !(g.device.price_per_hour.is_finite() && g.device.price_per_hour > 0.0))
        {
            Some(g) => Err(ClusterError::MissingPrice {
                path: path.into(),
                group: g.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Serialises to TOML (the format users write).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_toml_and_json() {
        for p in PRESETS {
            let c = (p.build)();
            c.validate(p.name).unwrap();
            let t = c.to_toml();
            assert_eq!(Cluster::from_toml(&t, "t").unwrap(), c, "{}", p.name);
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(Cluster::from_json(&j, "j").unwrap(), c);
        }
    }

    #[test]
    fn scale_effects_and_efficiency_tables_parse_and_validate() {
        let mut text = preset("a100").unwrap().to_toml();
        // The preset's efficiency table survives TOML.
        assert!(
            text.contains("[[node_group.device.efficiency.gemm]]"),
            "{text}"
        );
        text.push_str("\n[scale_effects]\nstep_time_cv = 0.02\noversubscription = 2.0\nnodes_per_leaf = 16\nnode_mtbf_hours = 1500.0\n");
        let c = Cluster::from_toml(&text, "c.toml").unwrap();
        assert_eq!(c.scale_effects.oversubscription, Some(2.0));
        assert_eq!(c.scale_effects.node_mtbf_hours, Some(1500.0));
        let err = Cluster::from_toml(
            &text.replace("oversubscription = 2.0", "oversubscription = 0.5"),
            "c.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("scale_effects.oversubscription"), "{err}");
        let mut bad = preset("a100").unwrap();
        if let Some(t) = bad.node_groups[0].device.efficiency.as_mut() {
            t.gemm[2].efficiency = 0.0;
        }
        let err = bad.validate("b").unwrap_err().to_string();
        assert!(
            err.contains("device.efficiency.gemm[2].efficiency"),
            "{err}"
        );
    }

    #[test]
    fn a_group_without_a_price_is_named() {
        let c = preset("a100").unwrap();
        assert!(c.require_prices("a100").is_ok());
        assert_eq!(c.available_devices(0), 8);
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/clusters/titan-mixed.toml"
        ))
        .unwrap();
        let c = Cluster::from_toml(&text, "titan-mixed.toml").unwrap();
        let err = c
            .require_prices("titan-mixed.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("titan-mixed.toml"), "{err}");
        assert!(err.contains("`atlas-800`"), "{err}");
    }

    #[test]
    fn node_override_scales_device_count() {
        let c = preset("dgx-a100-80g").unwrap().with_nodes(16);
        assert_eq!(c.num_devices(), 128);
        assert_eq!(c.num_nodes(), 16);
    }
}
