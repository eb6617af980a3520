//! Tensor parallelism inside pipeline stages (`--tp T --pp P [--dp D]`): each stage's
//! forward and backward graphs for one micro-batch, and the rank's optimizer update, are
//! split over the stage's tensor group with the Megatron placements of `--tp`
//! (`oar_passes::training::tensor_parallel`, on a `[1, tp]` mesh whose devices are the
//! group's global ranks) and partitioned for this rank. The stage boundaries (the residual
//! stream, its gradient) are replicated over the tensor group, so pipeline rank `p`'s tensor
//! rank `t` sends to and receives from tensor rank `t` of the neighbouring stage. Parameter
//! gradients leave the backward in their parameter's placement (declared as the graph's
//! state updates, which the partitioner keeps in place: a split weight's gradient stays
//! split, a replicated one's partial sums are all-reduced), and the update runs on the
//! rank's shards of the parameters and optimizer state, which stay split between steps.

use anyhow::{bail, Context};
use oar::ir::dist::{OpDist, Placement, ProcessMesh};
use oar::ir::Graph;
use oar::ir::Op;
use oar::passes::parallel::partition_rank;
use oar::passes::training::pipeline::Stage;
use oar::passes::training::tensor_parallel::{annotate_tensor_parallel, TensorParallel, TP_MESH};
use oar::runtime::comm::shaped::{run_tensor, Collective};
use oar::runtime::comm::Communicator;
use oar::runtime::interp::{run_with_options_on_rank, RunOptions};
use oar::runtime::train::TrainError;
use oar::runtime::{HostTensor, Weights};
use std::collections::BTreeMap;

/// One graph as this rank runs it.
pub struct Part {
    pub graph: Graph,
    /// Index of each of the rank graph's inputs among the whole graph's.
    inputs: Vec<usize>,
    /// Placement of each parameter (and optimizer slot) the rank graph reads.
    pub params: BTreeMap<String, Vec<Placement>>,
}

/// A stage's forward and backward split over its tensor group.
pub struct SplitStage {
    pub forward: Part,
    pub backward: Part,
}

/// This rank's place in its tensor group: the `[1, tp]` mesh over the group's global ranks
/// and its coordinates there.
pub struct TpGroup {
    pub members: Vec<u64>,
    pub rank: u64,
    mesh: ProcessMesh,
    coords: [u64; 2],
}

impl TpGroup {
    pub fn new(members: Vec<u64>, rank: u64) -> anyhow::Result<TpGroup> {
        let t = members
            .iter()
            .position(|&r| r == rank)
            .with_context(|| format!("rank {rank} is not in its tensor group {members:?}"))?;
        let mut mesh = ProcessMesh::new(
            vec![1, members.len() as u64],
            vec!["dp".into(), "tp".into()],
        );
        mesh.device_ids = members.clone();
        Ok(TpGroup {
            members,
            rank,
            mesh,
            coords: [0, t as u64],
        })
    }

    fn tp(&self) -> u64 {
        self.members.len() as u64
    }

    /// The rank's block of the whole tensor `t` under `pl`.
    pub fn shard(&self, t: &HostTensor, pl: &[Placement]) -> HostTensor {
        super::tp::shard(t, pl, &self.mesh, &self.coords)
    }

    /// `g` with the Megatron placements on this group's mesh (see [`split`]).
    fn annotate(&self, g: &Graph) -> anyhow::Result<Graph> {
        let layout = TensorParallel {
            dp: 1,
            tp: self.tp(),
        };
        let mut a = annotate_tensor_parallel(g, &[], &layout)?;
        match a.meshes.get_mut(TP_MESH) {
            Some(m) => m.device_ids = self.members.clone(),
            None => bail!("the annotated graph has no mesh @{TP_MESH}"),
        }
        Ok(a)
    }

