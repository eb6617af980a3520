//! A training step's state inside the executor: weights read and replaced by name, state
//! updates committed after a run, and dropout masks drawn on the host per step.
//!
//! State updates are copied, not aliased: each update's new value is a graph output with
//! its own buffer, and [`Executor::commit_state`] copies it over the weight buffer after the
//! run. Aliasing the output with the weight would save that copy (a few MB per step for the
//! zoo's small models) but is only safe when every read of the old value precedes the
//! update's write, which the step order does not guarantee (an optimizer reads the old
//! parameter in several kernels); the copy also lets a caller discard a step whose loss is
//! not finite.

use super::exec::{read_buffer, tensor_bytes};
use super::{BufferRole, ExecError, Executor};
use crate::io::weights::Weights;
use crate::tensor::HostTensor;

/// The keep decisions of `n` elements of stream `name` at (`seed`, `step`) with drop
/// probability `p`: the interpreter's mask, computed by the same function.
pub fn dropout_keep_fast(seed: u64, step: u64, name: &str, p: f64, n: usize) -> Vec<bool> {
    let opts = crate::interp::RunOptions::training(seed, step);
    crate::interp::dropout_keep_mask(&opts, name, p, n)
}

impl Executor {
    /// Fills the dropout masks: for training step `step` of stream `seed` with
    /// `Some((seed, step))`, else with the inference scale.
    pub fn set_dropout(&mut self, training: Option<(u64, u64)>) {
        for m in &self.program.masks {
            let owner = self.program.owner(m.buf);
            let n = self.program.buffers[m.buf].bytes() / 4;
            let Ok(out) = bytemuck::try_cast_slice_mut::<u8, f32>(
                &mut self.buffers[owner].bytes_mut()[..n * 4],
            ) else {
                continue;
            };
            match training {
                None => out.fill(m.infer),
                Some((seed, step)) => {
                    let keep = dropout_keep_fast(seed, step, &m.stream, m.p, n);
                    for (o, k) in out.iter_mut().zip(keep) {
                        *o = if k { m.keep } else { 0.0 };
                    }
                }
            }
        }
    }

    /// Runs on `inputs` and returns only the first `k` outputs (a training step's loss and
    /// logits, not its state updates). The updates stay pending until
    /// [`Executor::commit_state`].
    pub fn run_first(
        &mut self,
        inputs: &[HostTensor],
        k: usize,
    ) -> Result<Vec<HostTensor>, ExecError> {
        self.bind_inputs(inputs)?;
        let steps = self.program.prologue..self.program.steps.len();
        self.run_steps(steps, None)?;
        Ok(self
            .program
            .outputs
            .iter()
            .take(k)
            .map(|&id| read_buffer(&self.program.buffers[id], self.buffers[id].bytes()))
            .collect())
    }

    /// Copies the last run's state updates into their weight buffers.
    pub fn commit_state(&mut self) {
        for k in 0..self.program.updates.len() {
            let (from, to) = self.program.updates[k];
            let (from, to) = (self.program.owner(from), self.program.owner(to));
            if from == to {
                continue;
            }
            let n = self.program.buffers[self.program.updates[k].1].bytes();
            // Two distinct buffers: split the borrow.
            let (src, dst) = if from < to {
                let (a, b) = self.buffers.split_at_mut(to);
                (&a[from], &mut b[0])
            } else {
                let (a, b) = self.buffers.split_at_mut(from);
                (&b[0], &mut a[to])
            };
            dst.bytes_mut()[..n].copy_from_slice(&src.bytes()[..n]);
        }
    }

    /// The weights the state updates write, by name, as the last commit left them.
    pub fn state_values(&self) -> Vec<(String, HostTensor)> {
        self.program
            .updates
            .iter()
            .filter_map(|&(_, to)| {
                let decl = &self.program.buffers[to];
                let BufferRole::Weight(name) = &decl.role else {
                    return None;
                };
                let value = read_buffer(decl, self.buffers[self.program.owner(to)].bytes());
                Some((name.clone(), value))
            })
            .collect()
    }

    /// The names of the weights the program holds, in buffer order.
    pub fn weight_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for b in &self.program.buffers {
            if let BufferRole::Weight(n) = &b.role {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    /// Weight `name`'s current value (updated by committed training steps).
    pub fn weight(&self, name: &str) -> Option<HostTensor> {
        let id = self
            .program
            .buffers
            .iter()
            .position(|b| matches!(&b.role, BufferRole::Weight(n) if n == name))?;
        Some(read_buffer(
            &self.program.buffers[id],
            self.buffers[self.program.owner(id)].bytes(),
        ))
    }

    /// Every weight's current value.
    pub fn weights(&self) -> Weights {
        self.weight_names()
            .into_iter()
            .filter_map(|n| self.weight(&n).map(|t| (n, t)))
            .collect()
    }

    /// Replaces weight `name` (a checkpoint resumed, weights from elsewhere) and re-runs the
    /// prologue, whose steps derive from the weights.
    pub fn set_weight(&mut self, name: &str, value: &HostTensor) -> Result<(), ExecError> {
        self.write_weight(name, value)?;
        self.run_steps(0..self.program.prologue, None)
    }

    /// Replaces every weight of the program present in `weights` (others keep their value),
    /// then re-runs the prologue once.
    pub fn set_weights(&mut self, weights: &Weights) -> Result<(), ExecError> {
        for name in self.weight_names() {
            if let Some(w) = weights.get(&name) {
                self.write_weight(&name, w)?;
            }
        }
        self.run_steps(0..self.program.prologue, None)
    }

    fn write_weight(&mut self, name: &str, value: &HostTensor) -> Result<(), ExecError> {
        let fail = |message: String| ExecError::Weight {
            name: name.to_string(),
            message,
        };
        let ids: Vec<usize> = (0..self.program.buffers.len())
            .filter(
                |&i| matches!(&self.program.buffers[i].role, BufferRole::Weight(n) if n == name),
            )
            .collect();
        if ids.is_empty() {
            return Err(fail("the program has no such weight".into()));
        }
        for id in ids {
            let decl = &self.program.buffers[id];
            if value.shape != decl.shape {
                return Err(fail(format!(
                    "has shape {:?}, the program needs {:?}",
                    value.shape, decl.shape
                )));
            }
            let bytes = tensor_bytes(value, decl.dtype).ok_or_else(|| {
                fail(format!(
                    "is {}, the program needs {}",
                    value.dtype().name(),
                    decl.dtype.name()
                ))
            })?;
            let owner = self.program.owner(id);
            self.buffers[owner].bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{dropout_keep, RunOptions};

    #[test]
    fn the_fast_mask_is_the_interpreters() {
        for (seed, step, name, p) in [(1, 1, "drop", 0.1), (7, 123, "encoder.0.dropout", 0.5)] {
            let fast = dropout_keep_fast(seed, step, name, p, 4096);
            let opts = RunOptions::training(seed, step);
            let slow: Vec<bool> = (0..4096).map(|i| dropout_keep(&opts, name, p, i)).collect();
            assert_eq!(fast, slow, "seed {seed} step {step} {name}");
        }
    }
}
