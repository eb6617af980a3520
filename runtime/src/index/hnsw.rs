//! Hierarchical navigable small-world graph (Malkov & Yashunin, 2018): layered proximity
//! graphs, greedy descent through the upper layers, a beam search of width `ef` on layer 0,
//! neighbours chosen by the paper's heuristic (Algorithm 4). Deletion marks a node (hnswlib's
//! `markDelete`): a deleted node still routes searches but is never returned, so a graph with
//! many deletions keeps its recall; rebuilding from the live vectors compacts it.
//!
//! Written here rather than taken from a crate: of the maintained Rust HNSW crates,
//! `hnsw_rs` has no deletion and dumps to a pair of files in its own format, and
//! `instant-distance` builds once from a batch (no add, no delete). See docs/shitu.md.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Build and search parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Neighbours kept per node on the upper layers (`2·m` on layer 0).
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Beam width while searching (at least `k`).
    pub ef_search: usize,
    /// Seed of the level draws, so a build reproduces.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            seed: 0,
        }
    }
}

/// A candidate: distance (smaller is nearer) and node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cand {
    dist: f32,
    node: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.node.cmp(&o.node))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The graph: for each node, its neighbour lists from layer 0 up to its level.
#[derive(Debug, Clone)]
pub struct Hnsw {
    pub params: HnswParams,
    pub(crate) links: Vec<Vec<Vec<u32>>>,
    pub(crate) entry: Option<u32>,
    /// Visit marks, epoch-stamped so a search does not clear them.
    visited: Vec<u32>,
    epoch: u32,
}

impl Hnsw {
    pub fn new(params: HnswParams) -> Hnsw {
        Hnsw {
            params,
            links: Vec::new(),
            entry: None,
            visited: Vec::new(),
            epoch: 0,
        }
    }

    /// A graph read from a file: its links and entry point.
    pub(crate) fn from_parts(
        params: HnswParams,
        links: Vec<Vec<Vec<u32>>>,
        entry: Option<u32>,
    ) -> Hnsw {
        Hnsw {
            params,
            links,
            entry,
            visited: Vec::new(),
            epoch: 0,
        }
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    fn level_of(&self, node: u32) -> usize {
        self.links[node as usize].len() - 1
    }

    /// A node's level: P(level ≥ l) = m^-l (the paper's m_L = 1 / ln m), drawn from a hash
    /// of (seed, node) so an index adds the same way before and after a save/load.
    fn draw_level(&self, node: u32) -> usize {
        let ml = 1.0 / (self.params.m.max(2) as f64).ln();
        let mut z = self.params.seed ^ (u64::from(node) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * ml).floor() as usize).min(16)
    }

    fn next_epoch(&mut self) {
        if self.visited.len() < self.links.len() {
            self.visited.resize(self.links.len(), 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.epoch = 1;
        }
    }

    /// Inserts node `links.len()`; `dist(a, b)` is the distance between two nodes and
    /// `dist_to(q)`, between the new node and node `q`.
    pub fn insert(&mut self, dist: &dyn Fn(u32, u32) -> f32) {
        let node = self.links.len() as u32;
        let level = self.draw_level(node);
        self.links.push(vec![Vec::new(); level + 1]);
        let Some(mut ep) = self.entry else {
            self.entry = Some(node);
            return;
        };
        let top = self.level_of(ep);
        let to_new = |q: u32| dist(node, q);
        let mut ep_dist = to_new(ep);
        for layer in (level + 1..=top).rev() {
            (ep, ep_dist) = self.greedy(ep, ep_dist, layer, &to_new);
        }
        let mut eps = vec![Cand {
            dist: ep_dist,
            node: ep,
        }];
        for layer in (0..=level.min(top)).rev() {
            let found = self.search_layer(&eps, self.params.ef_construction, layer, &to_new);
            let chosen = self.select(&found, self.params.m, dist);
            self.links[node as usize][layer] = chosen.iter().map(|c| c.node).collect();
            for c in &chosen {
                self.link_back(c.node, node, layer, dist);
            }
            eps = found;
        }
        if level > top {
            self.entry = Some(node);
        }
    }

    /// Adds `new` to `at`'s list on `layer`, pruning by the heuristic when it overflows.
    fn link_back(&mut self, at: u32, new: u32, layer: usize, dist: &dyn Fn(u32, u32) -> f32) {
        let cap = self.max_links(layer);
        let list = &mut self.links[at as usize][layer];
        list.push(new);
        if list.len() <= cap {
            return;
        }
        let cands: Vec<Cand> = list
            .iter()
            .map(|&n| Cand {
                dist: dist(at, n),
                node: n,
            })
            .collect();
        let kept = self.select(&cands, cap, dist);
        self.links[at as usize][layer] = kept.iter().map(|c| c.node).collect();
    }

    /// The paper's neighbour heuristic: nearest first, keeping a candidate only if it is
    /// nearer the base than every neighbour kept so far (spreads links across directions),
    /// then topping up with the nearest discarded ones.
    fn select(&self, cands: &[Cand], m: usize, dist: &dyn Fn(u32, u32) -> f32) -> Vec<Cand> {
        let mut sorted = cands.to_vec();
        sorted.sort();
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        let mut skipped = Vec::new();
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            if kept.iter().all(|k| dist(k.node, c.node) > c.dist) {
                kept.push(c);
            } else {
                skipped.push(c);
            }
        }
        for c in skipped {
            if kept.len() >= m {
                break;
            }
            kept.push(c);
        }
        kept
    }

