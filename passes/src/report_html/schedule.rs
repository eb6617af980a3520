//! The pipeline timeline: when each stage runs each micro-batch's forward and backward pass
//! under GPipe, 1F1B or interleaved 1F1B, computed by list scheduling. Every stage runs its
//! own order of passes (the schedule) one after another; a pass starts when its stage is free
//! and its input has arrived: the forward of the previous (virtual) stage, or the backward of
//! the next one, plus one point-to-point transfer between devices. The gaps are the bubble.

use crate::parallel::step_cost::Schedule;
use crate::report_html::svg::{num, svg, Tag};
use thiserror::Error;

/// Why a timeline cannot be computed.
#[derive(Debug, Error, PartialEq)]
pub enum ScheduleError {
    #[error("a pipeline needs at least one stage and one micro-batch (got {stages} stages, {micro_batches} micro-batches)")]
    Empty { stages: usize, micro_batches: usize },
    #[error("{fwd} forward times but {bwd} backward times: one of each per stage")]
    Mismatch { fwd: usize, bwd: usize },
    #[error("interleaved schedule with {0} chunks per device: at least 1")]
    NoChunks(u64),
    #[error("the schedule's pass order deadlocks at stage {stage} ({done} of {total} passes run)")]
    Deadlock {
        stage: usize,
        done: usize,
        total: usize,
    },
}

/// Forward or backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Forward,
    Backward,
}

/// One bar of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// The device's pipeline stage.
    pub stage: usize,
    pub micro: usize,
    /// The model chunk on this device (interleaved; otherwise 0).
    pub chunk: usize,
    pub pass: Pass,
    pub start: f64,
    pub end: f64,
}

/// Per-stage times of one micro-batch (all chunks of the stage together), seconds.
#[derive(Debug, Clone)]
pub struct StageTimes {
    pub forward: Vec<f64>,
    pub backward: Vec<f64>,
    /// One activation or gradient transfer between neighbouring stages.
    pub p2p: f64,
}

/// A computed schedule.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub stages: usize,
    pub micro_batches: usize,
    pub chunks: usize,
    pub slots: Vec<Slot>,
    pub makespan: f64,
}

impl Timeline {
    /// The idle fraction of device time between the first start and the last end.
    pub fn bubble_fraction(&self) -> f64 {
        if self.makespan <= 0.0 {
            return 0.0;
        }
        let busy: f64 = self.slots.iter().map(|s| s.end - s.start).sum();
        1.0 - busy / (self.stages as f64 * self.makespan)
    }
}

/// (pass, micro-batch, chunk) in the order one stage runs them.
type Order = Vec<(Pass, usize, usize)>;

/// Megatron-LM's interleaved order: micro-batches in groups of `p`, each group through every
/// chunk before the next; backward walks the chunks in reverse.
fn interleaved_order(p: usize, m: usize, v: usize, s: usize) -> Order {
    let mut fwd = Vec::with_capacity(m * v);
    let mut bwd = Vec::with_capacity(m * v);
    for g in (0..m).step_by(p) {
        for c in 0..v {
            for mb in g..(g + p).min(m) {
                fwd.push((mb, c));
                bwd.push((mb, v - 1 - c));
            }
        }
    }
    let total = m * v;
    let warmup = ((p - s - 1) * 2 + (v - 1) * p).min(total);
    let mut order = Vec::with_capacity(2 * total);
    order.extend(fwd[..warmup].iter().map(|&(mb, c)| (Pass::Forward, mb, c)));
    for i in 0..total - warmup {
        let (fm, fc) = fwd[warmup + i];
        order.push((Pass::Forward, fm, fc));
        let (bm, bc) = bwd[i];
        order.push((Pass::Backward, bm, bc));
    }
    order.extend(
        bwd[total - warmup..]
            .iter()
            .map(|&(mb, c)| (Pass::Backward, mb, c)),
    );
    order
}

