//! The planner's fault model: with nodes failing at random (exponential, a mean time
//! between failures per node) and checkpoints that cost time to save and load, the
//! checkpoint interval that wastes least (Young 1974; Daly 2006), the expected goodput with
//! and without fault tolerance, and a seeded Monte-Carlo over many jobs of the planned
//! length that counts the jobs that fail outright.
//!
//! Notation: `M` the job's mean time between failures (a node's over the node count), `δ`
//! the checkpoint save time, `R` the restart time (load plus relaunch), `τ` the interval of
//! useful work between checkpoints, `T` the job's failure-free work.

use serde::Serialize;

/// What the fault model is given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultInputs {
    /// Mean time between failures of one node, hours.
    pub node_mtbf_hours: f64,
    pub nodes: u64,
    /// Checkpoint bytes one node writes (its devices' parameters and optimizer states).
    pub checkpoint_bytes_per_node: f64,
    /// Checkpoint write and read bandwidth of one node, GB/s.
    pub checkpoint_bandwidth_gbs: f64,
    /// Relaunch time beyond loading the checkpoint (scheduling, process start, NCCL), s.
    pub relaunch_seconds: f64,
    /// Failure-free length of the job, hours.
    pub job_hours: f64,
    /// Restarts a fault-tolerant job may use before it counts as failed.
    pub max_restarts: u32,
}

/// The fault model's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultReport {
    pub inputs: FaultInputs,
    /// `M`, hours.
    pub job_mtbf_hours: f64,
    /// `δ`, seconds.
    pub checkpoint_seconds: f64,
    /// `R`, seconds.
    pub restart_seconds: f64,
    /// Young's interval `√(2δM)`, seconds.
    pub young_interval_s: f64,
    /// Daly's interval `√(2δM) − δ` (for `δ < M/2`, else `M`), seconds: the one used.
    pub daly_interval_s: f64,
    /// Useful work over wall time with checkpoints every `τ` and restarts.
    pub goodput_with_restarts: f64,
    /// Useful work over wall time when every failure restarts the job from the beginning.
    pub goodput_without_fault_tolerance: f64,
    /// Probability that a job without restarts finishes: `e^(−T/M)`.
    pub survival_without_restarts: f64,
    pub simulation: Option<Simulation>,
}

/// The Monte-Carlo result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Simulation {
    pub jobs: u64,
    pub seed: u64,
    /// Jobs that meet a failure before finishing, with no restarts.
    pub failed_without_restarts: f64,
    /// Jobs that need more than `max_restarts` restarts.
    pub failed_with_restarts: f64,
    /// `1 − with / without`: the relative reduction in failed jobs.
    pub reduction: f64,
    /// Mean failures per job (fault tolerant).
    pub mean_failures: f64,
    /// Useful work over wall time of the fault-tolerant jobs that finished.
    pub simulated_goodput: f64,
}

/// Daly's optimal interval of useful work between checkpoints (first order,
/// "A higher order estimate of the optimum checkpoint interval", FGCS 2006).
pub fn daly_interval(delta: f64, mtbf: f64) -> f64 {
    if delta >= mtbf / 2.0 {
        mtbf
    } else {
        (2.0 * delta * mtbf).sqrt() - delta
    }
}

/// Young's interval `√(2δM)` ("A first order approximation to the optimum checkpoint
/// interval", CACM 1974).
pub fn young_interval(delta: f64, mtbf: f64) -> f64 {
    (2.0 * delta * mtbf).sqrt()
}

/// Expected wall time of `work` seconds with checkpoints every `tau` costing `delta`,
/// restarts costing `restart`, exponential failures of mean `mtbf` (Daly 2006, eq. 13):
/// `M·e^(R/M)·(e^((τ+δ)/M) − 1)·T/τ`.
pub fn expected_wall_time(work: f64, tau: f64, delta: f64, restart: f64, mtbf: f64) -> f64 {
    mtbf * (restart / mtbf).exp() * (((tau + delta) / mtbf).exp() - 1.0) * work / tau
}

/// Expected wall time when every failure restarts `work` from the beginning after `restart`
/// seconds: `(M + R)·(e^(T/M) − 1)`.
pub fn expected_wall_time_from_scratch(work: f64, restart: f64, mtbf: f64) -> f64 {
    (mtbf + restart) * ((work / mtbf).exp_m1())
}

/// SplitMix64: a small seeded generator, so a simulation is reproducible from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponential variate of the given mean.
    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }
}

/// One job's figures, seconds: work `T`, interval `τ`, save `δ`, restart `R`, MTBF `M`.
struct Cycle {
    work: f64,
    tau: f64,
    delta: f64,
    restart: f64,
    mtbf: f64,
}

