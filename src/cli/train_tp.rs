//! `oar train ... --tp N [--dp M]` under `mpirun -n N·M`: tensor (Megatron) parallelism,
//! alone or with data parallelism on a `[dp, tp]` mesh (rank r at `(r / tp, r % tp)`).
//!
//! Every rank builds the single-process training step (forward, autodiff, optimizer), writes
//! the Megatron placements on it (`oar_passes::training::tensor_parallel`) and keeps its own
//! graph from the partitioner: column-split QKV and FFN-in weights, row-split attention-out
//! and FFN-out weights, attention by heads, optimizer state split like its parameter, and
//! the collectives the placements imply. The rank holds only its shards of the parameters
//! and optimizer state between steps; `flush` (collective: the loop calls it on every rank
//! at the same points) all-gathers them into the loop's full weights, so evaluation (the
//! single-process inference graph), checkpoints and the final weights are one process's.

use super::dist::{rank_step, Dist};
use super::TrainArgs;
use anyhow::{bail, Context};
use oar::ir::dist::{Placement, ProcessMesh};
use oar::ir::Graph;
use oar::passes::parallel::partition_rank;
use oar::passes::training::build_train_step;
use oar::passes::training::tensor_parallel::{annotate_tensor_parallel, TensorParallel, TP_MESH};
use oar::runtime::comm::shaped::{mesh_group, run_tensor, Collective};
use oar::runtime::comm::MpiComm;
use oar::runtime::interp::RunOptions;
use oar::runtime::train::{InterpRunner, StepOutputs, StepRunner, TrainError};
use oar::runtime::{HostTensor, Weights};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs this rank's part of the tensor-parallel step; evaluation runs the single-process
/// graphs.
pub struct TpRunner {
    /// This rank's graph.
    graph: Graph,
    /// Index of each of its inputs among the step's, and its placement.
    inputs: Vec<(usize, Vec<Placement>)>,
    /// Placement of each parameter and optimizer slot the rank holds.
    params: BTreeMap<String, Vec<Placement>>,
    mesh: ProcessMesh,
    coords: [u64; 2],
    full: InterpRunner,
    comm: Arc<MpiComm>,
    rank: u64,
    /// The rank's shards, newest first-hand (`None` until the first step slices them).
    local: Option<Weights>,
}

