//! The pass infrastructure: a `Pass` trait, one registry, named pipelines, the verifier after
//! every pass (in debug and test builds, or on request) and a timing scope per pass.

use crate::{canonicalize, eqsat, fuse, liveness};
use oar_ir::cluster::DeviceSpec;
use oar_ir::{ExecMode, Graph};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What every pass may consult.
#[derive(Debug, Clone)]
pub struct PassContext {
    /// The device the cost model estimates for.
    pub device: DeviceSpec,
    /// Symbol values for cost estimates (unbound symbols count as 1).
    pub bindings: BTreeMap<String, u64>,
    /// Run the verifier after every pass.
    pub verify: bool,
    /// Inference or training: what the passes may assume (parameters constant, dropout).
    pub mode: ExecMode,
    /// The cluster links collectives cross; `None` prices them through the device's memory.
    pub topology: Option<crate::comm_cost::Topology>,
}

impl PassContext {
    /// Estimates for `device`; verification on in debug builds.
    pub fn new(device: DeviceSpec) -> PassContext {
        PassContext {
            device,
            bindings: BTreeMap::new(),
            verify: cfg!(debug_assertions),
            mode: ExecMode::Inference,
            topology: None,
        }
    }

    /// The host-CPU context used when no device is named: one socket of the `cpu` preset.
    pub fn host() -> PassContext {
        let c = oar_ir::cluster::preset("cpu").expect("the cpu preset exists");
        PassContext::new(c.node_groups[0].device.clone())
    }
}

/// A pass failed, or left the graph ill-formed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass `{pass}` left the graph ill-formed: {errors}")]
    Verify {
        pass: &'static str,
        errors: oar_ir::VerifyErrors,
    },
    #[error("pass `{pass}`: {source}")]
    Failed {
        pass: &'static str,
        source: PassFailure,
    },
    #[error("unknown pass `{0}` (known: {1})")]
    UnknownPass(String, String),
    #[error("unknown pipeline `{0}` (known: {1})")]
    UnknownPipeline(String, String),
}

/// Why a pass could not produce its graph (the pipeline adds the pass's name).
#[derive(Debug, thiserror::Error)]
pub enum PassFailure {
    /// A node could not be added to the output graph (folding, CSE, DCE, fusion).
    #[error(transparent)]
    Node(#[from] oar_ir::NodeError),
    /// Equality saturation could not type a rewrite or extract a graph.
    #[error(transparent)]
    EqSat(#[from] crate::eqsat::EqSatError),
    /// A fused group reads a value whose type is unknown.
    #[error("missing operand type")]
    MissingOperandType,
    /// Fusion produced a group with no members.
    #[error("empty group")]
    EmptyGroup,
}

/// One graph transformation (or analysis, which returns the graph unchanged).
pub trait Pass {
    /// kebab-case name used by `--print-after` and `--disable-pass`.
    fn name(&self) -> &'static str;
    /// One line for `--help` listings.
    fn description(&self) -> &'static str;
    /// Transforms the graph; returns it with notes for the report.
    fn run(&self, g: Graph, cx: &PassContext) -> Result<(Graph, Vec<String>), PassFailure>;
}

/// Every pass, declared once.
pub fn registry() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(canonicalize::Canonicalize),
        Box::new(eqsat::EqSat::default()),
        Box::new(fuse::Fuse::default()),
        Box::new(liveness::LivenessPass),
    ]
}

/// Named pipelines, as readable ordered lists.
pub const PIPELINES: &[(&str, &[&str])] = &[
    (
        "inference",
        &["canonicalize", "eqsat", "canonicalize", "fuse", "memory"],
    ),
    ("canonicalize", &["canonicalize"]),
];

/// What one pass did.
#[derive(Debug, Clone)]
pub struct PassReport {
    pub pass: &'static str,
    pub time: Duration,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub notes: Vec<String>,
}

/// An ordered list of passes.
pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    /// A named pipeline without the disabled passes.
    pub fn named(name: &str, disabled: &[String]) -> Result<Pipeline, PassError> {
        let (_, list) = PIPELINES.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            PassError::UnknownPipeline(
                name.into(),
                PIPELINES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        Pipeline::of(list, disabled)
    }

    /// The passes named in `list`, in order, without the disabled ones.
    pub fn of(list: &[&str], disabled: &[String]) -> Result<Pipeline, PassError> {
        let known: Vec<&str> = registry().iter().map(|p| p.name()).collect();
        for d in disabled {
            if !known.contains(&d.as_str()) {
                return Err(PassError::UnknownPass(d.clone(), known.join(", ")));
            }
        }
        let off: BTreeSet<&str> = disabled.iter().map(String::as_str).collect();
        let mut passes = Vec::new();
        for name in list {
            if off.contains(name) {
                continue;
            }
            let p = registry()
                .into_iter()
                .find(|p| p.name() == *name)
                .ok_or_else(|| PassError::UnknownPass(name.to_string(), known.join(", ")))?;
            passes.push(p);
        }
        Ok(Pipeline { passes })
    }

    /// Names of the passes that will run.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs every pass; `after(pass, graph)` sees the graph after each one.
    pub fn run(
        &self,
        mut g: Graph,
        cx: &PassContext,
        mut after: impl FnMut(&str, &Graph),
    ) -> Result<(Graph, Vec<PassReport>), PassError> {
        let mut reports = Vec::new();
        for p in &self.passes {
            let start = Instant::now();
            let before = g.len();
            let (out, notes) = p.run(g, cx).map_err(|source| PassError::Failed {
                pass: p.name(),
                source,
            })?;
            let time = start.elapsed();
            if cx.verify {
                oar_ir::verify(&out).map_err(|errors| PassError::Verify {
                    pass: p.name(),
                    errors,
                })?;
            }
            after(p.name(), &out);
            reports.push(PassReport {
                pass: p.name(),
                time,
                nodes_before: before,
                nodes_after: out.len(),
                notes,
            });
            g = out;
        }
        Ok((g, reports))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eqsat::EqSatError;

    #[test]
    fn pass_failures_keep_their_text_under_the_pass_name() {
        let wrap = |source| PassError::Failed {
            pass: "eqsat",
            source,
        };
        assert_eq!(
            wrap(PassFailure::EqSat(EqSatError::NoFiniteChoice)).to_string(),
            "pass `eqsat`: extraction found no finite choice for an output"
        );
        assert_eq!(
            wrap(PassFailure::EmptyGroup).to_string(),
            "pass `eqsat`: empty group"
        );
        let node = oar_ir::NodeError {
            node: "x".into(),
            op: "relu",
            message: "takes one operand".into(),
        };
        assert_eq!(
            wrap(PassFailure::from(node.clone())).to_string(),
            format!("pass `eqsat`: {node}")
        );
    }
}
