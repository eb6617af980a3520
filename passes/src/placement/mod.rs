//! Heterogeneous placement (HeterPS): each layer of a model on a device kind, consecutive
//! layers of one kind forming a stage with its own replica count, at the least cost per
//! epoch (`time × Σ replicas × price`) that meets a throughput target.
//!
//! - [`layers`]: a graph as a chain of layers, per-layer times per kind (roofline);
//! - [`problem`]: the abstract problem and its stage throughput model;
//! - [`solve`]: the exact solver (dynamic programming) and the brute-force, greedy and
//!   one-kind baselines; [`rl`]: the paper's LSTM + REINFORCE scheduler;
//! - [`report`]: text, Markdown and JSON; the HTML page is `report_html::heterps`.
//!
//! docs/heterps.md ("Placement") gives the formulas and the measured comparison.

pub mod layers;
pub mod problem;
pub mod report;
pub mod rl;
pub mod solve;

pub use layers::{layer_chain, layer_key};
pub use problem::{Kind, Layer, Placement, Problem, Stage};
pub use rl::{reinforce, RlConfig};
pub use solve::Solver;

use oar_ir::cluster::{Cluster, ClusterError};
use oar_ir::dist::DeviceKind;
use oar_ir::Graph;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Samples in the Criteo display-advertising challenge's training set (Kaggle 2014,
/// `train.txt`: 45,840,617 lines), the epoch the cost per epoch is quoted for by default.
pub const CRITEO_EPOCH_SAMPLES: f64 = 45_840_617.0;

/// Why no placement can be made.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{model}: no parameters, so no layers to place (layers are named by their parameters: `fc0.weight` is layer `fc0`)")]
    NoLayers { model: String },
    #[error("layers `{a}` and `{b}` exchange values both ways, so the graph is not a chain of layers; name the parameters so each layer is one block (`fc0.weight`, `emb.weight`)")]
    NotAChain { a: String, b: String },
    #[error("no placement of {model} on {cluster} reaches {target:.0} samples/s: the most any placement reaches with the available devices is {max:.0} samples/s")]
    Infeasible {
        model: String,
        cluster: String,
        target: f64,
        max: f64,
    },
    #[error("{0}")]
    BadOption(String),
}

/// The job: throughput target, batch per replica, epoch length, RL budget.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: f64,
    pub replica_batch: u64,
    pub epoch_samples: f64,
    pub rl: RlConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: 50_000.0,
            replica_batch: 512,
            epoch_samples: CRITEO_EPOCH_SAMPLES,
            rl: RlConfig::default(),
        }
    }
}

/// One device kind per node group; every group must have a price (`path` names the
/// cluster file in the error).
pub fn kinds_of(cluster: &Cluster, path: &str) -> Result<Vec<Kind>, PlacementError> {
    cluster.require_prices(path)?;
    Ok(cluster
        .node_groups
        .iter()
        .enumerate()
        .map(|(i, g)| Kind {
            name: g.name.clone(),
            device_kind: g.device.kind,
            model: g.device.model.clone(),
            price_per_hour: g.device.price_per_hour,
            available: cluster.available_devices(i).min(u32::MAX as u64) as u32,
            memory_bytes: g.device.memory_bytes() as f64,
            devices_per_node: g.devices_per_node,
            intra_node: g.intra_node.clone(),
        })
        .collect())
}

/// The placement problem of `graph` on `cluster` (`bindings` bind the batch symbol to
/// `opts.replica_batch`).
pub fn build_problem(
    graph: &Graph,
    bindings: &BTreeMap<String, u64>,
    cluster: &Cluster,
    cluster_path: &str,
    opts: &Options,
) -> Result<Problem, PlacementError> {
    if !(opts.target.is_finite() && opts.target > 0.0) {
        return Err(PlacementError::BadOption(
            "the throughput target must be a positive number of samples/s".into(),
        ));
    }
    if opts.replica_batch == 0 {
        return Err(PlacementError::BadOption(
            "the batch per replica must be at least 1".into(),
        ));
    }
    if !(opts.epoch_samples.is_finite() && opts.epoch_samples > 0.0) {
        return Err(PlacementError::BadOption(
            "the epoch must have a positive number of samples".into(),
        ));
    }
    let kinds = kinds_of(cluster, cluster_path)?;
    let devices: Vec<_> = cluster
        .node_groups
        .iter()
        .map(|g| g.device.clone())
        .collect();
    let layers = layer_chain(graph, &devices, bindings, opts.replica_batch)?;
    Ok(Problem {
        model: graph.name.clone(),
        cluster: cluster.name.clone(),
        layers,
        kinds,
        network: cluster.inter_node.clone(),
        replica_batch: opts.replica_batch,
        epoch_samples: opts.epoch_samples,
        target: opts.target,
    })
}

/// A scheduling method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Exact,
    Greedy,
    CpuOnly,
    GpuOnly,
    Reinforce,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Exact => "exact (DP)",
            Method::Greedy => "greedy",
            Method::CpuOnly => "CPU only",
            Method::GpuOnly => "GPU only",
            Method::Reinforce => "RL (LSTM + REINFORCE)",
        }
    }
}

/// What one method found and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct MethodOutcome {
    pub method: Method,
    /// The placement, or the most throughput the method reaches (it misses the target).
    /// `None` when the method does not apply (no kind of that sort in the cluster).
    pub placement: Option<Result<Placement, f64>>,
    pub seconds: f64,
    /// What the method explored (episodes for RL).
    pub note: String,
}

/// The chosen placement with every method's result.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub problem: Problem,
    pub best: Placement,
    /// Highest throughput any placement reaches with the available devices.
    pub max_throughput: f64,
    pub methods: Vec<MethodOutcome>,
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

/// Runs every method; `Err(Infeasible)` with the maximum throughput when no placement
/// meets the target.
pub fn schedule(problem: Problem, rl: &RlConfig) -> Result<Schedule, PlacementError> {
    let (solver, setup) = timed(|| Solver::new(&problem));
    let (exact, exact_s) = timed(|| solver.exact());
    let max_throughput = match &exact {
        Ok(_) => solver.max_throughput(),
        Err(m) => *m,
    };
    let best = match exact.clone() {
        Ok(p) => p,
        Err(max) => {
            return Err(PlacementError::Infeasible {
                model: problem.model.clone(),
                cluster: problem.cluster.clone(),
                target: problem.target,
                max,
            })
        }
    };
    let mut methods = vec![MethodOutcome {
        method: Method::Exact,
        placement: Some(exact),
        seconds: setup + exact_s,
        note: String::new(),
    }];
    let (greedy, s) = timed(|| solver.greedy());
    methods.push(MethodOutcome {
        method: Method::Greedy,
        placement: Some(greedy),
        seconds: setup + s,
        note: String::new(),
    });
    for (method, kind) in [
        (Method::CpuOnly, DeviceKind::Cpu),
        (Method::GpuOnly, DeviceKind::Gpu),
    ] {
        let (r, s) = timed(|| solver.single_kind(|k| problem.kinds[k].device_kind == kind));
        methods.push(MethodOutcome {
            method,
            placement: r,
            seconds: setup + s,
            note: String::new(),
        });
    }
    let (r, s) = timed(|| reinforce(&solver, rl));
    methods.push(MethodOutcome {
        method: Method::Reinforce,
        placement: Some(r.result),
        seconds: setup + s,
        note: format!("{} episodes", r.episodes),
    });
    drop(solver);
    Ok(Schedule {
        problem,
        best,
        max_throughput,
        methods,
    })
}
