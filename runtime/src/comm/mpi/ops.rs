//! The `Communicator` methods of `MpiComm`: each checks its buffers, copies them into owned
//! vectors, and runs the matching non-blocking MPI collective through `MpiComm::collective`.

use super::{count, mpi_op, null_request, MpiComm, PendingSend};
use crate::comm::{CommError, Communicator};
use mpi::ffi;
use oar_ir::dist::ReduceOp;
use std::os::raw::{c_int, c_void};
use std::time::Instant;

impl Communicator for MpiComm {
    fn rank(&self) -> u64 {
        self.rank
    }

    fn all_reduce(&self, group: &[u64], op: ReduceOp, buf: &mut [f32]) -> Result<(), CommError> {
        let input = buf.to_vec();
        self.reduce("all_reduce", ffi::MPI_Iallreduce, group, op, input, buf)
    }

    fn reduce_scatter(
        &self,
        group: &[u64],
        op: ReduceOp,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), CommError> {
        if input.len() != group.len() * output.len() {
            return Err(self.buffer_error(
                "reduce_scatter",
                format!(
                    "input of {} elements does not split into {} outputs of {}",
                    input.len(),
                    group.len(),
                    output.len()
                ),
            ));
        }
        self.reduce(
            "reduce_scatter",
            ffi::MPI_Ireduce_scatter_block,
            group,
            op,
            input.to_vec(),
            output,
        )
    }

    fn all_gather(&self, group: &[u64], input: &[u8], output: &mut [u8]) -> Result<(), CommError> {
        if output.len() != group.len() * input.len() {
            return Err(self.buffer_error(
                "all_gather",
                format!(
                    "output of {} bytes cannot hold {} inputs of {}",
                    output.len(),
                    group.len(),
                    input.len()
                ),
            ));
        }
        let n = count("all_gather", self.rank, input.len())?;
        self.exchange("all_gather", ffi::MPI_Iallgather, group, input, output, n)
    }

    fn broadcast(&self, group: &[u64], root: usize, buf: &mut [u8]) -> Result<(), CommError> {
        if root >= group.len() {
            return Err(self.buffer_error(
                "broadcast",
                format!("root {root} is outside a group of {}", group.len()),
            ));
        }
        let n = count("broadcast", self.rank, buf.len())?;
        let out = self.collective(
            "broadcast",
            group,
            buf.to_vec(),
            // SAFETY: the vector holds `n` bytes; the group communicator's rank `root` is
            // member `root` of `group` (it was created in group order).
            |comm, data, req| unsafe {
                ffi::MPI_Ibcast(
                    data.as_mut_ptr() as *mut c_void,
                    n,
                    ffi::RSMPI_UINT8_T,
                    root as c_int,
                    comm,
                    req,
                )
            },
        )?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn all_to_all(&self, group: &[u64], input: &[u8], output: &mut [u8]) -> Result<(), CommError> {
        if input.len() != output.len() || !input.len().is_multiple_of(group.len().max(1)) {
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
        let n = count("all_to_all", self.rank, input.len() / group.len().max(1))?;
        self.exchange("all_to_all", ffi::MPI_Ialltoall, group, input, output, n)
    }

    fn send(&self, peer: u64, buf: &[u8]) -> Result<(), CommError> {
        self.check_peer(peer)?;
        let n = count("send", self.rank, buf.len())?;
        let mut st = self.lock()?;
        self.reap_sends(&mut st)?;
        let data = buf.to_vec();
        let mut req = null_request();
        // SAFETY: `data` moves into the pending list below and lives until the send completes.
        let code = unsafe {
            ffi::MPI_Isend(
                data.as_ptr() as *const c_void,
                n,
                ffi::RSMPI_UINT8_T,
                peer as c_int,
                0,
                st.p2p,
                &mut req,
            )
        };
        super::check("send", self.rank, code)?;
        st.sends.push(PendingSend { req, _buf: data });
        Ok(())
    }

    fn recv(&self, peer: u64, buf: &mut [u8]) -> Result<(), CommError> {
        self.check_peer(peer)?;
        let mut st = self.lock()?;
        self.reap_sends(&mut st)?;
        let deadline = Instant::now() + self.timeout;
        let pair = vec![peer, self.rank];
        // Probe first so a message of the wrong size is a typed error, not MPI truncation.
        let theirs = loop {
            let mut flag: c_int = 0;
            // SAFETY: MPI_Status is plain integers; zeroed is a valid initial value.
            let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
            let code = unsafe { ffi::MPI_Iprobe(peer as c_int, 0, st.p2p, &mut flag, &mut status) };
            super::check("recv", self.rank, code)?;
            if flag != 0 {
                let mut got: c_int = 0;
                let code = unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut got) };
                super::check("recv", self.rank, code)?;
                break got as usize;
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(&mut st, "recv", &pair, vec![peer]));
            }
            // Progress pending sends while waiting (a peer may be waiting on ours).
            self.reap_sends(&mut st)?;
            std::thread::sleep(std::time::Duration::from_micros(50));
        };
        if theirs != buf.len() {
            return Err(CommError::SizeMismatch {
                rank: self.rank,
                peer,
                group: pair,
                mine: buf.len(),
                theirs,
            });
        }
        let mut data = vec![0u8; buf.len()];
        let mut req = null_request();
        // SAFETY: `data` holds the probed message's size and outlives the request (or leaks).
        let code = unsafe {
            ffi::MPI_Irecv(
                data.as_mut_ptr() as *mut c_void,
                theirs as c_int,
                ffi::RSMPI_UINT8_T,
                peer as c_int,
                0,
                st.p2p,
                &mut req,
            )
        };
        super::check("recv", self.rank, code)?;
        let mut reqs = [req];
        if self.poll("recv", &mut reqs, deadline)?.is_err() {
            std::mem::forget(data);
            return Err(self.timed_out(&mut st, "recv", &pair, vec![peer]));
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn barrier(&self, group: &[u64]) -> Result<(), CommError> {
        // The arrival handshake alone is a barrier: it completes once every member sent its
        // token, i.e. every member has called this barrier.
        let mut st = self.lock()?;
        self.reap_sends(&mut st)?;
        self.arrive(&mut st, "barrier", group).map(|_| ())
    }
}

/// `MPI_Iallreduce` and `MPI_Ireduce_scatter_block` share this signature: (send, receive,
/// count, type, op, communicator, request), the count being the receive buffer's length.
type StartReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    c_int,
    ffi::MPI_Datatype,
    ffi::MPI_Op,
    ffi::MPI_Comm,
    *mut ffi::MPI_Request,
) -> c_int;

