//! Collective algorithms over ordered point-to-point messages. Ring reduce-scatter and
//! all-gather each move (n−1)/n of the buffer per rank, so a ring all-reduce (one then the
//! other) moves 2(n−1)/n. Each chunk is reduced once, by a fixed ring order, and then
//! copied: every member ends with the same bits.

use super::{chunk, combine, CommError};
use oar_ir::dist::ReduceOp;
use std::ops::Range;

/// One message: a part of a collective and the byte size of the sender's whole buffer, so a
/// receiver notices members that disagree on the size.
pub(crate) struct Msg {
    pub whole: usize,
    pub data: Vec<u8>,
}

/// Ordered delivery between ranks. `ctx` separates streams: a group's collectives use the
/// group, point-to-point transfers the empty slice. Messages from one sender to one receiver
/// in one context arrive in the order they were posted.
pub(crate) trait Transport {
    fn me(&self) -> u64;
    fn post(&self, ctx: &[u64], to: u64, msg: Msg) -> Result<(), CommError>;
    fn take(&self, ctx: &[u64], from: u64) -> Result<Msg, CommError>;
}

/// Takes the next message from `from` and checks it is `want` bytes of a `whole`-byte buffer.
pub(crate) fn take_checked<T: Transport + ?Sized>(
    t: &T,
    ctx: &[u64],
    from: u64,
    whole: usize,
    want: usize,
) -> Result<Vec<u8>, CommError> {
    let m = t.take(ctx, from)?;
    if m.whole != whole || m.data.len() != want {
        return Err(CommError::SizeMismatch {
            rank: t.me(),
            peer: from,
            group: ctx.to_vec(),
            mine: whole,
            theirs: m.whole,
        });
    }
    Ok(m.data)
}

fn f32s_of(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Ring reduce-scatter in place: afterwards chunk `me` of `buf` (chunks by [`chunk`]) holds
/// the reduction of every member's chunk `me`; other chunks hold partial results. At step s
/// member i sends chunk i−s−1 to i+1 and folds chunk i−s−2 from i−1 into its own, so chunk c
/// is reduced in the order c+1, c+2, …, c.
pub(crate) fn reduce_scatter_in_place<T: Transport + ?Sized>(
    t: &T,
    group: &[u64],
    me: usize,
    op: ReduceOp,
    buf: &mut [f32],
) -> Result<(), CommError> {
    let n = group.len();
    let (next, prev) = (group[(me + 1) % n], group[(me + n - 1) % n]);
    let whole = std::mem::size_of_val(buf);
    for s in 0..n.saturating_sub(1) {
        let send = chunk(buf.len(), n, (me + 2 * n - s - 1) % n);
        let recv = chunk(buf.len(), n, (me + 2 * n - s - 2) % n);
        let data = bytemuck::cast_slice(&buf[send]).to_vec();
        t.post(group, next, Msg { whole, data })?;
        let mut acc = f32s_of(&take_checked(t, group, prev, whole, recv.len() * 4)?);
        combine(op, &mut acc, &buf[recv.clone()]);
        buf[recv].copy_from_slice(&acc);
    }
    Ok(())
}

/// Ring all-gather in place: chunk `me` of `buf` (byte ranges `bounds(k)`) is this member's;
/// afterwards every chunk holds its owner's. At step s member i sends chunk i−s to i+1.
pub(crate) fn all_gather_in_place<T: Transport + ?Sized>(
    t: &T,
    group: &[u64],
    me: usize,
    buf: &mut [u8],
    bounds: impl Fn(usize) -> Range<usize>,
) -> Result<(), CommError> {
    let n = group.len();
    let (next, prev) = (group[(me + 1) % n], group[(me + n - 1) % n]);
    let whole = buf.len();
    for s in 0..n.saturating_sub(1) {
        let send = bounds((me + n - s) % n);
        let recv = bounds((me + 2 * n - s - 1) % n);
        let data = buf[send].to_vec();
        t.post(group, next, Msg { whole, data })?;
        let got = take_checked(t, group, prev, whole, recv.len())?;
        buf[recv].copy_from_slice(&got);
    }
    Ok(())
}

/// Ring all-reduce: reduce-scatter, the mean's division on the owned chunk, all-gather.
pub(crate) fn all_reduce<T: Transport + ?Sized>(
    t: &T,
    group: &[u64],
    me: usize,
    op: ReduceOp,
    buf: &mut [f32],
) -> Result<(), CommError> {
    let n = group.len();
    reduce_scatter_in_place(t, group, me, op, buf)?;
    if op == ReduceOp::Mean {
        let own = chunk(buf.len(), n, me);
        buf[own].iter_mut().for_each(|v| *v /= n as f32);
    }
    let len = buf.len();
    all_gather_in_place(t, group, me, bytemuck::cast_slice_mut(buf), |k| {
        let c = chunk(len, n, k);
        c.start * 4..c.end * 4
    })
}

/// All-to-all by direct exchange: each member sends chunk j to member j, which is already
/// the minimum of (n−1)/n of the buffer per rank.
pub(crate) fn all_to_all<T: Transport + ?Sized>(
    t: &T,
    group: &[u64],
    me: usize,
    input: &[u8],
    output: &mut [u8],
) -> Result<(), CommError> {
    let n = group.len();
    let l = input.len() / n;
    for (j, &peer) in group.iter().enumerate() {
        if j != me {
            let data = input[j * l..(j + 1) * l].to_vec();
            t.post(
                group,
                peer,
                Msg {
                    whole: input.len(),
                    data,
                },
            )?;
        }
    }
    output[me * l..(me + 1) * l].copy_from_slice(&input[me * l..(me + 1) * l]);
    for (j, &peer) in group.iter().enumerate() {
        if j != me {
            let got = take_checked(t, group, peer, input.len(), l)?;
            output[j * l..(j + 1) * l].copy_from_slice(&got);
        }
    }
    Ok(())
}

/// Broadcast by direct sends from the root: simple, and correct for the small groups the
/// in-process communicator serves.
pub(crate) fn broadcast<T: Transport + ?Sized>(
    t: &T,
    group: &[u64],
    me: usize,
    root: usize,
    buf: &mut [u8],
) -> Result<(), CommError> {
    let whole = buf.len();
    if me == root {
        for (j, &peer) in group.iter().enumerate() {
            if j != root {
                t.post(
                    group,
                    peer,
                    Msg {
                        whole,
                        data: buf.to_vec(),
                    },
                )?;
            }
        }
        return Ok(());
    }
    let got = take_checked(t, group, group[root], whole, whole)?;
    buf.copy_from_slice(&got);
    Ok(())
}

/// Barrier: an empty message to and from every other member.
pub(crate) fn barrier<T: Transport + ?Sized>(
    t: &T,
    group: &[u64],
    me: usize,
) -> Result<(), CommError> {
    for (j, &peer) in group.iter().enumerate() {
        if j != me {
            t.post(
                group,
                peer,
                Msg {
                    whole: 0,
                    data: Vec::new(),
                },
            )?;
        }
    }
    for (j, &peer) in group.iter().enumerate() {
        if j != me {
            take_checked(t, group, peer, 0, 0)?;
        }
    }
    Ok(())
}