/// Simulates `jobs` jobs (see [`Simulation`]).
fn simulate(c: &Cycle, max_restarts: u32, jobs: u64, seed: u64) -> Simulation {
    let Cycle {
        work,
        tau,
        delta,
        restart,
        mtbf,
    } = *c;
    let mut rng = SplitMix64(seed);
    let (mut failed_plain, mut failed_ft, mut failures) = (0u64, 0u64, 0u64);
    let (mut useful, mut wall) = (0.0, 0.0);
    for _ in 0..jobs {
        // Without restarts the first failure ends the job.
        if rng.exponential(mtbf) < work {
            failed_plain += 1;
        }
        let (mut done, mut elapsed, mut restarts) = (0.0f64, 0.0f64, 0u32);
        loop {
            let left = work - done;
            // Wall time to finish: the work plus a checkpoint after each full interval.
            let needed = left + delta * (left / tau).ceil().max(1.0) - delta;
            let fail_at = rng.exponential(mtbf);
            if fail_at >= needed {
                elapsed += needed;
                useful += work;
                wall += elapsed;
                break;
            }
            failures += 1;
            // Work up to the last completed checkpoint survives.
            done += (fail_at / (tau + delta)).floor() * tau;
            elapsed += fail_at + restart;
            restarts += 1;
            if restarts > max_restarts {
                failed_ft += 1;
                break;
            }
        }
    }
    let n = jobs.max(1) as f64;
    let without = failed_plain as f64 / n;
    let with = failed_ft as f64 / n;
    Simulation {
        jobs,
        seed,
        failed_without_restarts: without,
        failed_with_restarts: with,
        reduction: if without > 0.0 {
            1.0 - with / without
        } else {
            0.0
        },
        mean_failures: failures as f64 / n,
        simulated_goodput: if wall > 0.0 { useful / wall } else { 0.0 },
    }
}

/// The fault model for `inputs`, with a simulation of `jobs` jobs when asked.
pub fn fault_report(inputs: &FaultInputs, jobs: Option<u64>, seed: u64) -> FaultReport {
    let mtbf = inputs.node_mtbf_hours * 3600.0 / inputs.nodes.max(1) as f64;
    let bandwidth = inputs.checkpoint_bandwidth_gbs * 1e9;
    let delta = inputs.checkpoint_bytes_per_node / bandwidth;
    let restart = delta + inputs.relaunch_seconds;
    let work = inputs.job_hours * 3600.0;
    let tau = daly_interval(delta, mtbf).max(1e-9);
    FaultReport {
        inputs: inputs.clone(),
        job_mtbf_hours: mtbf / 3600.0,
        checkpoint_seconds: delta,
        restart_seconds: restart,
        young_interval_s: young_interval(delta, mtbf),
        daly_interval_s: tau,
        goodput_with_restarts: work / expected_wall_time(work, tau, delta, restart, mtbf),
        goodput_without_fault_tolerance: work
            / expected_wall_time_from_scratch(work, inputs.relaunch_seconds, mtbf),
        survival_without_restarts: (-work / mtbf).exp(),
        simulation: jobs.map(|j| {
            let cycle = Cycle {
                work,
                tau,
                delta,
                restart,
                mtbf,
            };
            simulate(&cycle, inputs.max_restarts, j, seed)
        }),
    }
}

impl FaultReport {
    /// Lines of the text report.
    fn lines(&self) -> Vec<(String, String)> {
        let i = &self.inputs;
        let pct = |v: f64| format!("{:.2}%", v * 100.0);
        let mut v = vec![
            (
                "node MTBF, nodes".to_string(),
                format!(
                    "{:.0} h x {} nodes: job MTBF {:.2} h",
                    i.node_mtbf_hours, i.nodes, self.job_mtbf_hours
                ),
            ),
            (
                "checkpoint".into(),
                format!(
                    "{:.1} GB per node at {:.1} GB/s: save {:.1} s, restart {:.1} s",
                    i.checkpoint_bytes_per_node / 1e9,
                    i.checkpoint_bandwidth_gbs,
                    self.checkpoint_seconds,
                    self.restart_seconds
                ),
            ),
            (
                "checkpoint interval".into(),
                format!(
                    "{:.1} min (Daly; Young {:.1} min)",
                    self.daly_interval_s / 60.0,
                    self.young_interval_s / 60.0
                ),
            ),
            (
                "job length".into(),
                format!("{:.1} h of failure-free work", i.job_hours),
            ),
            (
                "goodput with restarts".into(),
                pct(self.goodput_with_restarts),
            ),
            (
                "goodput from scratch".into(),
                pct(self.goodput_without_fault_tolerance),
            ),
            (
                "jobs finishing without restarts".into(),
                pct(self.survival_without_restarts),
            ),
        ];
        if let Some(s) = &self.simulation {
            v.push((
                format!("simulated jobs (seed {})", s.seed),
                format!(
                    "{}: {} fail without restarts, {} with up to {} restarts ({} fewer); {:.1} failures per job, goodput {}",
                    s.jobs,
                    pct(s.failed_without_restarts),
                    pct(s.failed_with_restarts),
                    i.max_restarts,
                    pct(s.reduction),
                    s.mean_failures,
                    pct(s.simulated_goodput)
                ),
            ));
        }
        v
    }

