//! `MpiComm`: the `Communicator` over MPI (OpenMPI through rsmpi's raw bindings), one process
//! a rank, ranks numbered by `MPI_COMM_WORLD`.
//!
//! Every operation is non-blocking underneath and polled against a deadline (`timeout`,
//! `OAR_COMM_TIMEOUT` seconds, default 60), so a rank that dies or stops calling collectives
//! turns into a `CommError::CollectiveTimeout` on the others instead of a hang. To say *which*
//! member is missing, each collective starts with an arrival handshake: every member sends a
//! 16-byte (group, sequence) token to every other member, point to point; the members whose
//! token never came are the lost ones (and a token with another sequence number means that
//! member is in a different collective: the program diverged). For the dp group sizes this
//! runs at (2–8), that is a few microseconds a collective.
//!
//! Buffers handed to MPI are owned copies: MPI cannot cancel a collective, so on a timeout the
//! request's buffers are leaked rather than freed under it, and the caller's memory is never
//! written after the call returns. After a timeout the communicator is poisoned; `abort`
//! ends the whole job (use it in preference to returning normally, which would finalize MPI
//! with collectives still pending).

use super::{position, CommError};
use mpi::ffi;
use oar_ir::dist::ReduceOp;
use std::collections::HashMap;
use std::os::raw::{c_int, c_void};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Communicators for one group: the group's own (collectives, rank = index in the group).
struct GroupComm {
    comm: ffi::MPI_Comm,
    /// Collectives issued on this group so far; members agree on it (SPMD).
    seq: u64,
}

/// A send that returned to the caller before MPI finished with its (owned) buffer.
struct PendingSend {
    req: ffi::MPI_Request,
    _buf: Vec<u8>,
}

struct State {
    /// Duplicates of `MPI_COMM_WORLD`: one for handshake tokens, one for user send/recv, so
    /// neither can match the other's messages.
    tokens: ffi::MPI_Comm,
    p2p: ffi::MPI_Comm,
    groups: HashMap<Vec<u64>, GroupComm>,
    sends: Vec<PendingSend>,
    /// Set once an operation timed out: requests are outstanding and MPI must not finalize.
    poisoned: bool,
}

// SAFETY: the MPI handles are plain handles into the MPI library, which was initialised with
// at least `MPI_THREAD_SERIALIZED`; every use goes through the `Mutex` around `State`, so no
// two threads call MPI at once.
unsafe impl Send for State {}

/// The MPI communicator of this process. Create one per process (`init`), keep it for the
/// run; dropping it finalizes MPI if this communicator initialised it.
pub struct MpiComm {
    rank: u64,
    size: u64,
    timeout: Duration,
    state: Mutex<State>,
    finalize: bool,
}

/// The environment variable that sets the collective timeout in seconds.
pub const TIMEOUT_ENV: &str = "OAR_COMM_TIMEOUT";

/// True when this process was started by an MPI launcher (OpenMPI's `mpirun`, or a PMI one
/// such as Slurm's `srun`).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

fn check(op: &'static str, rank: u64, code: c_int) -> Result<(), CommError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CommError::Mpi { op, rank, code })
    }
}

fn count(op: &'static str, rank: u64, len: usize) -> Result<c_int, CommError> {
    c_int::try_from(len).map_err(|_| CommError::Buffer {
        op,
        rank,
        message: format!("{len} elements exceed MPI's int count"),
    })
}

/// A stable tag for a group (same on every member, unlike the order groups were first used).
fn group_tag(group: &[u64]) -> c_int {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &r in group {
        h = (h ^ r).wrapping_mul(0x0100_0000_01b3);
    }
    // MPI guarantees tags up to 32767.
    1 + (h % 32000) as c_int
}

fn group_hash(group: &[u64]) -> u64 {
    group
        .iter()
        .fold(17u64, |h, &r| h.wrapping_mul(1_000_003).wrapping_add(r))
}

