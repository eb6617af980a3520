//! Pipeline-parallel schedules: per pipeline rank, the ordered list of what it does in one
//! training step — receive an activation, run a micro-batch's forward of one model chunk,
//! send its output; receive an output gradient, run the backward, send the input gradient.
//!
//! The model is cut into `pp · chunks` *virtual stages* in layer order; rank `r` holds
//! virtual stages `r, r + pp, r + 2·pp, …` (its chunks 0, 1, …: Megatron's interleaving),
//! so virtual stage `vs` lives on rank `vs % pp` as chunk `vs / pp`.
//!
//! - [`Schedule::GPipe`]: every forward, then every backward (m activations in flight);
//! - [`Schedule::OneFOneB`]: `pp − 1 − r` warm-up forwards, then one forward and one
//!   backward in turn, then the remaining backwards (at most `pp − r` in flight);
//! - [`Schedule::Interleaved`]: 1F1B over `chunks` virtual stages per rank in Megatron's
//!   order (micro-batches in groups of `pp`, each group through chunk 0, 1, … forward and
//!   the last chunk first backward), warm-up `2·(pp − 1 − r) + (chunks − 1)·pp`.
//!
//! Sends are buffered (the sender goes on); a receive waits for its message. [`simulate`]
//! runs the lists against each other that way and reports a deadlock or a message nobody
//! receives, which the tests use to check every schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Which order a rank runs its micro-batches in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    GPipe,
    OneFOneB,
    Interleaved,
}

/// `--schedule` names.
pub const SCHEDULE_NAMES: &str = "gpipe, 1f1b, interleaved";

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Schedule, String> {
        match s {
            "gpipe" => Ok(Schedule::GPipe),
            "1f1b" => Ok(Schedule::OneFOneB),
            "interleaved" => Ok(Schedule::Interleaved),
            _ => Err(format!("unknown schedule `{s}`; known: {SCHEDULE_NAMES}")),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Schedule::GPipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
            Schedule::Interleaved => "interleaved",
        })
    }
}

/// What travels between ranks: a forward activation or the gradient of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Activation,
    Gradient,
}

/// One message's identity: its kind, micro-batch and the virtual stage that receives it.
/// The executor writes it in each message's header and checks it on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub kind: Kind,
    pub micro_batch: usize,
    pub to_stage: usize,
}

/// One action of a rank. `chunk` is the rank's local model chunk (virtual stage
/// `chunk · pp + rank`); `peer` a pipeline rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Recv { id: MessageId, peer: usize },
    Forward { micro_batch: usize, chunk: usize },
    Backward { micro_batch: usize, chunk: usize },
    Send { id: MessageId, peer: usize },
}

/// Why a schedule cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("a pipeline needs at least one stage, micro-batch and chunk (pp {pp}, micro-batches {m}, chunks {chunks})")]
    Empty { pp: usize, m: usize, chunks: usize },
    #[error("--chunks {chunks} needs --pp-schedule interleaved")]
    ChunksWithout { chunks: usize },
    #[error("the interleaved schedule runs micro-batches in groups of pp: {m} micro-batches do not divide by pp {pp}")]
    Groups { m: usize, pp: usize },
}

/// The action lists of every pipeline rank (index = rank) for `m` micro-batches.
pub fn schedule(
    kind: Schedule,
    pp: usize,
    m: usize,
    chunks: usize,
) -> Result<Vec<Vec<Action>>, ScheduleError> {
    if pp == 0 || m == 0 || chunks == 0 {
        return Err(ScheduleError::Empty { pp, m, chunks });
    }
    if chunks > 1 && kind != Schedule::Interleaved {
        return Err(ScheduleError::ChunksWithout { chunks });
    }
    if kind == Schedule::Interleaved && !m.is_multiple_of(pp) {
        return Err(ScheduleError::Groups { m, pp });
    }
    Ok((0..pp)
        .map(|r| {
            let order = compute_order(kind, pp, m, chunks, r);
            with_messages(&order, pp, chunks, r)
        })
        .collect())
}