/// `MPI_Iallgather` and `MPI_Ialltoall` share this signature: (send, send count, send type,
/// receive, receive count, receive type, communicator, request), counts per member.
type StartExchange = unsafe extern "C" fn(
    *const c_void,
    c_int,
    ffi::MPI_Datatype,
    *mut c_void,
    c_int,
    ffi::MPI_Datatype,
    ffi::MPI_Comm,
    *mut ffi::MPI_Request,
) -> c_int;

impl MpiComm {
    /// A byte exchange of `n` bytes per member (checked by the caller) from a copy of `input`
    /// into `output`.
    fn exchange(
        &self,
        name: &'static str,
        start: StartExchange,
        group: &[u64],
        input: &[u8],
        output: &mut [u8],
        n: c_int,
    ) -> Result<(), CommError> {
        let (_, out) = self.collective(
            name,
            group,
            (input.to_vec(), vec![0u8; output.len()]),
            // SAFETY: the caller checked that both vectors hold the blocks of `n` bytes the
            // collective reads and writes; both live until completion.
            |comm, (send, recv), req| unsafe {
                start(
                    send.as_ptr() as *const c_void,
                    n,
                    ffi::RSMPI_UINT8_T,
                    recv.as_mut_ptr() as *mut c_void,
                    n,
                    ffi::RSMPI_UINT8_T,
                    comm,
                    req,
                )
            },
        )?;
        output.copy_from_slice(&out);
        Ok(())
    }

    /// A reduction of the owned `input` into `output` (all of it, or this member's block),
    /// `Mean` dividing the sum by the group size.
    fn reduce(
        &self,
        name: &'static str,
        start: StartReduce,
        group: &[u64],
        op: ReduceOp,
        input: Vec<f32>,
        output: &mut [f32],
    ) -> Result<(), CommError> {
        let n = count(name, self.rank, output.len())?;
        let (_, out) = self.collective(
            name,
            group,
            (input, vec![0f32; output.len()]),
            // SAFETY: `recv` holds `n` floats, `send` what the collective reads (n, or one
            // block of n per member, checked by the caller); both live until completion.
            |comm, (send, recv), req| unsafe {
                start(
                    send.as_ptr() as *const c_void,
                    recv.as_mut_ptr() as *mut c_void,
                    n,
                    ffi::RSMPI_FLOAT,
                    mpi_op(op),
                    comm,
                    req,
                )
            },
        )?;
        output.copy_from_slice(&out);
        if op == ReduceOp::Mean {
            let k = group.len() as f32;
            output.iter_mut().for_each(|v| *v /= k);
        }
        Ok(())
    }

    fn check_peer(&self, peer: u64) -> Result<(), CommError> {
        if peer >= self.size {
            return Err(CommError::NotInGroup {
                rank: peer,
                group: (0..self.size).collect(),
            });
        }
        Ok(())
    }
}