impl MpiComm {
    /// Initialises MPI (unless already initialised) with the timeout from `OAR_COMM_TIMEOUT`
    /// (seconds, default 60).
    pub fn init() -> Result<MpiComm, CommError> {
        let timeout = match std::env::var(TIMEOUT_ENV) {
            Ok(s) => {
                let secs: f64 = s.trim().parse().map_err(|_| CommError::Buffer {
                    op: "init",
                    rank: 0,
                    message: format!("{TIMEOUT_ENV}={s:?} is not a number of seconds"),
                })?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(CommError::Buffer {
                        op: "init",
                        rank: 0,
                        message: format!("{TIMEOUT_ENV}={s:?} must be positive"),
                    });
                }
                Duration::from_secs_f64(secs)
            }
            Err(_) => Duration::from_secs(60),
        };
        Self::init_with_timeout(timeout)
    }

    /// As [`MpiComm::init`] with an explicit collective timeout.
    pub fn init_with_timeout(timeout: Duration) -> Result<MpiComm, CommError> {
        let mut finalize = false;
        // SAFETY: plain MPI calls on out-parameters we own; MPI_COMM_WORLD is valid after
        // initialisation.
        unsafe {
            let mut inited: c_int = 0;
            check("init", 0, ffi::MPI_Initialized(&mut inited))?;
            if inited == 0 {
                let mut provided: c_int = 0;
                check(
                    "init",
                    0,
                    ffi::MPI_Init_thread(
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        ffi::RSMPI_THREAD_SERIALIZED,
                        &mut provided,
                    ),
                )?;
                finalize = true;
            }
            let (mut rank, mut size): (c_int, c_int) = (0, 0);
            check(
                "init",
                0,
                ffi::MPI_Comm_rank(ffi::RSMPI_COMM_WORLD, &mut rank),
            )?;
            check(
                "init",
                0,
                ffi::MPI_Comm_size(ffi::RSMPI_COMM_WORLD, &mut size),
            )?;
            let rank = rank as u64;
            let mut tokens = ffi::RSMPI_COMM_NULL;
            let mut p2p = ffi::RSMPI_COMM_NULL;
            check(
                "init",
                rank,
                ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, &mut tokens),
            )?;
            check(
                "init",
                rank,
                ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, &mut p2p),
            )?;
            Ok(MpiComm {
                rank,
                size: size as u64,
                timeout,
                state: Mutex::new(State {
                    tokens,
                    p2p,
                    groups: HashMap::new(),
                    sends: Vec::new(),
                    poisoned: false,
                }),
                finalize,
            })
        }
    }

    /// Number of ranks in `MPI_COMM_WORLD`.
    pub fn world_size(&self) -> u64 {
        self.size
    }

    /// The collective timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`): the way out after a
    /// communication error, when other ranks may be blocked waiting for this one.
    pub fn abort(&self, code: i32) -> ! {
        // SAFETY: MPI_Abort on the world communicator is valid at any point after init.
        unsafe {
            ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
        }
        std::process::exit(code)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, CommError> {
        let st = self.state.lock().map_err(|_| CommError::Poisoned)?;
        if st.poisoned {
            return Err(CommError::Poisoned);
        }
        Ok(st)
    }

    /// Polls `reqs` until all complete or the deadline passes; on expiry returns the
    /// indices still incomplete. Completed requests become `MPI_REQUEST_NULL`.
    fn poll(
        &self,
        op: &'static str,
        reqs: &mut [ffi::MPI_Request],
        deadline: Instant,
    ) -> Result<Result<(), Vec<usize>>, CommError> {
        let started = Instant::now();
        loop {
            let mut open = Vec::new();
            for (i, r) in reqs.iter_mut().enumerate() {
                // SAFETY: each request came from an MPI_I* call and its buffers are alive.
                unsafe {
                    if *r == ffi::RSMPI_REQUEST_NULL {
                        continue;
                    }
                    let mut flag: c_int = 0;
                    check(
                        op,
                        self.rank,
                        ffi::MPI_Test(r, &mut flag, ffi::RSMPI_STATUS_IGNORE),
                    )?;
                    if flag == 0 {
                        open.push(i);
                    }
                }
            }
            if open.is_empty() {
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                return Ok(Err(open));
            }
            // OpenMPI's non-blocking collectives advance only inside MPI calls, so keep
            // testing (yielding the core between tests) for the first second; past that a
            // peer is late, not busy, and sleeping spares an oversubscribed core.
            if started.elapsed() < Duration::from_secs(1) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn timed_out(
        &self,
        st: &mut State,
        op: &'static str,
        group: &[u64],
        lost: Vec<u64>,
    ) -> CommError {
        st.poisoned = true;
        CommError::CollectiveTimeout {
            rank: self.rank,
            op,
            group: group.to_vec(),
            lost,
            waited: self.timeout,
        }
    }

    /// The arrival handshake for the next collective on `group`; returns the deadline the
    /// collective itself must meet. Leaves the group's communicator created.
    fn arrive(
        &self,
        st: &mut State,
        op: &'static str,
        group: &[u64],
    ) -> Result<(ffi::MPI_Comm, Instant), CommError> {
        let me = position(group, self.rank)?;
        if let Some(&bad) = group.iter().find(|&&r| r >= self.size) {
            return Err(CommError::NotInGroup {
                rank: bad,
                group: (0..self.size).collect(),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let seq = st.groups.get(group).map_or(0, |g| g.seq);
        let tag = group_tag(group);
        let token: Vec<u8> = [group_hash(group), seq]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let peers: Vec<u64> = group.iter().copied().filter(|&r| r != self.rank).collect();
        let mut inbox = vec![0u8; 16 * peers.len()];
        let mut reqs = Vec::with_capacity(2 * peers.len());
        // SAFETY: `token` and `inbox` outlive the requests (or are leaked on timeout below).
        unsafe {
            for (k, &p) in peers.iter().enumerate() {
                let mut r = ffi::RSMPI_REQUEST_NULL;
                let slot = inbox.as_mut_ptr().add(16 * k) as *mut c_void;
                let code = ffi::MPI_Irecv(
                    slot,
                    16,
                    ffi::RSMPI_UINT8_T,
                    p as c_int,
                    tag,
                    st.tokens,
                    &mut r,
                );
                check(op, self.rank, code)?;
                reqs.push(r);
            }
            for &p in &peers {
                let mut r = ffi::RSMPI_REQUEST_NULL;
                let code = ffi::MPI_Isend(
                    token.as_ptr() as *const c_void,
                    16,
                    ffi::RSMPI_UINT8_T,
                    p as c_int,
                    tag,
                    st.tokens,
                    &mut r,
                );
                check(op, self.rank, code)?;
                reqs.push(r);
            }
        }
        if let Err(open) = self.poll(op, &mut reqs, deadline)? {
            // A missing receive names its peer; a send alone open means the peer took no
            // token from us, so it is lost too.
            let mut lost: Vec<u64> = open.iter().map(|&i| peers[i % peers.len()]).collect();
            lost.sort_unstable();
            lost.dedup();
            std::mem::forget(token);
            std::mem::forget(inbox);
            return Err(self.timed_out(st, op, group, lost));
        }
        for (k, &p) in peers.iter().enumerate() {
            let got = &inbox[16 * k..16 * k + 16];
            if got != token.as_slice() {
                let their_seq = u64::from_le_bytes(got[8..].try_into().unwrap_or([0; 8]));
                return Err(CommError::Diverged {
                    rank: self.rank,
                    peer: p,
                    op,
                    group: group.to_vec(),
                    mine: seq,
                    theirs: their_seq,
                });
            }
        }
        let comm = self.group_comm(st, group, me)?;
        Ok((comm, deadline))
    }

    /// The group's communicator, created on first use (collective over the group only:
    /// `MPI_Comm_create_group`), and its sequence number advanced.
    fn group_comm(
        &self,
        st: &mut State,
        group: &[u64],
        _me: usize,
    ) -> Result<ffi::MPI_Comm, CommError> {
        if let Some(g) = st.groups.get_mut(group) {
            g.seq += 1;
            return Ok(g.comm);
        }
        let ranks: Vec<c_int> = group.iter().map(|&r| r as c_int).collect();
        // SAFETY: handles are created and freed here; `ranks` outlives the calls.
        let comm = unsafe {
            let mut world_group = std::mem::zeroed();
            check(
                "group",
                self.rank,
                ffi::MPI_Comm_group(ffi::RSMPI_COMM_WORLD, &mut world_group),
            )?;
            let mut sub = std::mem::zeroed();
            check(
                "group",
                self.rank,
                ffi::MPI_Group_incl(world_group, ranks.len() as c_int, ranks.as_ptr(), &mut sub),
            )?;
            let mut comm = ffi::RSMPI_COMM_NULL;
            check(
                "group",
                self.rank,
                ffi::MPI_Comm_create_group(ffi::RSMPI_COMM_WORLD, sub, group_tag(group), &mut comm),
            )?;
            ffi::MPI_Group_free(&mut sub);
            ffi::MPI_Group_free(&mut world_group);
            comm
        };
        st.groups.insert(group.to_vec(), GroupComm { comm, seq: 1 });
        Ok(comm)
    }

    /// Runs one collective: handshake, then `start` (which issues the MPI_I* call on the
    /// group communicator with the owned buffers it captured), then polls to completion.
    /// `keep` holds those buffers so a timeout can leak them.
    fn collective<K>(
        &self,
        op: &'static str,
        group: &[u64],
        mut keep: K,
        start: impl FnOnce(ffi::MPI_Comm, &mut K, *mut ffi::MPI_Request) -> c_int,
    ) -> Result<K, CommError> {
        let mut st = self.lock()?;
        self.reap_sends(&mut st)?;
        let (comm, deadline) = self.arrive(&mut st, op, group)?;
        let mut req = null_request();
        check(op, self.rank, start(comm, &mut keep, &mut req))?;
        let mut reqs = [req];
        if self.poll(op, &mut reqs, deadline)?.is_err() {
            std::mem::forget(keep);
            // Everyone arrived, so no member is known to be lost: one stopped mid-way.
            return Err(self.timed_out(&mut st, op, group, Vec::new()));
        }
        Ok(keep)
    }

    /// Frees finished buffered sends.
    fn reap_sends(&self, st: &mut State) -> Result<(), CommError> {
        let mut kept = Vec::new();
        for mut s in std::mem::take(&mut st.sends) {
            let mut flag: c_int = 0;
            // SAFETY: the request is live and its buffer is owned by `s`.
            let code = unsafe { ffi::MPI_Test(&mut s.req, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
            check("send", self.rank, code)?;
            if flag == 0 {
                kept.push(s);
            }
        }
        st.sends = kept;
        Ok(())
    }

    fn buffer_error(&self, op: &'static str, message: String) -> CommError {
        CommError::Buffer {
            op,
            rank: self.rank,
            message,
        }
    }
}

fn null_request() -> ffi::MPI_Request {
    // SAFETY: reading a constant handle rsmpi exports.
    unsafe { ffi::RSMPI_REQUEST_NULL }
}

fn mpi_op(op: ReduceOp) -> ffi::MPI_Op {
    // SAFETY: reading the predefined operation handles rsmpi exports.
    unsafe {
        match op {
            ReduceOp::Sum | ReduceOp::Mean => ffi::RSMPI_SUM,
            ReduceOp::Max => ffi::RSMPI_MAX,
            ReduceOp::Min => ffi::RSMPI_MIN,
            ReduceOp::Prod => ffi::RSMPI_PROD,
        }
    }
}

mod ops;

impl Drop for MpiComm {
    fn drop(&mut self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.poisoned || !self.finalize {
            return;
        }
        let deadline = Instant::now() + self.timeout;
        let mut reqs: Vec<_> = st.sends.iter().map(|s| s.req).collect();
        if !matches!(self.poll("send", &mut reqs, deadline), Ok(Ok(()))) {
            // A peer never took its message: finalizing would block on it.
            return;
        }
        st.sends.clear();
        // SAFETY: every request is complete; the handles were created by this communicator.
        unsafe {
            for g in st.groups.values_mut() {
                ffi::MPI_Comm_free(&mut g.comm);
            }
            ffi::MPI_Comm_free(&mut st.tokens);
            ffi::MPI_Comm_free(&mut st.p2p);
            ffi::MPI_Finalize();
        }
    }
}
