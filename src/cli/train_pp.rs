//! `oar train ... --pp N [--dp M] [--tp T]` under `mpirun -n N·M·T`: pipeline parallelism,
//! alone or with data and tensor parallelism on a `[dp, pp, tp]` grid (rank r at
//! `(r / (pp·tp), (r / tp) % pp, r % tp)`: tensor ranks innermost, so a tensor group is
//! consecutive ranks, which a launcher puts on one host; then the pipeline). Under `--tp`
//! each stage runs split over its tensor group (`train_pp_tp.rs`) and sends to the same
//! tensor rank of the next stage; the rest of this module sees whole values.
//!
//! Every rank cuts the model into `pp · chunks` stages by layer
//! (`oar_passes::training::pipeline`) and keeps its own: stage `s` on pipeline rank
//! `s % pp`. A step splits the rank's share of the global batch (`1/dp` of it) into
//! `--micro-batches` equal parts and runs its schedule's action list
//! (`oar_runtime::train::pipeline`): forwards and backwards of micro-batches, with their
//! activations and gradients sent to the neighbouring stages' ranks. Parameter gradients
//! are summed over the micro-batches (each weighted by its share of the global batch's
//! loss), over the pipeline ranks that share a tied parameter, and over the dp ranks of a
//! stage; the global gradient norm (for `--clip-norm`) is summed over the pipeline (and
//! the tensor group); then
//! each rank runs the optimizer update of its own parameters. The loss every rank reports
//! is the global batch's (`train_pp_step.rs`). `flush` (collective) broadcasts each
//! stage's parameters and optimizer state to every rank, so evaluation (the single-process inference graph) and
//! checkpoints (rank 0's) are one process's.

use super::dist::Dist;
use super::pptp::{split_stage, split_update, Part, SplitStage, TpGroup};
use super::TrainArgs;
use anyhow::{bail, Context};
use oar::ir::dist::Placement;
use oar::ir::{Graph, TensorType};
use oar::passes::training::pipeline::{
    build_pipeline_stages, build_update, loss_units, Stage, LOSS_WEIGHT_INPUT,
};
use oar::passes::training::{LossKind, LABELS_INPUT};
use oar::runtime::comm::{Communicator, MpiComm};
use oar::runtime::interp::{run_with_options, RunOptions};
use oar::runtime::train::pipeline::{schedule, Action, Kind, Schedule};
use oar::runtime::train::pipeline_comm::Mailbox;
use oar::runtime::train::{InterpRunner, StepOutputs, StepRunner, TrainError};
use oar::runtime::{HostTensor, Weights};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// The step after the schedule: gradient sums, clipping, the update.
#[path = "train_pp_step.rs"]
mod step;

/// This process's pipeline rank: its chunks' graphs, its schedule and its update.
pub struct PpRunner {
    /// The rank's stages, by local chunk.
    stages: Vec<Stage>,
    /// Under --tp: the same stages and the update split over the rank's tensor group
    /// (empty and `None` without), the placement of every parameter and optimizer slot
    /// the rank holds, and its shards of them between steps (`None` until the first
    /// step cuts them from the whole weights).
    split: Vec<SplitStage>,
    tp_update: Option<(TpGroup, Part)>,
    placements: BTreeMap<String, Vec<Placement>>,
    local: Option<Weights>,
    actions: Vec<Action>,
    /// Optimizer update of the rank's parameters, and the parameters (name, type).
    update: Graph,
    params: Vec<(String, TensorType)>,
    /// Per pipeline rank: the parameters and optimizer slots it updates (for `flush`).
    held: Vec<Vec<String>>,
    /// Parameters this rank shares with other pipeline ranks, with those ranks.
    shared: Vec<(String, Vec<u64>)>,
    /// Parameters whose squares this rank adds to the gradient norm (the lowest pipeline
    /// rank holding each).
    counts_norm: BTreeSet<String>,
    step_inputs: Vec<String>,
    loss: LossKind,
    clip: Option<f64>,
    full: InterpRunner,
    comm: Arc<MpiComm>,
    rank: u64,
    pp: u64,
    dp: u64,
    /// Tensor-parallel degree (1 without --tp).
    tp: u64,
    micro: usize,
}

