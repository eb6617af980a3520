//! Communicators: how ranks exchange tensors for collectives. `LocalComm` runs ranks as
//! threads of one process (tests, single-node CPU runs); MPI and NCCL communicators
//! implement the same trait.

use crate::tensor::HostTensor;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

/// One rank's view of the communicator.
pub trait Communicator: Send + Sync {
    /// This rank's global id (its device id in the mesh).
    fn rank(&self) -> u64;
    /// Every member's tensor, in `group` order. All members call this for the same
    /// collective in the same order (SPMD), each with its own tensor.
    fn exchange(&self, group: &[u64], tensor: HostTensor) -> Result<Vec<HostTensor>, String>;
}

#[derive(Default)]
struct Slot {
    tensors: Vec<Option<HostTensor>>,
    taken: usize,
}

#[derive(Default)]
struct Shared {
    slots: Mutex<HashMap<(Vec<u64>, u64), Slot>>,
    ready: Condvar,
}

/// In-process communicator: one instance per rank thread, sharing state.
pub struct LocalComm {
    rank: u64,
    shared: Arc<Shared>,
    /// Per-group sequence numbers, so successive collectives of a group do not mix.
    seq: Mutex<HashMap<Vec<u64>, u64>>,
}

impl LocalComm {
    /// One communicator per rank id in `ranks`.
    pub fn group(ranks: &[u64]) -> Vec<LocalComm> {
        let shared = Arc::new(Shared::default());
        ranks
            .iter()
            .map(|&rank| LocalComm {
                rank,
                shared: shared.clone(),
                seq: Mutex::new(HashMap::new()),
            })
            .collect()
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> u64 {
        self.rank
    }

    fn exchange(&self, group: &[u64], tensor: HostTensor) -> Result<Vec<HostTensor>, String> {
        let me = group
            .iter()
            .position(|&r| r == self.rank)
            .ok_or_else(|| format!("rank {} is not in group {group:?}", self.rank))?;
        let n = {
            let mut seq = self.seq.lock().map_err(|_| "communicator state poisoned")?;
            let s = seq.entry(group.to_vec()).or_insert(0);
            *s += 1;
            *s
        };
        let key = (group.to_vec(), n);
        let mut slots = self
            .shared
            .slots
            .lock()
            .map_err(|_| "communicator state poisoned")?;
        let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
            tensors: vec![None; group.len()],
            taken: 0,
        });
        slot.tensors[me] = Some(tensor);
        self.shared.ready.notify_all();
        loop {
            let slot = slots.get(&key).ok_or("collective slot vanished")?;
            if slot.tensors.iter().all(Option::is_some) {
                break;
            }
            let (guard, timeout) = self
                .shared
                .ready
                .wait_timeout(slots, std::time::Duration::from_secs(60))
                .map_err(|_| "communicator state poisoned")?;
            slots = guard;
            if timeout.timed_out() {
                return Err(format!(
                    "rank {} waited 60 s for group {group:?}: a peer never joined",
                    self.rank
                ));
            }
        }
        let slot = slots.get_mut(&key).ok_or("collective slot vanished")?;
        let all: Vec<HostTensor> = slot
            .tensors
            .iter()
            .map(|t| t.clone().unwrap_or_else(|| unreachable!("all present")))
            .collect();
        slot.taken += 1;
        if slot.taken == group.len() {
            slots.remove(&key);
        }
        Ok(all)
    }
}
