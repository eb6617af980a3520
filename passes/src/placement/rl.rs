//! The HeterPS paper's scheduler, as a baseline: an LSTM policy that reads the layers in
//! chain order and samples a device kind for each, trained with REINFORCE on the cost of
//! the placement it samples (replicas chosen by [`Solver::best_replicas`], as for every
//! method). Plain Rust, seeded, bounded: `iterations × batch` episodes.
//!
//! Per layer the input is the previous action (one-hot, with a start symbol), the layer's
//! log cost per sample on each kind (seconds × price, centred) and whether it is sparse.
//! Reward: `−ln(cost per epoch)`; a placement that misses the target gets the worst reward
//! seen so far minus one. Advantage: reward minus a moving average; Adam on the policy
//! gradient, back-propagated through time. The answer is the best placement sampled.

use super::problem::Placement;
use super::solve::Solver;
// SplitMix64 (the data loader's): small, seeded, good enough for sampling actions and
// initial weights.
use oar_runtime::data::SplitMix as Rng;
use std::collections::BTreeMap;

/// Training budget and policy size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlConfig {
    pub iterations: usize,
    /// Episodes per policy update.
    pub batch: usize,
    pub hidden: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for RlConfig {
    fn default() -> Self {
        RlConfig {
            iterations: 100,
            batch: 16,
            hidden: 16,
            learning_rate: 0.05,
            seed: 1,
        }
    }
}

/// Parameters (and, with the same layout, gradients and Adam moments).
#[derive(Clone)]
struct Params {
    /// Gates `[4H, I + H]` (input, forget, output, candidate), row-major.
    w: Vec<f64>,
    bw: Vec<f64>,
    /// Output `[K, H]`.
    v: Vec<f64>,
    bv: Vec<f64>,
}

impl Params {
    fn zeros_like(&self) -> Params {
        Params {
            w: vec![0.0; self.w.len()],
            bw: vec![0.0; self.bw.len()],
            v: vec![0.0; self.v.len()],
            bv: vec![0.0; self.bv.len()],
        }
    }

    fn slices_mut(&mut self) -> [&mut Vec<f64>; 4] {
        [&mut self.w, &mut self.bw, &mut self.v, &mut self.bv]
    }
}

/// What the backward pass needs from one step.
struct StepCache {
    z: Vec<f64>,
    gates: Vec<f64>,
    c_prev: Vec<f64>,
    c: Vec<f64>,
    h: Vec<f64>,
    probs: Vec<f64>,
    action: usize,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

struct Policy {
    p: Params,
    inputs: usize,
    hidden: usize,
    kinds: usize,
}

impl Policy {
    fn new(inputs: usize, hidden: usize, kinds: usize, rng: &mut Rng) -> Policy {
        let mut init = |n: usize, scale: f64| -> Vec<f64> {
            (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * scale).collect()
        };
        let scale = 1.0 / ((inputs + hidden) as f64).sqrt();
        let mut bw = vec![0.0; 4 * hidden];
        // Forget gates open at first (a common LSTM initialisation).
        bw[hidden..2 * hidden].iter_mut().for_each(|b| *b = 1.0);
        Policy {
            p: Params {
                w: init(4 * hidden * (inputs + hidden), scale),
                bw,
                v: init(kinds * hidden, 1.0 / (hidden as f64).sqrt()),
                bv: vec![0.0; kinds],
            },
            inputs,
            hidden,
            kinds,
        }
    }

    /// One step: new (h, c) and the cache.
    fn step(&self, x: &[f64], h_prev: &[f64], c_prev: &[f64]) -> StepCache {
        let (hd, width) = (self.hidden, self.inputs + self.hidden);
        let z: Vec<f64> = x.iter().chain(h_prev).copied().collect();
        let mut gates = vec![0.0; 4 * hd];
        for (r, g) in gates.iter_mut().enumerate() {
            let row = &self.p.w[r * width..(r + 1) * width];
            let a: f64 = row.iter().zip(&z).map(|(w, z)| w * z).sum::<f64>() + self.p.bw[r];
            *g = if r < 3 * hd { sigmoid(a) } else { a.tanh() };
        }
        let c: Vec<f64> = (0..hd)
            .map(|j| gates[hd + j] * c_prev[j] + gates[j] * gates[3 * hd + j])
            .collect();
        let h: Vec<f64> = (0..hd).map(|j| gates[2 * hd + j] * c[j].tanh()).collect();
        let logits: Vec<f64> = (0..self.kinds)
            .map(|k| {
                self.p.v[k * hd..(k + 1) * hd]
                    .iter()
                    .zip(&h)
                    .map(|(v, h)| v * h)
                    .sum::<f64>()
                    + self.p.bv[k]
            })
            .collect();
        let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let sum: f64 = e.iter().sum();
        StepCache {
            z,
            gates,
            c_prev: c_prev.to_vec(),
            c,
            h,
            probs: e.iter().map(|x| x / sum).collect(),
            action: 0,
        }
    }

