//! The solvers: the exact one (dynamic programming over the layer chain, swept over the
//! throughputs a stage can deliver), and the baselines — brute force (the tests' oracle),
//! greedy, one kind only — which all share [`Solver::best_replicas`] for a fixed assignment.
//!
//! Why the sweep is exact. The objective is the cost of an epoch, `price/h × epoch /
//! throughput`, with the pipeline's throughput `Y` = its slowest stage's. Take an optimal
//! placement and its `Y*`, which is some stage's `X(r)`: a candidate. For `Y = Y*` the
//! dynamic program gives every stage the fewest replicas reaching `Y` — no more than the
//! optimum's, so it is no dearer per hour and at least as fast — and among assignments picks
//! the least price per hour: its cost per epoch is at most the optimum's. Taking the best
//! over all candidates `Y ≥ target` therefore finds the optimum. The program's state is
//! (layers placed, kind of the last stage, devices used per kind); for each state only the
//! Pareto-minimal vectors of devices used are kept (the price is their weighted sum, and
//! fewer devices never make a later stage infeasible), so shared availability — two stages
//! on one kind — is respected exactly.

use super::problem::{Placement, Problem};
use std::collections::BTreeMap;

/// A stage's key in the tables: `(first, end, kind)`.
type StageKey = (usize, usize, usize);

/// `X(r)` of every possible stage, with a query for the fewest replicas reaching a level.
pub struct Solver<'p> {
    pub problem: &'p Problem,
    /// Per stage: `X(r)` for `r = 1..=available`.
    x: BTreeMap<StageKey, Vec<f64>>,
    /// Per stage: its `X` values sorted ascending and, at each position, the fewest
    /// replicas among that position and the ones after it (every `r` reaching at least it).
    least: BTreeMap<StageKey, (Vec<f64>, Vec<u32>)>,
}

/// One Pareto entry of the dynamic program.
#[derive(Clone)]
struct Entry {
    used: Vec<u32>,
    price: f64,
    /// (layers placed before this stage, kind of the previous stage, index in its front).
    prev: Option<(usize, usize, usize)>,
    first: usize,
    replicas: u32,
}

impl<'p> Solver<'p> {
    pub fn new(problem: &'p Problem) -> Solver<'p> {
        let l = problem.layers.len();
        let mut x = BTreeMap::new();
        let mut least = BTreeMap::new();
        for first in 0..l {
            for end in first + 1..=l {
                for (k, kind) in problem.kinds.iter().enumerate() {
                    let xs: Vec<f64> = (1..=kind.available)
                        .map(|r| problem.stage_throughput(first, end, k, r).0)
                        .collect();
                    let mut order: Vec<(f64, u32)> = xs
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| (v, i as u32 + 1))
                        .collect();
                    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let mut suffix = vec![u32::MAX; order.len()];
                    let mut best = u32::MAX;
                    for i in (0..order.len()).rev() {
                        best = best.min(order[i].1);
                        suffix[i] = best;
                    }
                    least.insert(
                        (first, end, k),
                        (order.iter().map(|o| o.0).collect(), suffix),
                    );
                    x.insert((first, end, k), xs);
                }
            }
        }
        Solver { problem, x, least }
    }

    /// The fewest replicas with which layers `first..end` on `kind` deliver at least `y`.
    pub fn least_replicas(&self, key: StageKey, y: f64) -> Option<u32> {
        let (xs, suffix) = self.least.get(&key)?;
        let pos = xs.partition_point(|&v| v < y);
        (pos < xs.len() && xs[pos] > 0.0).then(|| suffix[pos])
    }