    fn greedy(
        &self,
        mut ep: u32,
        mut ep_dist: f32,
        layer: usize,
        to: &dyn Fn(u32) -> f32,
    ) -> (u32, f32) {
        loop {
            let mut moved = false;
            for &n in &self.links[ep as usize][layer] {
                let d = to(n);
                if d < ep_dist {
                    (ep, ep_dist, moved) = (n, d, true);
                }
            }
            if !moved {
                return (ep, ep_dist);
            }
        }
    }

    /// Beam search of width `ef` on one layer from `eps`; the `ef` nearest found, sorted.
    fn search_layer(
        &mut self,
        eps: &[Cand],
        ef: usize,
        layer: usize,
        to: &dyn Fn(u32) -> f32,
    ) -> Vec<Cand> {
        self.next_epoch();
        let mut frontier: BinaryHeap<std::cmp::Reverse<Cand>> = BinaryHeap::new();
        let mut best: BinaryHeap<Cand> = BinaryHeap::new();
        for &c in eps {
            self.visited[c.node as usize] = self.epoch;
            frontier.push(std::cmp::Reverse(c));
            best.push(c);
        }
        while best.len() > ef {
            best.pop();
        }
        while let Some(std::cmp::Reverse(c)) = frontier.pop() {
            let worst = best.peek().map_or(f32::INFINITY, |b| b.dist);
            if c.dist > worst && best.len() >= ef {
                break;
            }
            for &n in &self.links[c.node as usize][layer] {
                if self.visited[n as usize] == self.epoch {
                    continue;
                }
                self.visited[n as usize] = self.epoch;
                let d = to(n);
                let worst = best.peek().map_or(f32::INFINITY, |b| b.dist);
                if best.len() < ef || d < worst {
                    let cand = Cand { dist: d, node: n };
                    frontier.push(std::cmp::Reverse(cand));
                    best.push(cand);
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        best.into_sorted_vec()
    }

    /// The nodes nearest the query (`to(n)`: its distance to node `n`), nearest first, at
    /// most `ef.max(k)` of them before `keep` filters (deleted nodes route but are dropped).
    pub fn search(
        &mut self,
        k: usize,
        to: &dyn Fn(u32) -> f32,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        let mut ep_dist = to(ep);
        for layer in (1..=self.level_of(ep)).rev() {
            (ep, ep_dist) = self.greedy(ep, ep_dist, layer, to);
        }
        let ef = self.params.ef_search.max(k);
        let found = self.search_layer(
            &[Cand {
                dist: ep_dist,
                node: ep,
            }],
            ef,
            0,
            to,
        );
        found
            .into_iter()
            .filter(|c| keep(c.node))
            .take(k)
            .map(|c| (c.node, c.dist))
            .collect()
    }
}