    /// Partitions the annotated `a` (of `g`) for this rank.
    fn partition(&self, g: &Graph, a: &Graph) -> anyhow::Result<Part> {
        let rg = partition_rank(a, self.rank)?;
        let n_out = g.outputs().len();
        if rg.outputs.len() != n_out {
            bail!(
                "rank {} returns {} of the graph's {n_out} outputs",
                self.rank,
                rg.outputs.len()
            );
        }
        let names: Vec<&str> = g
            .inputs()
            .iter()
            .map(|&id| g.node(id).name.as_str())
            .collect();
        let inputs = rg
            .inputs
            .iter()
            .map(|(name, _)| {
                names
                    .iter()
                    .position(|n| n == name)
                    .with_context(|| format!("the rank's input `{name}` is not the graph's"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Part {
            graph: rg.graph,
            inputs,
            params: rg.param_placements,
        })
    }
}

/// Stage `st` split over the rank's tensor group.
pub fn split_stage(st: &Stage, group: &TpGroup) -> anyhow::Result<SplitStage> {
    let what = |pass: &str| {
        format!(
            "cannot split stage {}'s {pass} over --tp {}",
            st.index,
            group.tp()
        )
    };
    let f = group
        .annotate(&st.forward)
        .with_context(|| what("forward"))?;
    let forward = group
        .partition(&st.forward, &f)
        .with_context(|| what("forward"))?;
    // The parameter gradients (the backward's last outputs, in `st.params` order) as
    // state updates of their parameters: the partitioner leaves each in its parameter's
    // placement instead of gathering it whole.
    let mut b = st.backward.clone();
    b.state = st.params.iter().map(|(n, _)| n.clone()).collect();
    let ab = group.annotate(&b).with_context(|| what("backward"))?;
    let backward = group.partition(&b, &ab).with_context(|| what("backward"))?;
    // The boundary values and data inputs stay whole on every rank of the group.
    for (part, g) in [(&forward, &st.forward), (&backward, &b)] {
        for (k, &i) in part.inputs.iter().enumerate() {
            let (want, got) = (
                g.node(g.inputs()[i]),
                part.graph.node(part.graph.inputs()[k]),
            );
            if want.outputs != got.outputs {
                bail!(
                    "{}: input `{}` is split ({} of {})",
                    what("graphs"),
                    want.name,
                    oar::ir::graph::types_text(&got.outputs),
                    oar::ir::graph::types_text(&want.outputs)
                );
            }
        }
    }
    Ok(SplitStage { forward, backward })
}

/// The optimizer update `update` (`build_update`: inputs `<param>.grad`, `lr`, `step`)
/// split over the rank's tensor group: each gradient input in its parameter's placement.
pub fn split_update(update: &Graph, group: &TpGroup) -> anyhow::Result<Part> {
    let mut a = group
        .annotate(update)
        .context("cannot split the optimizer update")?;
    let placed: BTreeMap<String, OpDist> = a
        .nodes()
        .iter()
        .filter_map(|n| match (&n.op, &n.dist) {
            (Op::Param(p), Some(d)) => Some((format!("{}.grad", p.name), d.clone())),
            // op-contract: pass-through (only parameters' placements are copied)
            _ => None,
        })
        .collect();
    let inputs = a.inputs().to_vec();
    for id in inputs {
        if let Some(d) = placed.get(&a.node(id).name) {
            a.node_mut(id).dist = Some(d.clone());
        }
    }
    group
        .partition(update, &a)
        .context("cannot split the optimizer update")
}

impl Part {
    /// Runs the rank graph on the whole graph's inputs `x` (replicated ones whole, split
    /// ones already the rank's blocks) and the rank's shards `local` (collectives over the
    /// tensor group); the outputs, state updates included.
    pub fn run(
        &self,
        x: &[HostTensor],
        local: &Weights,
        opts: RunOptions,
        comm: &dyn Communicator,
        step: u64,
    ) -> Result<Vec<HostTensor>, TrainError> {
        let mut ins = Vec::with_capacity(self.inputs.len());
        for &i in &self.inputs {
            let t = x.get(i).ok_or_else(|| {
                TrainError::Contract(format!("step {step}: --tp --pp: {} inputs given", x.len()))
            })?;
            ins.push(t.clone());
        }
        run_with_options_on_rank(&self.graph, &ins, local, opts, comm)
            .map_err(|source| TrainError::Run { step, source })
    }
}

impl TpGroup {
    /// The rank's shards of `weights` under `placements`.
    pub fn slice(
        &self,
        weights: &Weights,
        placements: &BTreeMap<String, Vec<Placement>>,
    ) -> Result<Weights, String> {
        placements
            .iter()
            .map(|(name, pl)| match weights.get(name) {
                Some(t) => Ok((name.clone(), self.shard(t, pl))),
                None => Err(format!("no weight `{name}`")),
            })
            .collect()
    }

    /// The whole tensor of which `t` is this rank's block under `pl` (collective over the
    /// group when split).
    pub fn gather(
        &self,
        comm: &dyn Communicator,
        t: &HostTensor,
        pl: &[Placement],
    ) -> Result<HostTensor, String> {
        match pl.get(1) {
            Some(Placement::Shard(d)) => {
                let c = Collective::AllGather { axis: *d };
                run_tensor(comm, &self.members, &c, t).map_err(|e| e.to_string())
            }
            _ => Ok(t.clone()),
        }
    }
}