/// The runner of rank `d.rank` for the model `dist::prepare` kept (built for one
/// micro-batch).
pub fn runner(a: &TrainArgs, full: InterpRunner, d: &Dist) -> anyhow::Result<PpRunner> {
    let Some((model, cfg)) = a.dist.step.get() else {
        bail!("--pp trains zoo ERNIEs for now, not graph files or distillation");
    };
    if cfg.optim.accumulate > 1 {
        bail!("--pp accumulates over its micro-batches; drop --accumulate");
    }
    let (pp, chunks) = (d.pp as usize, a.dist.chunks.unwrap_or(1) as usize);
    let kind: Schedule = a.dist.pp_schedule.parse().map_err(anyhow::Error::msg)?;
    let micro = a.dist.micro_batches.unwrap_or(d.pp) as usize;
    let lists = schedule(kind, pp, micro, chunks).map_err(|e| anyhow::anyhow!("--pp {pp}: {e}"))?;
    let all = build_pipeline_stages(model, cfg, pp * chunks, (pp, chunks))
        .context("cannot cut the model into pipeline stages")?;
    let tp = d.tp.max(1);
    // [dp, pp, tp] coordinates, tensor ranks innermost.
    let (t, s, dd) = (
        d.rank % tp,
        ((d.rank / tp) % d.pp) as usize,
        d.rank / (tp * d.pp),
    );
    let at = |p: usize| (dd * d.pp + p as u64) * tp + t;
    // Pipeline rank p holds stages p, p + pp, …
    let of_rank = |p: usize| -> Vec<&Stage> { all.iter().skip(p).step_by(pp).collect() };
    let params_of = |p: usize| -> Vec<(String, TensorType)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for st in of_rank(p) {
            for (n, t) in &st.params {
                if seen.insert(n.clone()) {
                    out.push((n.clone(), t.clone()));
                }
            }
        }
        out
    };
    let mut held = Vec::with_capacity(pp);
    let mut holders: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (mut update, mut params) = (None, Vec::new());
    for p in 0..pp {
        let ps = params_of(p);
        let graphs: Vec<&Graph> = of_rank(p).iter().map(|st| &st.forward).collect();
        let (g, slots) = build_update(&ps, &graphs, &cfg.optim)
            .context("cannot build a stage's optimizer update")?;
        for (n, _) in &ps {
            holders.entry(n.clone()).or_default().push(at(p));
        }
        let mut names: Vec<String> = ps.iter().map(|(n, _)| n.clone()).collect();
        names.extend(slots.into_iter().map(|sl| sl.name));
        held.push(names);
        if p == s {
            update = Some(g);
            params = ps;
        }
    }
    let me = d.rank;
    let shared: Vec<(String, Vec<u64>)> = holders
        .iter()
        .filter(|(_, r)| r.len() > 1 && r.contains(&me))
        .map(|(n, r)| (n.clone(), r.clone()))
        .collect();
    let counts_norm = holders
        .iter()
        .filter(|(_, r)| r.first() == Some(&me))
        .map(|(n, _)| n.clone())
        .collect();
    if d.rank == 0 {
        let parts: Vec<String> = all
            .iter()
            .map(|st| {
                let l = &st.layers;
                format!(
                    "stage {} layers {}..{} ({} parameters)",
                    st.index,
                    l.start,
                    l.end,
                    st.params.len()
                )
            })
            .collect();
        let tps = match tp {
            1 => String::new(),
            t => format!(" × tp {t}"),
        };
        println!(
            "pipeline parallel: dp {} × pp {pp}{tps}, schedule {kind}, {micro} micro-batches of {}, {}",
            d.dp,
            a.batch as u64 / d.dp / micro as u64,
            parts.join(", ")
        );
    }
    let mut step_inputs: Vec<String> = model
        .inputs()
        .iter()
        .map(|&i| model.node(i).name.clone())
        .collect();
    step_inputs.extend([LABELS_INPUT.to_string(), "lr".into(), "step".into()]);
    let stages: Vec<Stage> = all.iter().skip(s).step_by(pp).cloned().collect();
    let update = update.context("no update for this rank")?;
    let (mut split, mut tp_update, mut placements) = (Vec::new(), None, BTreeMap::new());
    if tp > 1 {
        let group = TpGroup::new((0..tp).map(|k| d.rank - t + k).collect(), d.rank)?;
        split = stages
            .iter()
            .map(|st| split_stage(st, &group))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let u = split_update(&update, &group)?;
        for part in split.iter().flat_map(|sp| [&sp.forward, &sp.backward]) {
            placements.extend(part.params.clone());
        }
        placements.extend(u.params.clone());
        if d.rank == 0 {
            let split = placements
                .values()
                .filter(|p| p.iter().any(|x| *x != Placement::Replicate))
                .count();
            println!(
                "tensor groups of {tp}: rank 0 holds {split} of its {} parameters and optimizer \
                 slots split",
                placements.len()
            );
        }
        tp_update = Some((group, u));
    }
    Ok(PpRunner {
        stages,
        split,
        tp_update,
        placements,
        local: None,
        actions: lists[s].clone(),
        update,
        params,
        held,
        shared,
        counts_norm,
        step_inputs,
        loss: cfg.loss.clone(),
        clip: cfg.optim.clip_global_norm,
        full,
        comm: d.comm.clone(),
        rank: d.rank,
        pp: d.pp,
        dp: d.dp,
        tp,
        micro,
    })
}