/// (is_forward, micro-batch, chunk) in the order rank `r` computes them.
fn compute_order(
    kind: Schedule,
    pp: usize,
    m: usize,
    chunks: usize,
    r: usize,
) -> Vec<(bool, usize, usize)> {
    let total = m * chunks;
    // The k-th forward (backward) of the rank: Megatron's micro-batch groups of pp.
    let nth = |k: usize, forward: bool| {
        let in_group = k % (pp * chunks);
        let chunk = in_group / pp;
        let chunk = if forward { chunk } else { chunks - 1 - chunk };
        let mb = (k / (pp * chunks)) * pp + k % pp;
        (forward, mb, chunk)
    };
    let warmup = match kind {
        Schedule::GPipe => total,
        Schedule::OneFOneB => pp - 1 - r,
        Schedule::Interleaved if chunks == 1 => pp - 1 - r,
        Schedule::Interleaved => 2 * (pp - 1 - r) + (chunks - 1) * pp,
    }
    .min(total);
    let (fwd, bwd): (Vec<_>, Vec<_>) = match kind {
        // GPipe and plain 1F1B keep micro-batch order on their one chunk.
        Schedule::GPipe | Schedule::OneFOneB => (
            (0..total).map(|k| (true, k, 0)).collect(),
            (0..total).map(|k| (false, k, 0)).collect(),
        ),
        Schedule::Interleaved => (
            (0..total).map(|k| nth(k, true)).collect(),
            (0..total).map(|k| nth(k, false)).collect(),
        ),
    };
    let mut out = Vec::with_capacity(2 * total);
    out.extend_from_slice(&fwd[..warmup]);
    for i in 0..total - warmup {
        out.push(fwd[warmup + i]);
        out.push(bwd[i]);
    }
    out.extend_from_slice(&bwd[total - warmup..]);
    out
}

/// The compute order with each receive before and each send after its computation.
fn with_messages(
    order: &[(bool, usize, usize)],
    pp: usize,
    chunks: usize,
    r: usize,
) -> Vec<Action> {
    let last = pp * chunks - 1;
    let rank_of = |vs: usize| vs % pp;
    let mut out = Vec::new();
    for &(forward, mb, chunk) in order {
        let vs = chunk * pp + r;
        let id = |kind, to_stage| MessageId {
            kind,
            micro_batch: mb,
            to_stage,
        };
        if forward {
            if vs > 0 {
                let peer = rank_of(vs - 1);
                out.push(Action::Recv {
                    id: id(Kind::Activation, vs),
                    peer,
                });
            }
            out.push(Action::Forward {
                micro_batch: mb,
                chunk,
            });
            if vs < last {
                let peer = rank_of(vs + 1);
                out.push(Action::Send {
                    id: id(Kind::Activation, vs + 1),
                    peer,
                });
            }
        } else {
            if vs < last {
                let peer = rank_of(vs + 1);
                out.push(Action::Recv {
                    id: id(Kind::Gradient, vs),
                    peer,
                });
            }
            out.push(Action::Backward {
                micro_batch: mb,
                chunk,
            });
            if vs > 0 {
                let peer = rank_of(vs - 1);
                out.push(Action::Send {
                    id: id(Kind::Gradient, vs - 1),
                    peer,
                });
            }
        }
    }
    out
}

/// What [`simulate`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("deadlock: every unfinished rank waits ({0})")]
    Deadlock(String),
    #[error("rank {rank}: {what}")]
    Order { rank: usize, what: String },
    #[error("messages sent but never received: {0}")]
    Unreceived(String),
}