    /// Every throughput some stage can deliver that is at least `floor`, ascending, unique.
    fn candidates<'a>(&self, keys: impl Iterator<Item = &'a StageKey>, floor: f64) -> Vec<f64> {
        let mut c: Vec<f64> = keys
            .filter_map(|k| self.x.get(k))
            .flatten()
            .copied()
            .filter(|&v| v > 0.0 && v >= floor)
            .collect();
        c.sort_by(f64::total_cmp);
        c.dedup();
        c
    }

    /// The cheapest placement per hour in which every stage delivers at least `y`.
    fn cheapest_at(&self, y: f64) -> Option<Placement> {
        let p = self.problem;
        let (l, nk) = (p.layers.len(), p.kinds.len());
        // fronts[end][kind]: Pareto-minimal entries whose last stage ends at `end` on `kind`.
        let mut fronts: Vec<Vec<Vec<Entry>>> = vec![vec![Vec::new(); nk]; l + 1];
        for end in 1..=l {
            for k in 0..nk {
                let avail = p.kinds[k].available;
                for first in 0..end {
                    let Some(r) = self.least_replicas((first, end, k), y) else {
                        continue;
                    };
                    let price = r as f64 * p.kinds[k].price_per_hour;
                    if first == 0 {
                        let mut used = vec![0; nk];
                        used[k] = r;
                        insert(
                            &mut fronts[end][k],
                            Entry {
                                used,
                                price,
                                prev: None,
                                first,
                                replicas: r,
                            },
                        );
                        continue;
                    }
                    for pk in (0..nk).filter(|&pk| pk != k) {
                        for idx in 0..fronts[first][pk].len() {
                            let e = &fronts[first][pk][idx];
                            if e.used[k] + r > avail {
                                continue;
                            }
                            let mut used = e.used.clone();
                            used[k] += r;
                            let entry = Entry {
                                used,
                                price: e.price + price,
                                prev: Some((first, pk, idx)),
                                first,
                                replicas: r,
                            };
                            insert(&mut fronts[end][k], entry);
                        }
                    }
                }
            }
        }
        let (k, idx) = (0..nk)
            .flat_map(|k| {
                fronts[l][k]
                    .iter()
                    .enumerate()
                    .map(move |(i, e)| (k, i, e.price))
            })
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .map(|(k, i, _)| (k, i))?;
        let mut stages = Vec::new();
        let (mut end, mut kind, mut at) = (l, k, idx);
        loop {
            let e = &fronts[end][kind][at];
            stages.push((e.first, end, kind, e.replicas));
            match e.prev {
                Some((pe, pk, pi)) => (end, kind, at) = (pe, pk, pi),
                None => break,
            }
        }
        stages.reverse();
        p.place(&stages)
    }

    /// The exact optimum: the least cost per epoch meeting the target, or `Err` with the
    /// highest throughput any placement reaches (0 when nothing fits at all).
    pub fn exact(&self) -> Result<Placement, f64> {
        let mut best: Option<Placement> = None;
        for y in self.candidates(self.x.keys(), self.problem.target) {
            if let Some(pl) = self.cheapest_at(y) {
                if best
                    .as_ref()
                    .is_none_or(|b| pl.cost_per_epoch < b.cost_per_epoch)
                {
                    best = Some(pl);
                }
            }
        }
        best.ok_or_else(|| self.max_throughput())
    }

    /// The highest throughput any placement reaches with the available devices.
    pub fn max_throughput(&self) -> f64 {
        let c = self.candidates(self.x.keys(), 0.0);
        c.iter()
            .rev()
            .find_map(|&y| self.cheapest_at(y).map(|p| p.throughput))
            .unwrap_or(0.0)
    }

    /// The cheapest replica counts for a fixed kind per layer (the same sweep over the
    /// assignment's own stages): `Err` with the most that assignment reaches when it
    /// cannot meet the target.
    pub fn best_replicas(&self, kinds: &[usize]) -> Result<Placement, f64> {
        let p = self.problem;
        if kinds.len() != p.layers.len() || kinds.iter().any(|&k| k >= p.kinds.len()) {
            return Err(0.0);
        }
        let stages = Problem::stages_of(kinds);
        let place_at = |y: f64| -> Option<Placement> {
            let mut with_r = Vec::with_capacity(stages.len());
            for &(first, end, k) in &stages {
                with_r.push((first, end, k, self.least_replicas((first, end, k), y)?));
            }
            p.place(&with_r)
        };
        let all = self.candidates(stages.iter(), 0.0);
        let mut best: Option<Placement> = None;
        for &y in all.iter().filter(|&&y| y >= p.target) {
            if let Some(pl) = place_at(y) {
                if best
                    .as_ref()
                    .is_none_or(|b| pl.cost_per_epoch < b.cost_per_epoch)
                {
                    best = Some(pl);
                }
            }
        }
        best.ok_or_else(|| {
            all.iter()
                .rev()
                .find_map(|&y| place_at(y).map(|pl| pl.throughput))
                .unwrap_or(0.0)
        })
    }

    /// The highest throughput a fixed kind per layer reaches with the available devices.
    pub fn max_throughput_of(&self, kinds: &[usize]) -> f64 {
        let p = self.problem;
        if kinds.len() != p.layers.len() || kinds.iter().any(|&k| k >= p.kinds.len()) {
            return 0.0;
        }
        let stages = Problem::stages_of(kinds);
        self.candidates(stages.iter(), 0.0)
            .iter()
            .rev()
            .find_map(|&y| {
                let with_r: Option<Vec<_>> = stages
                    .iter()
                    .map(|&(f, e, k)| Some((f, e, k, self.least_replicas((f, e, k), y)?)))
                    .collect();
                p.place(&with_r?).map(|pl| pl.throughput)
            })
            .unwrap_or(0.0)
    }

    /// Every placement — partition, kinds and replica counts — tried one by one: the tests'
    /// oracle for small chains (`None` when the space has more than `limit` placements).
    pub fn brute_force(&self, limit: u64) -> Option<Result<Placement, f64>> {
        let p = self.problem;
        let l = p.layers.len() as u32;
        // Placements: each layer after the first continues its stage or opens one on another
        // kind with one of its replica counts.
        let most = p
            .kinds
            .iter()
            .map(|k| k.available as u64)
            .max()
            .unwrap_or(0);
        let branch = 1 + (p.kinds.len() as u64).saturating_sub(1) * most;
        let space = (p.kinds.len() as u64 * most)
            .saturating_mul(branch.saturating_pow(l.saturating_sub(1)));
        if space > limit {
            return None;
        }
        let mut best: Option<Placement> = None;
        let mut max_tp: f64 = 0.0;
        let mut stages = Vec::new();
        let mut used = vec![0u32; p.kinds.len()];
        self.enumerate(0, &mut stages, &mut used, &mut best, &mut max_tp);
        Some(best.ok_or(max_tp))
    }

    fn enumerate(
        &self,
        first: usize,
        stages: &mut Vec<(usize, usize, usize, u32)>,
        used: &mut [u32],
        best: &mut Option<Placement>,
        max_tp: &mut f64,
    ) {
        let p = self.problem;
        if first == p.layers.len() {
            if let Some(pl) = p.place(stages) {
                *max_tp = max_tp.max(pl.throughput);
                let better = best
                    .as_ref()
                    .is_none_or(|b| pl.cost_per_epoch < b.cost_per_epoch);
                if p.meets_target(&pl) && better {
                    *best = Some(pl);
                }
            }
            return;
        }
        for end in first + 1..=p.layers.len() {
            for k in 0..p.kinds.len() {
                if stages.last().is_some_and(|s| s.2 == k) {
                    continue;
                }
                for r in 1..=p.kinds[k].available.saturating_sub(used[k]) {
                    used[k] += r;
                    stages.push((first, end, k, r));
                    self.enumerate(end, stages, used, best, max_tp);
                    stages.pop();
                    used[k] -= r;
                }
            }
        }
    }

    /// Greedy: each layer on the kind where it alone costs least per sample (seconds ×
    /// price, ignoring transfers and synchronisation), then the cheapest replica counts.
    pub fn greedy(&self) -> Result<Placement, f64> {
        let p = self.problem;
        let kinds: Vec<usize> = p
            .layers
            .iter()
            .map(|l| {
                (0..p.kinds.len())
                    .min_by(|&a, &b| {
                        let ca = l.seconds_per_sample[a] * p.kinds[a].price_per_hour;
                        let cb = l.seconds_per_sample[b] * p.kinds[b].price_per_hour;
                        ca.total_cmp(&cb)
                    })
                    .unwrap_or(0)
            })
            .collect();
        self.best_replicas(&kinds)
    }

    /// Every layer on one kind among `allowed` (the cheapest of them that meets the
    /// target); `None` when no kind is allowed.
    pub fn single_kind(&self, allowed: impl Fn(usize) -> bool) -> Option<Result<Placement, f64>> {
        let l = self.problem.layers.len();
        let mut best: Option<Result<Placement, f64>> = None;
        for k in (0..self.problem.kinds.len()).filter(|&k| allowed(k)) {
            let r = self.best_replicas(&vec![k; l]);
            best = Some(match (best, r) {
                (None, r) => r,
                (Some(Ok(a)), Ok(b)) => Ok(if b.cost_per_epoch < a.cost_per_epoch {
                    b
                } else {
                    a
                }),
                (Some(Ok(a)), Err(_)) => Ok(a),
                (Some(Err(_)), Ok(b)) => Ok(b),
                (Some(Err(a)), Err(b)) => Err(a.max(b)),
            });
        }
        best
    }
}

/// Adds `e` to a Pareto front of device-use vectors unless an entry uses no more of every
/// kind (and so costs no more); drops the entries `e` dominates.
fn insert(front: &mut Vec<Entry>, e: Entry) {
    let le = |a: &[u32], b: &[u32]| a.iter().zip(b).all(|(x, y)| x <= y);
    if front.iter().any(|f| le(&f.used, &e.used)) {
        return;
    }
    front.retain(|f| !le(&e.used, &f.used));
    front.push(e);
}