fn contract(step: u64, what: impl std::fmt::Display) -> TrainError {
    TrainError::Contract(format!("step {step}: --pp: {what}"))
}

/// What one micro-batch of one chunk holds between its forward and its backward.
#[derive(Default)]
struct InFlight {
    /// The forward's inputs (data, then received values).
    inputs: Vec<HostTensor>,
    /// Outputs to send (activations forward, input gradients backward).
    out: Vec<HostTensor>,
    /// Gradients of the sent values, from the next stage.
    grads: Vec<HostTensor>,
}

impl PpRunner {
    /// Global rank of pipeline rank `p` of this rank's pipeline (same dp replica and
    /// tensor rank).
    fn pipe_rank(&self, p: usize) -> u64 {
        (self.dp_coord() * self.pp + p as u64) * self.tp + self.rank % self.tp
    }

    /// This rank's data-parallel replica.
    fn dp_coord(&self) -> u64 {
        self.rank / (self.pp * self.tp)
    }

    /// The ranks at this rank's pipeline and tensor coordinates in every dp replica.
    fn dp_group(&self) -> Vec<u64> {
        let at = self.rank % (self.pp * self.tp);
        (0..self.dp).map(|r| r * self.pp * self.tp + at).collect()
    }

    /// Runs the action list; returns the summed parameter gradients and the weighted loss.
    fn run_schedule(
        &self,
        micro: &[BTreeMap<String, HostTensor>],
        weights: &Weights,
        step: u64,
        seed: u64,
    ) -> Result<(BTreeMap<String, Vec<f32>>, f64), TrainError> {
        let pp = self.pp as usize;
        let chunk_of = |vs: usize| vs / pp;
        let comm = self.comm.as_ref();
        let mut mailbox = Mailbox::default();
        let mut live: BTreeMap<(usize, usize), InFlight> = BTreeMap::new();
        let mut grads: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let mut loss = 0.0f64;
        let d = self.dp_coord();
        let comm_err = |e: oar::runtime::train::pipeline_comm::PipeCommError| contract(step, e);
        for a in &self.actions {
            match *a {
                Action::Recv { id, peer } => {
                    let c = chunk_of(id.to_stage);
                    let st = &self.stages[c];
                    let types = match id.kind {
                        Kind::Activation => &st.recv,
                        Kind::Gradient => &st.send,
                    };
                    let got = mailbox
                        .recv(comm, self.pipe_rank(peer), id, types)
                        .map_err(comm_err)?;
                    let f = live.entry((id.micro_batch, c)).or_default();
                    match id.kind {
                        Kind::Activation => f.inputs.extend(got),
                        Kind::Gradient => f.grads = got,
                    }
                }
                Action::Send { id, peer } => {
                    let vs = match id.kind {
                        Kind::Activation => id.to_stage - 1,
                        Kind::Gradient => id.to_stage + 1,
                    };
                    let f = live
                        .get_mut(&(id.micro_batch, chunk_of(vs)))
                        .ok_or_else(|| contract(step, format!("{id:?}: nothing to send")))?;
                    let out = std::mem::take(&mut f.out);
                    Mailbox::send(comm, self.pipe_rank(peer), id, &out).map_err(comm_err)?;
                    if id.kind == Kind::Gradient {
                        live.remove(&(id.micro_batch, chunk_of(vs)));
                    }
                }
                Action::Forward { micro_batch, chunk } => {
                    let st = &self.stages[chunk];
                    let data = self.data_inputs(st, &micro[micro_batch], step)?;
                    let f = live.entry((micro_batch, chunk)).or_default();
                    let mut x = data;
                    x.append(&mut f.inputs);
                    f.inputs = x;
                    // The last stage's backward recomputes the loss: nothing to run yet.
                    if !st.is_last() {
                        let opts = self.opts(seed, step, d, micro_batch);
                        f.out = match self.split.get(chunk) {
                            Some(sp) => sp.forward.run(&f.inputs, weights, opts, comm, step)?,
                            None => {
                                run_with_options(&st.forward, &f.inputs, weights, opts)
                                    .map_err(|source| TrainError::Run { step, source })?
                                    .outputs
                            }
                        };
                    }
                }
                Action::Backward { micro_batch, chunk } => {
                    let st = &self.stages[chunk];
                    let key = (micro_batch, chunk);
                    let mut f = live.remove(&key).unwrap_or_default();
                    let mut x = f.inputs.clone();
                    let w = if st.is_last() {
                        let w = micro[micro_batch]
                            .get(LOSS_WEIGHT_INPUT)
                            .cloned()
                            .ok_or_else(|| contract(step, "no loss weight"))?;
                        x.push(w);
                        None
                    } else {
                        x.append(&mut f.grads);
                        Some(())
                    };
                    let opts = self.opts(seed, step, d, micro_batch);
                    let outs = match self.split.get(chunk) {
                        Some(sp) => sp.backward.run(&x, weights, opts, comm, step)?,
                        None => {
                            run_with_options(&st.backward, &x, weights, opts)
                                .map_err(|source| TrainError::Run { step, source })?
                                .outputs
                        }
                    };
                    let mut outs = outs.into_iter();
                    if w.is_none() {
                        let l = outs.next().and_then(|t| t.as_f32().map(|v| v[0]));
                        let wt = micro[micro_batch][LOSS_WEIGHT_INPUT].as_f32().map(|v| v[0]);
                        loss += f64::from(l.unwrap_or(f32::NAN)) * f64::from(wt.unwrap_or(0.0));
                    }
                    f.out = outs.by_ref().take(st.recv.len()).collect();
                    for ((name, _), g) in st.params.iter().zip(outs) {
                        let g = g.as_f32().ok_or_else(|| {
                            contract(step, format!("gradient of `{name}` is not f32"))
                        })?;
                        match grads.get_mut(name) {
                            Some(acc) => acc.iter_mut().zip(g).for_each(|(a, b)| *a += b),
                            None => {
                                grads.insert(name.clone(), g.to_vec());
                            }
                        }
                    }
                    // Stage 0 sends nothing back: its micro-batch is done.
                    if st.index > 0 {
                        f.inputs.clear();
                        live.insert(key, f);
                    }
                }
            }
        }
        mailbox.check_empty(self.rank).map_err(comm_err)?;
        Ok((grads, loss))
    }

