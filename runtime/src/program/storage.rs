//! The memory plan of a compiled program: temporaries whose lifetimes do not overlap share
//! storage, so a network's activations stay within a few cache-resident buffers instead
//! of one fresh allocation per value.

use super::{BufferRole, Program};
use std::collections::HashSet;

impl Program {
    /// Fills `storage`: each buffer's owner (the buffer whose memory it uses, itself for
    /// most). Only temporaries of the per-run steps share; inputs, weights, constants,
    /// outputs, `zeroed` buffers, dropout masks and anything the prologue writes keep their own memory. A buffer lives from
    /// the first step that names it to the last, inclusive, so a step's output never shares
    /// with one of its operands.
    pub fn plan_storage(&mut self) {
        let n = self.buffers.len();
        self.storage = (0..n).collect();
        let mut pinned: HashSet<usize> = self.outputs.iter().copied().collect();
        pinned.extend(&self.zeroed);
        // Masks are written on the host before the run, not by a step.
        pinned.extend(self.masks.iter().map(|m| m.buf));
        for s in &self.steps[..self.prologue] {
            pinned.extend(&s.args);
        }
        let shared = |b: usize| self.buffers[b].role == BufferRole::Temp && !pinned.contains(&b);
        let (mut first, mut last) = (vec![usize::MAX; n], vec![0usize; n]);
        for (i, s) in self.steps.iter().enumerate().skip(self.prologue) {
            for &b in &s.args {
                first[b] = first[b].min(i);
                last[b] = i;
            }
        }
        // Slots: (owner, bytes); free slots by index.
        let mut slots: Vec<(usize, usize)> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut slot_of = vec![usize::MAX; n];
        for (i, s) in self.steps.iter().enumerate().skip(self.prologue) {
            for &b in &s.args {
                if first[b] != i || !shared(b) || slot_of[b] != usize::MAX {
                    continue;
                }
                let need = self.buffers[b].bytes();
                // Best fit among free slots; else grow the largest; else a new slot.
                let fit = free
                    .iter()
                    .enumerate()
                    .filter(|(_, &k)| slots[k].1 >= need)
                    .min_by_key(|(_, &k)| slots[k].1)
                    .or_else(|| free.iter().enumerate().max_by_key(|(_, &k)| slots[k].1))
                    .map(|(pos, _)| pos);
                let k = match fit {
                    Some(pos) => free.swap_remove(pos),
                    None => {
                        slots.push((b, 0));
                        slots.len() - 1
                    }
                };
                slots[k].1 = slots[k].1.max(need);
                slot_of[b] = k;
                self.storage[b] = slots[k].0;
            }
            for &b in &s.args {
                if last[b] == i && slot_of[b] != usize::MAX && !free.contains(&slot_of[b]) {
                    free.push(slot_of[b]);
                }
            }
        }
    }

    /// Bytes of memory each buffer owns: the largest buffer it holds (0 for one that
    /// borrows another's memory).
    pub fn storage_bytes(&self) -> Vec<usize> {
        let mut bytes = vec![0; self.buffers.len()];
        for (x, decl) in self.buffers.iter().enumerate() {
            let owner = self.owner(x);
            bytes[owner] = bytes[owner].max(decl.bytes());
        }
        bytes
    }

    /// The buffer whose memory `b` uses.
    pub fn owner(&self, b: usize) -> usize {
        self.storage.get(b).copied().unwrap_or(b)
    }
}