/// The runner of rank `d.rank`: the single-process step of the model `dist::prepare`
/// kept (the loop's step graph, rebuilt to know its gradients), split and partitioned.
pub fn runner(a: &TrainArgs, full: InterpRunner, d: &Dist) -> anyhow::Result<TpRunner> {
    let Some((model, cfg)) = a.dist.step.get() else {
        bail!("--tp trains zoo ERNIEs for now, not graph files or distillation");
    };
    let built = build_train_step(model, cfg).context("cannot build the training step")?;
    let step = &built.graph;
    let layout = TensorParallel { dp: d.dp, tp: d.tp };
    let g = annotate_tensor_parallel(step, &built.gradients, &layout)
        .context("cannot split the training step for tensor parallelism")?;
    let rg = partition_rank(&g, d.rank).context("cannot partition the training step")?;
    let names: Vec<&str> = step
        .inputs()
        .iter()
        .map(|&id| step.node(id).name.as_str())
        .collect();
    let inputs = rg
        .inputs
        .iter()
        .map(|(name, pl)| match names.iter().position(|n| n == name) {
            Some(i) => Ok((i, pl.clone())),
            None => bail!("the rank's input `{name}` is not an input of the step"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if d.rank == 0 {
        let split = rg
            .param_placements
            .values()
            .filter(|p| p.iter().any(|x| matches!(x, Placement::Shard(_))))
            .count();
        println!(
            "tensor parallel: dp {} × tp {}; {split} of {} parameters and optimizer slots split; \
             rank 0 runs {} collectives per step ({})",
            d.dp,
            d.tp,
            rg.param_placements.len(),
            rg.collectives,
            collective_counts(&rg.graph)
        );
    }
    Ok(TpRunner {
        mesh: g.meshes[TP_MESH].clone(),
        graph: rg.graph,
        inputs,
        params: rg.param_placements,
        coords: layout.coords(d.rank),
        full,
        comm: d.comm.clone(),
        rank: d.rank,
        local: None,
    })
}

/// `all_reduce ×4, all_gather ×1`: the collectives of a rank graph by kind.
pub fn collective_counts(g: &Graph) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for n in g.nodes() {
        if n.op.comm_group().is_some() {
            *by.entry(n.op.name()).or_default() += 1;
        }
    }
    let parts: Vec<String> = by.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    parts.join(", ")
}

/// The block of `t` at `coords` under per-axis placements.
pub fn shard(t: &HostTensor, pl: &[Placement], mesh: &ProcessMesh, coords: &[u64]) -> HostTensor {
    let mut t = t.clone();
    for (a, p) in pl.iter().enumerate() {
        if let Placement::Shard(d) = p {
            let len = t.shape[*d] / mesh.shape[a] as usize;
            t = t.narrow(*d, coords[a] as usize * len, len);
        }
    }
    t
}

impl TpRunner {
    fn contract(step: u64, what: String) -> TrainError {
        TrainError::Contract(format!("step {step}: {what}"))
    }

    /// The rank's shards of the full weights.
    fn slice(&self, weights: &Weights, step: u64) -> Result<Weights, TrainError> {
        self.params
            .iter()
            .map(|(name, pl)| match weights.get(name) {
                Some(t) => Ok((name.clone(), shard(t, pl, &self.mesh, &self.coords))),
                None => Err(Self::contract(step, format!("no weight `{name}`"))),
            })
            .collect()
    }
}

impl StepRunner for TpRunner {
    fn run(
        &mut self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let mut local = match self.local.take() {
            Some(l) => l,
            None => self.slice(weights, step)?,
        };
        let mut x = Vec::with_capacity(self.inputs.len());
        for (i, pl) in &self.inputs {
            let t = inputs
                .get(*i)
                .ok_or_else(|| Self::contract(step, format!("{} inputs given", inputs.len())))?;
            let rows = t.shape.first().copied().unwrap_or(0);
            if pl[0] != Placement::Replicate && !rows.is_multiple_of(self.mesh.shape[0] as usize) {
                return Err(Self::contract(
                    step,
                    format!(
                        "a batch of {rows} does not split over dp {}",
                        self.mesh.shape[0]
                    ),
                ));
            }
            x.push(shard(t, pl, &self.mesh, &self.coords));
        }
        // Dropout on batch-split values continues one process's stream at the rank's rows.
        let opts = RunOptions {
            batch_shard: self.coords[0],
            ..RunOptions::training(self.full.seed(), step)
        };
        let out = rank_step(
            &self.graph,
            &x,
            &mut local,
            opts,
            self.comm.as_ref(),
            step,
            "--tp",
        );
        self.local = Some(local);
        out
    }

    fn evaluate(
        &mut self,
        inputs: &[HostTensor],
        weights: &Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        self.full.evaluate(inputs, weights, step)
    }

    /// All-gathers the split parameters and optimizer state into `weights` (collective).
    fn flush(&mut self, weights: &mut Weights) -> Result<(), TrainError> {
        let Some(local) = &self.local else {
            return Ok(());
        };
        let err = |e: String| TrainError::Contract(format!("rank {}: gathering: {e}", self.rank));
        for (name, pl) in &self.params {
            let mut t = local
                .get(name)
                .cloned()
                .ok_or_else(|| err(format!("no shard of `{name}`")))?;
            for (a, p) in pl.iter().enumerate() {
                if let Placement::Shard(d) = p {
                    let (members, _) =
                        mesh_group(&self.mesh, a, self.rank).map_err(|e| err(e.to_string()))?;
                    let c = Collective::AllGather { axis: *d };
                    t = run_tensor(self.comm.as_ref(), &members, &c, &t)
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            weights.insert(name.clone(), t);
        }
        Ok(())
    }
}