    /// Dropout continues one process's stream at the micro-batch's rows of the global batch.
    fn opts(&self, seed: u64, step: u64, d: u64, mb: usize) -> RunOptions {
        RunOptions {
            batch_shard: d * self.micro as u64 + mb as u64,
            ..RunOptions::training(seed, step)
        }
    }

    fn data_inputs(
        &self,
        st: &Stage,
        micro: &BTreeMap<String, HostTensor>,
        step: u64,
    ) -> Result<Vec<HostTensor>, TrainError> {
        st.data_inputs
            .iter()
            .map(|n| {
                micro
                    .get(n)
                    .cloned()
                    .ok_or_else(|| contract(step, format!("no input `{n}`")))
            })
            .collect()
    }

    /// The rank's micro-batches of the step's inputs (by name), each with its loss weight.
    fn micro_batches(
        &self,
        inputs: &[HostTensor],
        step: u64,
    ) -> Result<Vec<BTreeMap<String, HostTensor>>, TrainError> {
        if inputs.len() != self.step_inputs.len() {
            return Err(contract(
                step,
                format!(
                    "{} inputs given, the step has {}",
                    inputs.len(),
                    self.step_inputs.len()
                ),
            ));
        }
        let by: BTreeMap<&str, &HostTensor> = self
            .step_inputs
            .iter()
            .map(String::as_str)
            .zip(inputs)
            .collect();
        let labels = by[LABELS_INPUT];
        let batch = labels.shape.first().copied().unwrap_or(0);
        let parts = self.dp as usize * self.micro;
        if !batch.is_multiple_of(parts) {
            return Err(contract(
                step,
                format!(
                    "a batch of {batch} does not split into dp {} × {} micro-batches",
                    self.dp, self.micro
                ),
            ));
        }
        let total = loss_units(&self.loss, labels)
            .ok_or_else(|| contract(step, "the loss cannot be split into micro-batches"))?;
        let rows = batch / parts;
        let d = self.dp_coord() as usize;
        (0..self.micro)
            .map(|k| {
                let at = (d * self.micro + k) * rows;
                let mut m: BTreeMap<String, HostTensor> = by
                    .iter()
                    .map(|(n, t)| {
                        let t = match t.shape.first() {
                            Some(&b) if b == batch => t.narrow(0, at, rows),
                            _ => (*t).clone(),
                        };
                        (n.to_string(), t)
                    })
                    .collect();
                let units = loss_units(&self.loss, &m[LABELS_INPUT]).unwrap_or(0.0);
                let w = if total > 0.0 { units / total } else { 0.0 };
                m.insert(
                    LOSS_WEIGHT_INPUT.into(),
                    HostTensor::f32(vec![], vec![w as f32]),
                );
                Ok(m)
            })
            .collect()
    }
}

