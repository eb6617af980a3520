//! The parameter server for sparse embedding tables (HeterPS): tables sharded by key hash
//! across server ranks, held in memory; workers pull only the rows a batch touches and push
//! only their gradients; the servers apply a sparse optimizer (SGD, Adagrad, Adam) per row;
//! rows seen fewer than a threshold of times can be evicted; tables save to and load from
//! the sharded checkpoint format (`io::checkpoint`). Dense parameters stay on the workers,
//! data-parallel (an all-reduce of their gradients among the workers).
//!
//! Roles come from rank numbers: ranks `0..servers` serve, the rest are workers. Everything
//! runs over a [`Communicator`](crate::comm::Communicator) (MPI under `mpirun`, threads in
//! tests): point-to-point requests and replies ([`wire`]) and the workers' all-reduce.
//!
//! Servers take requests in rounds: one from every worker, in worker order (so a run is
//! deterministic), every request answered. Modes ([`Mode`]):
//! - `Sync`: a step is a pull round then a push round; a server sums the round's pushes per
//!   key and applies the optimizer once, so the update equals single-process training on the
//!   workers' combined batch.
//! - `Async`: a worker sends its previous step's push with its next pull in one request and
//!   a server applies every push as it arrives: a pull at step t sees every push up to step
//!   t−2 and the step-(t−1) pushes of itself and the workers before it in the round —
//!   staleness at most one step.
//!
//! See docs/heterps.md.

pub mod optim;
pub mod server;
pub mod single;
pub mod table;
pub mod wire;
pub mod worker;

pub use optim::SparseOptim;
pub use server::{run_server, ServerConfig, ServerReport};
pub use single::{lookup_inputs, train_single, SingleState};
pub use table::{RowInit, Table, TableSpec};
pub use worker::{CtrData, PsClient, StepGraph, Worker, WorkerConfig};

use crate::comm::CommError;

/// How pushes reach the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
}

impl std::str::FromStr for Mode {
    type Err = PsError;
    fn from_str(s: &str) -> Result<Mode, PsError> {
        match s {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            _ => Err(PsError::Config(format!(
                "unknown parameter-server mode `{s}`; expected sync or async"
            ))),
        }
    }
}

/// Why the parameter server failed.
#[derive(Debug, thiserror::Error)]
pub enum PsError {
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("parameter server: malformed message from rank {rank}: {message}")]
    Wire { rank: u64, message: String },
    #[error("parameter server: {0}")]
    Config(String),
    #[error("parameter server: running the step graph: {0}")]
    Step(String),
    #[error("parameter server: checkpoint: {0}")]
    Checkpoint(String),
}

/// The server rank that owns `key` among `servers` (a mix of the key, so consecutive ids
/// spread evenly).
pub fn server_of(key: u64, servers: u64) -> u64 {
    crate::data::criteo::mix64(key ^ 0x5053_5F53_4841_5244) % servers.max(1)
}

/// The server ranks (`0..servers`) and worker ranks (`servers..world`).
pub fn roles(servers: u64, world: u64) -> Result<(Vec<u64>, Vec<u64>), PsError> {
    if servers == 0 || servers >= world {
        return Err(PsError::Config(format!(
            "{servers} server(s) among {world} rank(s): need at least one server and one worker \
             (run more ranks, e.g. mpirun -n {})",
            servers + 1
        )));
    }
    Ok(((0..servers).collect(), (servers..world).collect()))
}