    /// The plain-text section of `oar plan`.
    pub fn text(&self) -> String {
        let mut s = String::from("fault model\n");
        for (k, v) in self.lines() {
            s.push_str(&format!("  {k:<32} {v}\n"));
        }
        s
    }

    /// The Markdown section of `oar plan --format md`.
    pub fn markdown(&self) -> String {
        let mut s = String::from("## Fault model\n\n| figure | value |\n| --- | --- |\n");
        for (k, v) in self.lines() {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> FaultInputs {
        FaultInputs {
            node_mtbf_hours: 5000.0,
            nodes: 128,
            checkpoint_bytes_per_node: 200e9,
            checkpoint_bandwidth_gbs: 2.0,
            relaunch_seconds: 300.0,
            job_hours: 24.0 * 30.0,
            max_restarts: 3,
        }
    }

    #[test]
    fn young_and_daly_intervals() {
        // δ = 100 s, M = 10⁵ s: √(2·100·10⁵) = 4472.1 s; Daly subtracts δ.
        assert!((young_interval(100.0, 1e5) - 4472.136).abs() < 1e-3);
        assert!((daly_interval(100.0, 1e5) - 4372.136).abs() < 1e-3);
        // A checkpoint longer than half the MTBF: checkpoint once per MTBF.
        assert_eq!(daly_interval(6e4, 1e5), 1e5);
        // Daly's interval minimises his expected wall time among its neighbours.
        let best = daly_interval(100.0, 1e5);
        let at = |tau: f64| expected_wall_time(1e6, tau, 100.0, 300.0, 1e5);
        assert!(at(best) <= at(best * 0.8) && at(best) <= at(best * 1.25));
    }

    #[test]
    fn goodput_limits() {
        // No failures (huge MTBF): goodput tends to 1 without fault tolerance and loses only
        // the checkpoints with it.
        let mut i = inputs();
        i.node_mtbf_hours = 1e12;
        let r = fault_report(&i, None, 1);
        assert!(r.goodput_without_fault_tolerance > 0.999999);
        assert!(r.goodput_with_restarts > 0.99 && r.goodput_with_restarts < 1.0);
        assert!(r.survival_without_restarts > 0.999999);
        // A 30-day job on 128 nodes of 5,000 h MTBF meets ~18 failures: from scratch it
        // practically never ends; with checkpoints it keeps most of its time.
        let r = fault_report(&inputs(), None, 1);
        assert!((r.job_mtbf_hours - 5000.0 / 128.0).abs() < 1e-9);
        assert!((r.checkpoint_seconds - 100.0).abs() < 1e-9);
        assert!(r.goodput_without_fault_tolerance < 1e-3, "{r:?}");
        assert!(r.goodput_with_restarts > 0.9, "{r:?}");
    }

    #[test]
    fn simulation_matches_the_closed_forms_and_is_seeded() {
        let mut i = inputs();
        i.job_hours = 24.0; // a day: about 60% of jobs meet a failure
        i.max_restarts = 1_000;
        let r = fault_report(&i, Some(20_000), 7);
        let s = r.simulation.clone().unwrap();
        let expect_fail = 1.0 - r.survival_without_restarts;
        assert!(
            (s.failed_without_restarts - expect_fail).abs() < 0.02,
            "{s:?}"
        );
        assert_eq!(s.failed_with_restarts, 0.0);
        assert_eq!(s.reduction, 1.0);
        assert!(
            (s.simulated_goodput - r.goodput_with_restarts).abs() < 0.01,
            "{s:?} {r:?}"
        );
        assert_eq!(fault_report(&i, Some(20_000), 7), r);
        assert_ne!(fault_report(&i, Some(20_000), 8).simulation, r.simulation);
        // Few restarts allowed on a long job: some fault-tolerant jobs fail too.
        let mut long = inputs();
        long.max_restarts = 10;
        let s = fault_report(&long, Some(5_000), 7).simulation.unwrap();
        assert!(s.failed_with_restarts > 0.0 && s.failed_with_restarts < s.failed_without_restarts);
        assert!(s.reduction > 0.0 && s.reduction < 1.0, "{s:?}");
    }
}
