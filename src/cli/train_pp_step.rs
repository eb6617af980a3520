//! The `--pp` step after the schedule ran: gradient sums over the tied-weight, data- and
//! tensor-parallel groups, the global norm for `--clip-norm`, the global loss and the
//! rank's optimizer update (split over its tensor group under `--tp`).

use super::{contract, PpRunner};
use oar::ir::dist::{Placement, ReduceOp};
use oar::runtime::comm::Communicator;
use oar::runtime::interp::{run_with_options, RunOptions};
use oar::runtime::train::{StepOutputs, TrainError};
use oar::runtime::{HostTensor, Weights};
use std::collections::BTreeMap;

impl PpRunner {
    /// One step on `weights`: the whole weights, or under --tp the rank's shards.
    pub(super) fn train_step(
        &self,
        inputs: &[HostTensor],
        weights: &mut Weights,
        step: u64,
    ) -> Result<StepOutputs, TrainError> {
        let micro = self.micro_batches(inputs, step)?;
        let seed = self.full.seed();
        let (mut grads, loss) = self.run_schedule(&micro, weights, step, seed)?;
        // Tied parameters: the pipeline ranks that hold one add their gradients.
        for (name, group) in &self.shared {
            let g = grads
                .get_mut(name)
                .ok_or_else(|| contract(step, format!("no gradient of `{name}`")))?;
            self.all_reduce(group, g, step)?;
        }
        // Data parallel: one all-reduce of every gradient over the stage's dp ranks.
        if self.dp > 1 {
            let mut flat: Vec<f32> = self
                .params
                .iter()
                .flat_map(|(n, _)| grads[n].clone())
                .collect();
            self.all_reduce(&self.dp_group(), &mut flat, step)?;
            let mut at = 0;
            for (n, _) in &self.params {
                let g = grads
                    .get_mut(n)
                    .ok_or_else(|| contract(step, "lost a gradient"))?;
                let len = g.len();
                g.copy_from_slice(&flat[at..at + len]);
                at += len;
            }
        }
        // The loss: the last stage's weighted sum, over every dp replica (once per tensor
        // group: its ranks all hold it).
        let world: Vec<u64> = (0..self.pp * self.dp * self.tp).collect();
        let mine = if self.rank.is_multiple_of(self.tp) {
            loss
        } else {
            0.0
        };
        let mut l = [mine as f32];
        self.all_reduce(&world, &mut l, step)?;
        if !l[0].is_finite() {
            return Err(TrainError::NonFinite {
                step,
                loss: l[0],
                origin: "not traced under --pp (rerun on one process to find it)".into(),
            });
        }
        if let Some(clip) = self.clip {
            // A split gradient's squares from each of its tensor ranks, a replicated one's
            // from tensor rank 0; summed over the replica's pipeline and tensor ranks.
            let t0 = self.rank.is_multiple_of(self.tp);
            let mut sq = [0f32];
            for n in &self.counts_norm {
                let split = self
                    .placements
                    .get(n)
                    .is_some_and(|p| p.iter().any(|x| *x != Placement::Replicate));
                if split || t0 {
                    sq[0] += grads[n].iter().map(|x| x * x).sum::<f32>();
                }
            }
            let lo = self.dp_coord() * self.pp * self.tp;
            let replica: Vec<u64> = (lo..lo + self.pp * self.tp).collect();
            self.all_reduce(&replica, &mut sq, step)?;
            let c = clip as f32;
            let scale = c / sq[0].sqrt().max(c);
            grads
                .values_mut()
                .for_each(|g| g.iter_mut().for_each(|x| *x *= scale));
        }
        let by: BTreeMap<&str, &HostTensor> = self
            .step_inputs
            .iter()
            .map(String::as_str)
            .zip(inputs)
            .collect();
        let mut x = Vec::new();
        for &id in self.update.inputs() {
            let name = self.update.node(id).name.as_str();
            let t = match name.strip_suffix(".grad") {
                // Shaped like the parameter the rank holds (whole, or its shard).
                Some(p) => {
                    let w = weights
                        .get(p)
                        .ok_or_else(|| contract(step, format!("no parameter `{p}`")))?;
                    HostTensor::f32(w.shape.clone(), grads.remove(p).unwrap_or_default())
                }
                None => by
                    .get(name)
                    .map(|t| (*t).clone())
                    .ok_or_else(|| contract(step, format!("no input `{name}`")))?,
            };
            x.push(t);
        }
        let opts = RunOptions::training(seed, step);
        let state = match &self.tp_update {
            Some((_, u)) => {
                let out = u.run(&x, weights, opts, self.comm.as_ref(), step)?;
                u.graph.state.iter().cloned().zip(out).collect()
            }
            None => {
                run_with_options(&self.update, &x, weights, opts)
                    .map_err(|source| TrainError::Run { step, source })?
                    .state
            }
        };
        for (n, v) in state {
            weights.insert(n, v);
        }
        Ok(StepOutputs {
            loss: l[0],
            logits: HostTensor::f32(vec![0], vec![]),
            skipped: false,
            parts: Vec::new(),
        })
    }

    fn all_reduce(&self, group: &[u64], buf: &mut [f32], step: u64) -> Result<(), TrainError> {
        self.comm
            .all_reduce(group, ReduceOp::Sum, buf)
            .map_err(|e| contract(step, e))
    }
}
