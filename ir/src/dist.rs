//! Distribution attributes, after Paddle's dist_attr and DTensor: a process mesh, one
//! placement per mesh axis for each tensor, and per-op pipeline stage and device kind.
//! A graph without any of these is the single-device graph.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A logical N-d array of devices; collectives and placements refer to its axes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMesh {
    /// Extent of each axis.
    pub shape: Vec<u64>,
    /// One name per axis (`dp`, `tp`, `pp`).
    pub axis_names: Vec<String>,
    /// Global device ids, row-major over `shape`.
    pub device_ids: Vec<u64>,
}

impl ProcessMesh {
    /// A mesh over devices `0..prod(shape)`.
    pub fn new(shape: Vec<u64>, axis_names: Vec<String>) -> ProcessMesh {
        let n: u64 = shape.iter().product();
        ProcessMesh {
            shape,
            axis_names,
            device_ids: (0..n).collect(),
        }
    }

    /// Number of devices in the mesh.
    pub fn size(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Index of a named axis.
    pub fn axis(&self, name: &str) -> Option<usize> {
        self.axis_names.iter().position(|a| a == name)
    }

    /// Checks internal consistency; returns what is wrong.
    pub fn validate(&self) -> Result<(), MeshError> {
        if self.shape.is_empty() {
            return Err(MeshError::NoAxes);
        }
        if self.shape.contains(&0) {
            return Err(MeshError::EmptyAxis(self.shape.clone()));
        }
        if self.axis_names.len() != self.shape.len() {
            return Err(MeshError::AxisNameCount {
                axes: self.shape.len(),
                names: self.axis_names.len(),
            });
        }
        let mut names = self.axis_names.clone();
        names.sort();
        names.dedup();
        if names.len() != self.axis_names.len() {
            return Err(MeshError::RepeatedAxisNames(self.axis_names.clone()));
        }
        if self.device_ids.len() as u64 != self.size() {
            return Err(MeshError::DeviceCount {
                shape: self.shape.clone(),
                size: self.size(),
                ids: self.device_ids.len(),
            });
        }
        let mut ids = self.device_ids.clone();
        ids.sort();
        ids.dedup();
        if ids.len() != self.device_ids.len() {
            return Err(MeshError::RepeatedDeviceIds(self.device_ids.clone()));
        }
        Ok(())
    }
}

/// What makes a process mesh inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    #[error("a mesh needs at least one axis")]
    NoAxes,
    #[error("mesh shape {0:?} has an empty axis")]
    EmptyAxis(Vec<u64>),
    #[error("mesh has {axes} axes but {names} axis names")]
    AxisNameCount { axes: usize, names: usize },
    #[error("mesh axis names {0:?} repeat")]
    RepeatedAxisNames(Vec<String>),
    #[error("mesh shape {shape:?} holds {size} devices but {ids} device ids are given")]
    DeviceCount {
        shape: Vec<u64>,
        size: u64,
        ids: usize,
    },
    #[error("mesh device ids {0:?} repeat")]
    RepeatedDeviceIds(Vec<u64>),
}

/// How partial values are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

impl ReduceOp {
    /// Every reduce op.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
    ];

    /// Text-format name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
        }
    }

    /// Parses a text-format name.
    pub fn from_name(s: &str) -> Option<ReduceOp> {
        ReduceOp::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// How a tensor is laid out along one mesh axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Placement {
    /// Every device on the axis holds the whole tensor.
    Replicate,
    /// The tensor is split along this tensor dimension.
    Shard(usize),
    /// Each device holds a partial value; the full value is their reduction.
    Partial(ReduceOp),
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Replicate => f.write_str("R"),
            Placement::Shard(d) => write!(f, "S({d})"),
            Placement::Partial(op) => write!(f, "P({})", op.name()),
        }
    }
}

/// One placement per mesh axis.
pub type Placements = Vec<Placement>;

/// An op's distribution: its mesh, the placements it expects and produces, its stage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpDist {
    /// Name of the mesh (declared at module level), if placed on one.
    pub mesh: Option<String>,
    /// Placements of each output, one list per output.
    pub outputs: Vec<Placements>,
    /// Placements each input is expected in; empty when unconstrained.
    pub inputs: Vec<Placements>,
    /// Pipeline stage.
    pub stage: Option<u32>,
}

/// The kind of device a node runs on (HeterPS-style heterogeneous placement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    /// Text name.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }

    /// Parses a text name.
    pub fn from_name(s: &str) -> Option<DeviceKind> {
        match s {
            "cpu" => Some(DeviceKind::Cpu),
            "gpu" => Some(DeviceKind::Gpu),
            _ => None,
        }
    }
}

/// A device kind, optionally pinned to one device index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    pub kind: DeviceKind,
    pub index: Option<u32>,
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if let Some(i) = self.index {
            write!(f, ":{i}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_validation_names_the_problem() {
        let mut m = ProcessMesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]);
        assert!(m.validate().is_ok());
        assert_eq!(m.axis("tp"), Some(1));
        m.device_ids.pop();
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("3 device ids"));
        let m = ProcessMesh::new(vec![2], vec!["a".into(), "b".into()]);
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("1 axes but 2"));
    }
}
