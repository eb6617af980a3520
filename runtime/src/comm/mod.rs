//! Communicators: how ranks run collectives and point-to-point transfers. The trait works on
//! flat buffers in place (f32 for reductions, bytes for data movement), over a group given as
//! the list of its members' global ranks; `shaped` adds the tensor-axis forms the IR's
//! collectives need. `LocalComm` runs ranks as threads of one process (tests, single-node CPU
//! runs) with ring algorithms (`ring`); MPI and NCCL communicators implement the same trait.

mod local;
#[cfg(feature = "mpi")]
mod mpi;
mod ring;
pub mod shaped;

pub use local::LocalComm;
#[cfg(feature = "mpi")]
pub use mpi::{launched_by_mpi, MpiComm, TIMEOUT_ENV};

use oar_ir::dist::ReduceOp;
use std::time::Duration;

/// Why a collective or transfer failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommError {
    #[error(
        "rank {rank} waited {waited:?} for rank {peer} in group {group:?}: the peer never joined"
    )]
    Timeout {
        rank: u64,
        peer: u64,
        group: Vec<u64>,
        waited: Duration,
    },
    #[error(
        "rank {rank}: {op} on group {group:?} timed out after {waited:?}; {}",
        lost_text(lost)
    )]
    CollectiveTimeout {
        rank: u64,
        op: &'static str,
        group: Vec<u64>,
        /// Members that never arrived at the collective (empty: all arrived, one stopped
        /// part-way).
        lost: Vec<u64>,
        waited: Duration,
    },
    #[error(
        "rank {rank}: {op} on group {group:?} is collective number {mine} here but rank {peer} \
         is at number {theirs}: the ranks' programs diverged"
    )]
    Diverged {
        rank: u64,
        peer: u64,
        op: &'static str,
        group: Vec<u64>,
        mine: u64,
        theirs: u64,
    },
    #[error("{op} on rank {rank}: MPI error code {code}")]
    Mpi {
        op: &'static str,
        rank: u64,
        code: i32,
    },
    #[error("rank {rank} is not in group {group:?}")]
    NotInGroup { rank: u64, group: Vec<u64> },
    #[error("group {group:?} is empty or names a rank twice")]
    BadGroup { group: Vec<u64> },
    #[error(
        "group {group:?}: rank {rank} holds {mine} bytes but rank {peer} sent a part of {theirs} \
         for the same collective"
    )]
    SizeMismatch {
        rank: u64,
        peer: u64,
        group: Vec<u64>,
        mine: usize,
        theirs: usize,
    },
    #[error("{op} on rank {rank}: {message}")]
    Buffer {
        op: &'static str,
        rank: u64,
        message: String,
    },
    #[error("communicator state poisoned: another rank thread panicked")]
    Poisoned,
}

fn lost_text(lost: &[u64]) -> String {
    match lost {
        [] => "every member arrived, so one stopped part-way through".to_string(),
        [r] => format!("lost rank {r} (dead, or stuck outside the collective)"),
        rs => format!("lost ranks {rs:?} (dead, or stuck outside the collective)"),
    }
}

/// One rank's view of the communicator. Every member of `group` calls the same collective
/// with the same `group` (same order), in the same program order (SPMD); each passes its own
/// buffers. Results are identical, bit for bit, on every member.
pub trait Communicator: Send + Sync {
    /// This rank's global id (its device id in the mesh).
    fn rank(&self) -> u64;

    /// Reduces `buf` across the group; every member ends with the result.
    fn all_reduce(&self, group: &[u64], op: ReduceOp, buf: &mut [f32]) -> Result<(), CommError>;

    /// Reduces `input` (n equal chunks, n = group size) across the group; member i gets
    /// chunk i of the result in `output` (`input.len() == n * output.len()`).
    fn reduce_scatter(
        &self,
        group: &[u64],
        op: ReduceOp,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), CommError>;

    /// Concatenates every member's `input` in group order into `output`
    /// (`output.len() == n * input.len()`).
    fn all_gather(&self, group: &[u64], input: &[u8], output: &mut [u8]) -> Result<(), CommError>;

    /// Copies the buffer of member `root` (an index into `group`) to every member.
    fn broadcast(&self, group: &[u64], root: usize, buf: &mut [u8]) -> Result<(), CommError>;

    /// `input` and `output` are n equal chunks: chunk j of member i's input becomes chunk i
    /// of member j's output.
    fn all_to_all(&self, group: &[u64], input: &[u8], output: &mut [u8]) -> Result<(), CommError>;

    /// Sends `buf` to rank `peer` (buffered: returns once the data is handed over).
    fn send(&self, peer: u64, buf: &[u8]) -> Result<(), CommError>;

    /// Receives the next message from rank `peer` into `buf`; its size must match.
    fn recv(&self, peer: u64, buf: &mut [u8]) -> Result<(), CommError>;

    /// Returns once every member of `group` has called it.
    fn barrier(&self, group: &[u64]) -> Result<(), CommError>;
}

/// This rank's index in `group`, after checking the group names each rank once.
pub(crate) fn position(group: &[u64], rank: u64) -> Result<usize, CommError> {
    let mut sorted = group.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if group.is_empty() || sorted.len() != group.len() {
        return Err(CommError::BadGroup {
            group: group.to_vec(),
        });
    }
    group
        .iter()
        .position(|&r| r == rank)
        .ok_or_else(|| CommError::NotInGroup {
            rank,
            group: group.to_vec(),
        })
}

/// `[begin, end)` of chunk `k` when `len` items split into `n` nearly equal chunks.
pub(crate) fn chunk(len: usize, n: usize, k: usize) -> std::ops::Range<usize> {
    len * k / n..len * (k + 1) / n
}

/// Combines `acc` with `x` element-wise: `acc[i] = acc[i] op x[i]` (`Mean` sums; its
/// division happens once, on the reduced result).
pub(crate) fn combine(op: ReduceOp, acc: &mut [f32], x: &[f32]) {
    let f: fn(f32, f32) -> f32 = match op {
        ReduceOp::Sum | ReduceOp::Mean => |a, b| a + b,
        ReduceOp::Max => f32::max,
        ReduceOp::Min => f32::min,
        ReduceOp::Prod => |a, b| a * b,
    };
    for (a, &b) in acc.iter_mut().zip(x) {
        *a = f(*a, b);
    }
}