    /// Adds the gradient of `−advantage · Σ log π(action)` over one episode to `grad`.
    fn backward(&self, steps: &[StepCache], advantage: f64, grad: &mut Params) {
        let (hd, width) = (self.hidden, self.inputs + self.hidden);
        let mut dh_next = vec![0.0; hd];
        let mut dc_next = vec![0.0; hd];
        for s in steps.iter().rev() {
            let dlogits: Vec<f64> = (0..self.kinds)
                .map(|k| advantage * (s.probs[k] - if k == s.action { 1.0 } else { 0.0 }))
                .collect();
            let mut dh = dh_next.clone();
            for (k, dl) in dlogits.iter().enumerate() {
                grad.bv[k] += dl;
                let v_row = &self.p.v[k * hd..(k + 1) * hd];
                let g_row = &mut grad.v[k * hd..(k + 1) * hd];
                for ((d, (g, v)), h) in dh.iter_mut().zip(g_row.iter_mut().zip(v_row)).zip(&s.h) {
                    *g += dl * h;
                    *d += dl * v;
                }
            }
            let g = &s.gates;
            let mut da = vec![0.0; 4 * hd];
            for j in 0..hd {
                let (i, f, o, cand) = (g[j], g[hd + j], g[2 * hd + j], g[3 * hd + j]);
                let tc = s.c[j].tanh();
                let dc = dh[j] * o * (1.0 - tc * tc) + dc_next[j];
                da[j] = dc * cand * i * (1.0 - i);
                da[hd + j] = dc * s.c_prev[j] * f * (1.0 - f);
                da[2 * hd + j] = dh[j] * tc * o * (1.0 - o);
                da[3 * hd + j] = dc * i * (1.0 - cand * cand);
                dc_next[j] = dc * f;
            }
            let mut dz = vec![0.0; width];
            for (r, d) in da.iter().enumerate() {
                grad.bw[r] += d;
                let row = r * width;
                let w_row = &self.p.w[row..row + width];
                let g_row = &mut grad.w[row..row + width];
                for ((dzc, (g, w)), z) in dz.iter_mut().zip(g_row.iter_mut().zip(w_row)).zip(&s.z) {
                    *g += d * z;
                    *dzc += d * w;
                }
            }
            dh_next = dz[self.inputs..].to_vec();
        }
    }
}

/// Adam over all parameters.
struct Adam {
    m: Params,
    v: Params,
    t: i32,
}

impl Adam {
    fn step(&mut self, p: &mut Params, g: &mut Params, lr: f64) {
        self.t += 1;
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let c1 = 1.0 - f64::powi(b1, self.t);
        let c2 = 1.0 - f64::powi(b2, self.t);
        let ps = p.slices_mut();
        let gs = g.slices_mut();
        let ms = self.m.slices_mut();
        let vs = self.v.slices_mut();
        for (((p, g), m), v) in ps.into_iter().zip(gs).zip(ms).zip(vs) {
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                p[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                g[i] = 0.0;
            }
        }
    }
}

/// What the RL scheduler found: its best placement (or the most throughput it saw), and
/// how many episodes it ran.
pub struct RlOutcome {
    pub result: Result<Placement, f64>,
    pub episodes: usize,
}

/// Trains the policy and returns the best placement it sampled.
pub fn reinforce(solver: &Solver, cfg: &RlConfig) -> RlOutcome {
    let problem = solver.problem;
    let (nl, nk) = (problem.layers.len(), problem.kinds.len());
    let mut rng = Rng(cfg.seed);
    let inputs = (nk + 1) + nk + 1;
    let mut policy = Policy::new(inputs, cfg.hidden.max(1), nk, &mut rng);
    let mut grad = policy.p.zeros_like();
    let mut adam = Adam {
        m: policy.p.zeros_like(),
        v: policy.p.zeros_like(),
        t: 0,
    };
    // Per layer: log cost per sample on each kind, centred.
    let features: Vec<Vec<f64>> = problem
        .layers
        .iter()
        .map(|l| {
            let logs: Vec<f64> = (0..nk)
                .map(|k| {
                    (l.seconds_per_sample[k] * problem.kinds[k].price_per_hour)
                        .max(1e-30)
                        .ln()
                })
                .collect();
            let mean = logs.iter().sum::<f64>() / nk as f64;
            let mut f: Vec<f64> = logs.iter().map(|x| x - mean).collect();
            f.push(if l.sparse { 1.0 } else { 0.0 });
            f
        })
        .collect();
    let mut cache: BTreeMap<Vec<usize>, Result<Placement, f64>> = BTreeMap::new();
    let mut best: Option<Placement> = None;
    let mut most: f64 = 0.0;
    let mut worst_reward: Option<f64> = None;
    let mut baseline: Option<f64> = None;
    let mut episodes = 0;
    for _ in 0..cfg.iterations {
        let mut batch: Vec<(Vec<StepCache>, f64)> = Vec::with_capacity(cfg.batch);
        for _ in 0..cfg.batch.max(1) {
            let (mut h, mut c) = (vec![0.0; policy.hidden], vec![0.0; policy.hidden]);
            let mut prev = nk; // the start symbol
            let mut steps = Vec::with_capacity(nl);
            for f in &features {
                let mut x = vec![0.0; nk + 1];
                x[prev] = 1.0;
                x.extend_from_slice(f);
                let mut s = policy.step(&x, &h, &c);
                let u = rng.unit();
                let mut acc = 0.0;
                s.action = nk - 1;
                for (k, p) in s.probs.iter().enumerate() {
                    acc += p;
                    if u < acc {
                        s.action = k;
                        break;
                    }
                }
                prev = s.action;
                h = s.h.clone();
                c = s.c.clone();
                steps.push(s);
            }
            let kinds: Vec<usize> = steps.iter().map(|s| s.action).collect();
            let outcome = cache
                .entry(kinds.clone())
                .or_insert_with(|| solver.best_replicas(&kinds))
                .clone();
            episodes += 1;
            let reward = match outcome {
                Ok(p) => {
                    let r = -p.cost_per_epoch.max(1e-30).ln();
                    worst_reward = Some(worst_reward.map_or(r, |w: f64| w.min(r)));
                    most = most.max(p.throughput);
                    if best
                        .as_ref()
                        .is_none_or(|b| p.cost_per_epoch < b.cost_per_epoch)
                    {
                        best = Some(p);
                    }
                    r
                }
                Err(m) => {
                    most = most.max(m);
                    worst_reward.map_or(-30.0, |w| w - 1.0)
                }
            };
            batch.push((steps, reward));
        }
        let mean = batch.iter().map(|b| b.1).sum::<f64>() / batch.len() as f64;
        let base = baseline.unwrap_or(mean);
        for (steps, reward) in &batch {
            let adv = (reward - base).clamp(-5.0, 5.0) / batch.len() as f64;
            policy.backward(steps, adv, &mut grad);
        }
        baseline = Some(0.9 * base + 0.1 * mean);
        adam.step(&mut policy.p, &mut grad, cfg.learning_rate);
    }
    RlOutcome {
        result: best.ok_or(most),
        episodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient of one step's log-probability matches finite differences.
    #[test]
    fn policy_gradient_matches_finite_differences() {
        let mut rng = Rng(7);
        let mut policy = Policy::new(3, 4, 3, &mut rng);
        let xs = [[1.0, 0.0, 0.5], [0.0, 1.0, -0.3]];
        let actions = [2usize, 0];
        let loss = |pol: &Policy| -> f64 {
            let (mut h, mut c) = (vec![0.0; 4], vec![0.0; 4]);
            let mut total = 0.0;
            for (x, &a) in xs.iter().zip(&actions) {
                let s = pol.step(x, &h, &c);
                total -= s.probs[a].ln();
                h = s.h;
                c = s.c;
            }
            total
        };
        let (mut h, mut c) = (vec![0.0; 4], vec![0.0; 4]);
        let mut steps = Vec::new();
        for (x, &a) in xs.iter().zip(&actions) {
            let mut s = policy.step(x, &h, &c);
            s.action = a;
            h = s.h.clone();
            c = s.c.clone();
            steps.push(s);
        }
        let mut grad = policy.p.zeros_like();
        policy.backward(&steps, 1.0, &mut grad);
        for i in [0, 5, 17, 40] {
            let eps = 1e-6;
            policy.p.w[i] += eps;
            let up = loss(&policy);
            policy.p.w[i] -= 2.0 * eps;
            let down = loss(&policy);
            policy.p.w[i] += eps;
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (fd - grad.w[i]).abs() < 1e-6,
                "w[{i}]: {fd} vs {}",
                grad.w[i]
            );
        }
        for i in 0..policy.p.v.len() {
            let eps = 1e-6;
            policy.p.v[i] += eps;
            let up = loss(&policy);
            policy.p.v[i] -= 2.0 * eps;
            let down = loss(&policy);
            policy.p.v[i] += eps;
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (fd - grad.v[i]).abs() < 1e-6,
                "v[{i}]: {fd} vs {}",
                grad.v[i]
            );
        }
    }
}