impl StepRunner for PpRunner {
    fn run(
        &mut self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        if self.tp_update.is_none() {
            return self.train_step(inputs, weights, step);
        }
        let mut local = match (self.local.take(), &self.tp_update) {
            (Some(l), _) => l,
            (None, Some((g, _))) => g
                .slice(weights, &self.placements)
                .map_err(|e| contract(step, e))?,
            (None, None) => return Err(contract(step, "no tensor group")),
        };
        let out = self.train_step(inputs, &mut local, step);
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

    /// Under --tp, all-gathers the rank's split parameters and optimizer state over its
    /// tensor group; then broadcasts each pipeline rank's to the whole pipeline
    /// (collective), so every rank holds the full state.
    fn flush(&mut self, weights: &mut Weights) -> Result<(), TrainError> {
        let pipe: Vec<u64> = (0..self.pp as usize).map(|p| self.pipe_rank(p)).collect();
        let err = |e: String| TrainError::Contract(format!("rank {}: gathering: {e}", self.rank));
        if let (Some((g, _)), Some(local)) = (&self.tp_update, &self.local) {
            for (name, pl) in &self.placements {
                let t = local
                    .get(name)
                    .ok_or_else(|| err(format!("no shard of `{name}`")))?;
                let whole = g.gather(self.comm.as_ref(), t, pl).map_err(err)?;
                weights.insert(name.clone(), whole);
            }
        }
        let mut done = BTreeSet::new();
        for (p, names) in self.held.iter().enumerate() {
            for name in names {
                if !done.insert(name.clone()) {
                    continue;
                }
                let t = weights
                    .get(name)
                    .ok_or_else(|| err(format!("no weight `{name}`")))?;
                let v = t
                    .as_f32()
                    .ok_or_else(|| err(format!("`{name}` is not f32")))?;
                let mut bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.comm
                    .broadcast(&pipe, p, &mut bytes)
                    .map_err(|e| err(e.to_string()))?;
                let data = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let shape = t.shape.clone();
                weights.insert(name.clone(), HostTensor::f32(shape, data));
            }
        }
        Ok(())
    }
}