/// Runs the ranks' lists against each other with buffered sends and receives that wait for
/// their message (matched by [`MessageId`] and sender, as the executor's headers do); also
/// checks each rank runs a micro-batch's forward of a chunk before its backward, once each.
/// Returns each rank's peak of activations in flight (forwards whose backward has not run).
pub fn simulate(lists: &[Vec<Action>]) -> Result<Vec<usize>, SimError> {
    let n = lists.len();
    let mut pc = vec![0usize; n];
    // (from, to, id) in flight.
    let mut wire: BTreeSet<(usize, usize, MessageId)> = BTreeSet::new();
    let mut live: Vec<BTreeSet<(usize, usize)>> = vec![BTreeSet::new(); n];
    let mut done: Vec<BTreeMap<(usize, usize), u8>> = vec![BTreeMap::new(); n];
    let mut peak = vec![0usize; n];
    loop {
        let mut moved = false;
        for r in 0..n {
            while let Some(a) = lists[r].get(pc[r]) {
                let err = |what: String| SimError::Order { rank: r, what };
                match *a {
                    Action::Recv { id, peer } => {
                        if !wire.remove(&(peer, r, id)) {
                            break;
                        }
                    }
                    Action::Send { id, peer } => {
                        if !wire.insert((r, peer, id)) {
                            return Err(err(format!("sends {id:?} twice")));
                        }
                    }
                    Action::Forward { micro_batch, chunk } => {
                        let key = (micro_batch, chunk);
                        if done[r].insert(key, 1).is_some() {
                            return Err(err(format!("forward {key:?} twice")));
                        }
                        live[r].insert(key);
                        peak[r] = peak[r].max(live[r].len());
                    }
                    Action::Backward { micro_batch, chunk } => {
                        let key = (micro_batch, chunk);
                        if done[r].get(&key) != Some(&1) || !live[r].remove(&key) {
                            return Err(err(format!("backward {key:?} without its forward")));
                        }
                        done[r].insert(key, 2);
                    }
                }
                pc[r] += 1;
                moved = true;
            }
        }
        if (0..n).all(|r| pc[r] == lists[r].len()) {
            break;
        }
        if !moved {
            let waits: Vec<String> = (0..n)
                .filter_map(|r| lists[r].get(pc[r]).map(|a| format!("rank {r} at {a:?}")))
                .collect();
            return Err(SimError::Deadlock(waits.join("; ")));
        }
    }
    if !wire.is_empty() {
        return Err(SimError::Unreceived(format!("{wire:?}")));
    }
    for (r, d) in done.iter().enumerate() {
        if let Some((k, _)) = d.iter().find(|(_, &s)| s != 2) {
            return Err(SimError::Order {
                rank: r,
                what: format!("forward {k:?} never ran its backward"),
            });
        }
    }
    Ok(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn computes(l: &[Action]) -> usize {
        l.iter()
            .filter(|a| matches!(a, Action::Forward { .. } | Action::Backward { .. }))
            .count()
    }

    #[test]
    fn every_schedule_runs_without_deadlock_and_covers_every_micro_batch() {
        for pp in 1..=4 {
            for m in 1..=8 {
                for (kind, chunks) in [
                    (Schedule::GPipe, 1),
                    (Schedule::OneFOneB, 1),
                    (Schedule::Interleaved, 1),
                    (Schedule::Interleaved, 2),
                    (Schedule::Interleaved, 3),
                ] {
                    let Ok(lists) = schedule(kind, pp, m, chunks) else {
                        assert!(kind == Schedule::Interleaved && m % pp != 0);
                        continue;
                    };
                    let peak = simulate(&lists)
                        .unwrap_or_else(|e| panic!("{kind} pp {pp} m {m} v {chunks}: {e}"));
                    for (r, l) in lists.iter().enumerate() {
                        assert_eq!(computes(l), 2 * m * chunks, "{kind} pp {pp} m {m} r {r}");
                    }
                    for (s, &p) in peak.iter().enumerate() {
                        match kind {
                            Schedule::GPipe => assert_eq!(p, m),
                            Schedule::OneFOneB => assert_eq!(p, (pp - s).min(m), "pp {pp} m {m}"),
                            Schedule::Interleaved => assert!(p <= m * chunks),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn one_f_one_b_order_on_two_stages() {
        let lists = schedule(Schedule::OneFOneB, 2, 4, 1).unwrap();
        let order: Vec<String> = lists[0]
            .iter()
            .filter_map(|a| match a {
                Action::Forward { micro_batch, .. } => Some(format!("F{micro_batch}")),
                Action::Backward { micro_batch, .. } => Some(format!("B{micro_batch}")),
                _ => None,
            })
            .collect();
        assert_eq!(order, ["F0", "F1", "B0", "F2", "B1", "F3", "B2", "B3"]);
        // The last stage alternates from the start.
        assert!(matches!(
            lists[1][1],
            Action::Forward { micro_batch: 0, .. }
        ));
        assert!(matches!(
            lists[1][2],
            Action::Backward { micro_batch: 0, .. }
        ));
    }

    #[test]
    fn interleaved_holds_fewer_activations_than_gpipe_per_chunk() {
        // pp 2, 4 micro-batches, 2 chunks: rank 0 warms up 2·1 + 1·2 = 4 forwards.
        let lists = schedule(Schedule::Interleaved, 2, 4, 2).unwrap();
        let peak = simulate(&lists).unwrap();
        assert_eq!(peak, vec![5, 3]);
        let g = simulate(&schedule(Schedule::GPipe, 2, 4, 1).unwrap()).unwrap();
        assert_eq!(g, vec![4, 4]);
    }

    #[test]
    fn a_broken_list_is_caught() {
        let mut lists = schedule(Schedule::OneFOneB, 2, 2, 1).unwrap();
        // Rank 1 waits for a gradient nobody sends.
        lists[1].insert(
            0,
            Action::Recv {
                id: MessageId {
                    kind: Kind::Gradient,
                    micro_batch: 9,
                    to_stage: 1,
                },
                peer: 0,
            },
        );
        assert!(matches!(simulate(&lists), Err(SimError::Deadlock(_))));
        let mut lists = schedule(Schedule::GPipe, 2, 2, 1).unwrap();
        lists[0].retain(|a| !matches!(a, Action::Forward { micro_batch: 1, .. }));
        assert!(simulate(&lists).is_err());
        assert_eq!(
            schedule(Schedule::Interleaved, 2, 3, 2),
            Err(ScheduleError::Groups { m: 3, pp: 2 })
        );
    }
}