fn stage_order(schedule: Schedule, p: usize, m: usize, s: usize) -> Order {
    match schedule {
        Schedule::GPipe => (0..m)
            .map(|i| (Pass::Forward, i, 0))
            .chain((0..m).map(|i| (Pass::Backward, i, 0)))
            .collect(),
        Schedule::OneFOneB => {
            let warmup = (p - s - 1).min(m);
            let mut o: Order = (0..warmup).map(|i| (Pass::Forward, i, 0)).collect();
            for i in 0..m - warmup {
                o.push((Pass::Forward, warmup + i, 0));
                o.push((Pass::Backward, i, 0));
            }
            o.extend((m - warmup..m).map(|i| (Pass::Backward, i, 0)));
            o
        }
        Schedule::Interleaved(v) => interleaved_order(p, m, v as usize, s),
    }
}

/// Computes the timeline of `micro_batches` micro-batches through the stages of `times`.
pub fn simulate(
    schedule: Schedule,
    micro_batches: usize,
    times: &StageTimes,
) -> Result<Timeline, ScheduleError> {
    let p = times.forward.len();
    let m = micro_batches;
    if p == 0 || m == 0 {
        return Err(ScheduleError::Empty {
            stages: p,
            micro_batches: m,
        });
    }
    if times.backward.len() != p {
        return Err(ScheduleError::Mismatch {
            fwd: p,
            bwd: times.backward.len(),
        });
    }
    let v = match schedule {
        Schedule::Interleaved(0) => return Err(ScheduleError::NoChunks(0)),
        Schedule::Interleaved(v) => v as usize,
        Schedule::GPipe | Schedule::OneFOneB => 1,
    };
    // Virtual stage `c·p + s` is chunk `c` on device `s`; a micro-batch visits them in order.
    let vs_count = p * v;
    let mut fwd_end = vec![vec![None::<f64>; m]; vs_count];
    let mut bwd_end = vec![vec![None::<f64>; m]; vs_count];
    let orders: Vec<Order> = (0..p).map(|s| stage_order(schedule, p, m, s)).collect();
    let mut next = vec![0usize; p];
    let mut free = vec![0.0f64; p];
    let total: usize = orders.iter().map(Vec::len).sum();
    let mut slots = Vec::with_capacity(total);
    let hop = if p > 1 { times.p2p } else { 0.0 };
    while slots.len() < total {
        let mut progressed = false;
        for s in 0..p {
            while let Some(&(pass, mb, c)) = orders[s].get(next[s]) {
                let vs = c * p + s;
                let ready = match pass {
                    Pass::Forward if vs == 0 => Some(0.0),
                    Pass::Forward => fwd_end[vs - 1][mb].map(|t| t + hop),
                    Pass::Backward if vs + 1 == vs_count => fwd_end[vs][mb],
                    Pass::Backward => bwd_end[vs + 1][mb].map(|t| t + hop),
                };
                let Some(ready) = ready else { break };
                let dur = match pass {
                    Pass::Forward => times.forward[s],
                    Pass::Backward => times.backward[s],
                } / v as f64;
                let start = ready.max(free[s]);
                let end = start + dur;
                free[s] = end;
                match pass {
                    Pass::Forward => fwd_end[vs][mb] = Some(end),
                    Pass::Backward => bwd_end[vs][mb] = Some(end),
                }
                slots.push(Slot {
                    stage: s,
                    micro: mb,
                    chunk: c,
                    pass,
                    start,
                    end,
                });
                next[s] += 1;
                progressed = true;
            }
        }
        if !progressed {
            let stage = (0..p).find(|&s| next[s] < orders[s].len()).unwrap_or(0);
            return Err(ScheduleError::Deadlock {
                stage,
                done: slots.len(),
                total,
            });
        }
    }
    let makespan = slots.iter().map(|s| s.end).fold(0.0, f64::max);
    Ok(Timeline {
        stages: p,
        micro_batches: m,
        chunks: v,
        slots,
        makespan,
    })
}

