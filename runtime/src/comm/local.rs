//! `LocalComm`: ranks as threads of one process, exchanging messages through shared
//! mailboxes. Collectives run the ring algorithms of `ring` over those mailboxes, so a rank
//! moves what it would move over a real link; `bytes_sent` counts it.

use super::ring::{self, Msg, Transport};
use super::{position, CommError, Communicator};
use oar_ir::dist::ReduceOp;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A mailbox per (sender, receiver, context).
type Key = (u64, u64, Vec<u64>);

struct Shared {
    ranks: Vec<u64>,
    boxes: Mutex<HashMap<Key, VecDeque<Msg>>>,
    arrived: Condvar,
}

/// In-process communicator: one instance per rank thread, sharing mailboxes.
pub struct LocalComm {
    rank: u64,
    shared: Arc<Shared>,
    /// How long a receive waits before reporting the peer as never joined.
    timeout: Duration,
    sent: AtomicU64,
}

impl LocalComm {
    /// One communicator per rank id in `ranks`; a peer that never joins is reported after
    /// 60 s.
    pub fn group(ranks: &[u64]) -> Vec<LocalComm> {
        Self::group_with_timeout(ranks, Duration::from_secs(60))
    }

    /// As [`LocalComm::group`], reporting a missing peer after `timeout`.
    pub fn group_with_timeout(ranks: &[u64], timeout: Duration) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            ranks: ranks.to_vec(),
            boxes: Mutex::new(HashMap::new()),
            arrived: Condvar::new(),
        });
        ranks
            .iter()
            .map(|&rank| LocalComm {
                rank,
                shared: shared.clone(),
                timeout,
                sent: AtomicU64::new(0),
            })
            .collect()
    }

    /// Payload bytes this rank has sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn me_in(&self, group: &[u64]) -> Result<usize, CommError> {
        position(group, self.rank)
    }

    fn buffer_error(&self, op: &'static str, message: String) -> CommError {
        CommError::Buffer {
            op,
            rank: self.rank,
            message,
        }
    }
}

impl Transport for LocalComm {
    fn me(&self) -> u64 {
        self.rank
    }

    fn post(&self, ctx: &[u64], to: u64, msg: Msg) -> Result<(), CommError> {
        if !self.shared.ranks.contains(&to) {
            return Err(CommError::NotInGroup {
                rank: to,
                group: self.shared.ranks.clone(),
            });
        }
        self.sent
            .fetch_add(msg.data.len() as u64, Ordering::Relaxed);
        let mut boxes = self.shared.boxes.lock().map_err(|_| CommError::Poisoned)?;
        boxes
            .entry((self.rank, to, ctx.to_vec()))
            .or_default()
            .push_back(msg);
        self.shared.arrived.notify_all();
        Ok(())
    }

    fn take(&self, ctx: &[u64], from: u64) -> Result<Msg, CommError> {
        let key = (from, self.rank, ctx.to_vec());
        let deadline = Instant::now() + self.timeout;
        let mut boxes = self.shared.boxes.lock().map_err(|_| CommError::Poisoned)?;
        loop {
            if let Some(m) = boxes.get_mut(&key).and_then(VecDeque::pop_front) {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CommError::Timeout {
                    rank: self.rank,
                    peer: from,
                    group: if ctx.is_empty() {
                        vec![from, self.rank]
                    } else {
                        ctx.to_vec()
                    },
                    waited: self.timeout,
                });
            }
            boxes = self
                .shared
                .arrived
                .wait_timeout(boxes, left)
                .map_err(|_| CommError::Poisoned)?
                .0;
        }
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> u64 {
        self.rank
    }

    fn all_reduce(&self, group: &[u64], op: ReduceOp, buf: &mut [f32]) -> Result<(), CommError> {
        let me = self.me_in(group)?;
        ring::all_reduce(self, group, me, op, buf)
    }

    fn reduce_scatter(
        &self,
        group: &[u64],
        op: ReduceOp,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), CommError> {
        let me = self.me_in(group)?;
        let n = group.len();
        if input.len() != n * output.len() {
            return Err(self.buffer_error(
                "reduce_scatter",
                format!(
                    "input of {} elements does not split into {n} outputs of {}",
                    input.len(),
                    output.len()
                ),
            ));
        }
        let mut work = input.to_vec();
        ring::reduce_scatter_in_place(self, group, me, op, &mut work)?;
        let own = &work[me * output.len()..(me + 1) * output.len()];
        output.copy_from_slice(own);
        if op == ReduceOp::Mean {
            output.iter_mut().for_each(|v| *v /= n as f32);
        }
        Ok(())
    }

    fn all_gather(&self, group: &[u64], input: &[u8], output: &mut [u8]) -> Result<(), CommError> {
        let me = self.me_in(group)?;
        let l = input.len();
        if output.len() != group.len() * l {
            return Err(self.buffer_error(
                "all_gather",
                format!(
                    "output of {} bytes cannot hold {} inputs of {l}",
                    output.len(),
                    group.len()
                ),
            ));
        }
        output[me * l..(me + 1) * l].copy_from_slice(input);
        ring::all_gather_in_place(self, group, me, output, |k| k * l..(k + 1) * l)
    }

    fn broadcast(&self, group: &[u64], root: usize, buf: &mut [u8]) -> Result<(), CommError> {
        let me = self.me_in(group)?;
        if root >= group.len() {
            return Err(self.buffer_error(
                "broadcast",
                format!("root {root} is outside a group of {}", group.len()),
            ));
        }
        ring::broadcast(self, group, me, root, buf)
    }

    fn all_to_all(&self, group: &[u64], input: &[u8], output: &mut [u8]) -> Result<(), CommError> {
        let me = self.me_in(group)?;
        if input.len() != output.len() || !input.len().is_multiple_of(group.len()) {
            return Err(self.buffer_error(
                "all_to_all",
                format!(
                    "input of {} and output of {} bytes do not split into {} equal chunks",
                    input.len(),
                    output.len(),
                    group.len()
                ),
            ));
        }
        ring::all_to_all(self, group, me, input, output)
    }

    fn send(&self, peer: u64, buf: &[u8]) -> Result<(), CommError> {
        let msg = Msg {
            whole: buf.len(),
            data: buf.to_vec(),
        };
        self.post(&[], peer, msg)
    }

    fn recv(&self, peer: u64, buf: &mut [u8]) -> Result<(), CommError> {
        let got =
            ring::take_checked(self, &[], peer, buf.len(), buf.len()).map_err(|e| match e {
                CommError::SizeMismatch {
                    rank,
                    peer,
                    mine,
                    theirs,
                    ..
                } => CommError::SizeMismatch {
                    rank,
                    peer,
                    group: vec![peer, rank],
                    mine,
                    theirs,
                },
                e => e,
            })?;
        buf.copy_from_slice(&got);
        Ok(())
    }

    fn barrier(&self, group: &[u64]) -> Result<(), CommError> {
        let me = self.me_in(group)?;
        ring::barrier(self, group, me)
    }
}