/// The Gantt chart: one row per stage, one `rect.mb` per pass, forward in blue and backward
/// in green (darker for later chunks), idle time left as the row's grey background.
pub fn gantt(t: &Timeline) -> String {
    let (left, width, row_h, top) = (80.0, 1100.0, 26.0, 24.0);
    let plot_w = width - left - 10.0;
    let scale = if t.makespan > 0.0 {
        plot_w / t.makespan
    } else {
        0.0
    };
    let mut s = String::new();
    for st in 0..t.stages {
        let y = top + st as f64 * row_h;
        s += &Tag::new("rect")
            .a("class", "idle")
            .x("x", left)
            .x("y", y)
            .x("width", plot_w)
            .x("height", row_h - 4.0)
            .empty();
        s += &Tag::new("text")
            .x("x", 4.0)
            .x("y", y + 15.0)
            .text(&format!("stage {st}"));
    }
    for sl in &t.slots {
        let x = left + sl.start * scale;
        let w = ((sl.end - sl.start) * scale).max(0.5);
        let y = top + sl.stage as f64 * row_h;
        let (kind, name) = match sl.pass {
            Pass::Forward => ("f", "forward"),
            Pass::Backward => ("b", "backward"),
        };
        let chunk = if t.chunks > 1 {
            format!(", chunk {}", sl.chunk)
        } else {
            String::new()
        };
        let title = format!(
            "stage {}, micro-batch {}{chunk}, {name}: {:.2}–{:.2} ms",
            sl.stage,
            sl.micro,
            sl.start * 1e3,
            sl.end * 1e3
        );
        let mut bar = Tag::new("rect")
            .a("class", format!("mb {kind} c{}", sl.chunk.min(3)))
            .a("data-stage", sl.stage)
            .a("data-mb", sl.micro)
            .x("x", x)
            .x("y", y)
            .x("width", w)
            .x("height", row_h - 4.0)
            .titled(&title);
        // Micro-batch numbers where they fit.
        if w >= 14.0 {
            bar += &Tag::new("text")
                .a("class", "mbl")
                .x("x", x + w / 2.0)
                .x("y", y + 15.0)
                .a("text-anchor", "middle")
                .text(&sl.micro.to_string());
        }
        s += &bar;
    }
    let axis_y = top + t.stages as f64 * row_h + 14.0;
    for k in 0..=5 {
        let tt = t.makespan * k as f64 / 5.0;
        // The last label ends at the axis' end rather than running off the chart.
        let anchor = if k == 5 { "end" } else { "middle" };
        s += &Tag::new("text")
            .x("x", left + tt * scale)
            .x("y", axis_y)
            .a("text-anchor", anchor)
            .text(&format!("{:.1} ms", tt * 1e3));
    }
    svg("gantt", width, axis_y + 8.0, &s)
}

/// A caption line for the chart: bars, makespan and bubble.
pub fn caption(t: &Timeline) -> String {
    format!(
        "{} stages × {} micro-batches × 2 passes{}: {} bars, {} ms per step's pipeline, bubble {:.1}% of device time",
        t.stages,
        t.micro_batches,
        if t.chunks > 1 {
            format!(" × {} chunks", t.chunks)
        } else {
            String::new()
        },
        t.slots.len(),
        num(t.makespan * 1e3),
        t.bubble_fraction() * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn equal(p: usize, f: f64, b: f64) -> StageTimes {
        StageTimes {
            forward: vec![f; p],
            backward: vec![b; p],
            p2p: 0.0,
        }
    }

    #[test]
    fn gpipe_bubble_is_p_minus_1_over_m_plus_p_minus_1() {
        for (p, m) in [(4, 8), (2, 3), (8, 32), (1, 5)] {
            let t = simulate(Schedule::GPipe, m, &equal(p, 1.3, 2.9)).unwrap();
            let want = (p as f64 - 1.0) / (m as f64 + p as f64 - 1.0);
            assert!(
                (t.bubble_fraction() - want).abs() < 1e-9,
                "p={p} m={m}: {} vs {want}",
                t.bubble_fraction()
            );
            assert!((t.makespan - (m + p - 1) as f64 * 4.2).abs() < 1e-9);
        }
    }

    #[test]
    fn one_f_one_b_has_stages_times_micro_batches_times_two_bars() {
        let (p, m) = (4, 6);
        let t = simulate(Schedule::OneFOneB, m, &equal(p, 1.0, 2.0)).unwrap();
        assert_eq!(t.slots.len(), p * m * 2);
        // Same bubble as GPipe with equal stages, but at most p-s micro-batches in flight.
        let want = (p as f64 - 1.0) / (m as f64 + p as f64 - 1.0);
        assert!((t.bubble_fraction() - want).abs() < 1e-9);
        for s in 0..p {
            let mut in_flight = 0i64;
            let mut most = 0;
            let mut mine: Vec<&Slot> = t.slots.iter().filter(|x| x.stage == s).collect();
            mine.sort_by(|a, b| a.start.total_cmp(&b.start));
            for x in mine {
                in_flight += if x.pass == Pass::Forward { 1 } else { -1 };
                most = most.max(in_flight);
            }
            assert_eq!(most as usize, (p - s).min(m), "stage {s}");
        }
    }

    #[test]
    fn passes_respect_dependencies_and_never_overlap_on_a_stage() {
        let times = StageTimes {
            forward: vec![1.0, 1.7, 0.6],
            backward: vec![2.1, 3.0, 1.4],
            p2p: 0.25,
        };
        for sched in [
            Schedule::GPipe,
            Schedule::OneFOneB,
            Schedule::Interleaved(2),
        ] {
            let t = simulate(sched, 6, &times).unwrap();
            let mut by_stage = vec![Vec::new(); 3];
            for sl in &t.slots {
                by_stage[sl.stage].push((sl.start, sl.end));
            }
            for v in &mut by_stage {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                for w in v.windows(2) {
                    assert!(w[1].0 >= w[0].1 - 1e-12, "{sched:?}: overlap {w:?}");
                }
            }
            for sl in t
                .slots
                .iter()
                .filter(|s| s.pass == Pass::Forward && s.stage > 0)
            {
                let prev = t
                    .slots
                    .iter()
                    .find(|x| {
                        x.pass == Pass::Forward
                            && x.stage == sl.stage - 1
                            && x.micro == sl.micro
                            && x.chunk == sl.chunk
                    })
                    .unwrap();
                assert!(sl.start >= prev.end + 0.25 - 1e-12, "{sched:?}");
            }
        }
    }

    #[test]
    fn interleaving_shrinks_the_bubble() {
        let (p, m) = (4, 8);
        let plain = simulate(Schedule::OneFOneB, m, &equal(p, 1.0, 2.0)).unwrap();
        let inter = simulate(Schedule::Interleaved(2), m, &equal(p, 1.0, 2.0)).unwrap();
        assert_eq!(inter.slots.len(), p * m * 2 * 2);
        assert!(inter.makespan < plain.makespan);
        // Megatron: the bubble shrinks by the number of chunks, (p-1)/v per micro-batch time.
        let want = (p as f64 - 1.0) / 2.0 * 3.0 + m as f64 * 3.0;
        assert!((inter.makespan - want).abs() < 1e-9, "{}", inter.makespan);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            simulate(Schedule::GPipe, 0, &equal(2, 1.0, 1.0)),
            Err(ScheduleError::Empty { .. })
        ));
        let bad = StageTimes {
            forward: vec![1.0; 2],
            backward: vec![1.0],
            p2p: 0.0,
        };
        assert!(matches!(
            simulate(Schedule::GPipe, 2, &bad),
            Err(ScheduleError::Mismatch { .. })
        ));
        assert!(simulate(Schedule::Interleaved(0), 2, &equal(2, 1.0, 1.0)).is_err());
    }
}
