//! The all-reduce α/β of two local processes over oar's `MpiComm`: `oar cluster calibrate`
//! starts itself under `mpirun -n 2` (the hidden `oar cluster calibrate-rank`), reads rank
//! 0's timings and fits the planner's ring model to them.

use anyhow::{bail, Context};
use oar::ir::dist::ReduceOp;
use oar::runtime::comm::{Communicator, MpiComm};
use std::process::Command;
use std::time::Instant;

/// Message sizes timed, bytes: 4 KiB up to `max_bytes` by factors of 4.
fn sizes(max_bytes: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut b = 4 << 10;
    while b <= max_bytes.max(4 << 10) {
        v.push(b);
        b *= 4;
    }
    v
}

/// One rank's part, under mpirun: all-reduces of each size; rank 0 prints
/// `allreduce <bytes> <seconds per call>` (the slowest rank's mean).
pub fn rank_main(max_bytes: usize) -> anyhow::Result<()> {
    let comm = MpiComm::init().context("cannot start MPI (run under mpirun)")?;
    let world: Vec<u64> = (0..comm.world_size()).collect();
    for bytes in sizes(max_bytes) {
        let mut buf: Vec<f32> = (0..bytes / 4)
            .map(|i| ((i as u64 * 2654435761 + comm.rank()) % 1000) as f32 * 1e-3)
            .collect();
        for _ in 0..3 {
            comm.all_reduce(&world, ReduceOp::Sum, &mut buf)?;
        }
        comm.barrier(&world)?;
        let calls = ((16usize << 20) / bytes).clamp(5, 400);
        let t = Instant::now();
        for _ in 0..calls {
            comm.all_reduce(&world, ReduceOp::Sum, &mut buf)?;
        }
        let mut dt = [t.elapsed().as_secs_f32() / calls as f32];
        comm.all_reduce(&world, ReduceOp::Max, &mut dt)?;
        if comm.rank() == 0 {
            println!("allreduce {bytes} {:.9}", dt[0]);
        }
    }
    Ok(())
}

/// The fitted link: what the planner's ring formula needs to reproduce the measurements.
#[derive(Debug, Clone)]
pub struct LinkFit {
    /// (bytes, seconds) as measured.
    pub samples: Vec<(usize, f64)>,
    /// Per-message latency α, seconds.
    pub alpha: f64,
    /// Bus bandwidth reached, bytes/s (what a 2-rank ring moves per second).
    pub bus_bandwidth: f64,
}

/// Whether `mpirun` can be started.
pub fn mpirun_available() -> bool {
    Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the rank program under `mpirun -n 2` and fits α and β: the two-rank ring takes
/// `2α + bytes/β_bus`, so β_bus is the slope between the two largest sizes and α half the
/// smallest size's time less its transfer.
pub fn measure(max_bytes: usize) -> anyhow::Result<LinkFit> {
    let exe = std::env::current_exe().context("cannot find the oar executable")?;
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "2"])
        .arg(&exe)
        .args([
            "cluster",
            "calibrate-rank",
            "--max-bytes",
            &max_bytes.to_string(),
        ])
        .output()
        .context("cannot start mpirun")?;
    if !out.status.success() {
        bail!(
            "mpirun -n 2 oar cluster calibrate-rank failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let samples: Vec<(usize, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "allreduce").then_some(())?;
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    fit(samples)
}

/// α and β from (bytes, seconds) samples of a two-rank all-reduce.
pub fn fit(mut samples: Vec<(usize, f64)>) -> anyhow::Result<LinkFit> {
    samples.sort_by_key(|s| s.0);
    if samples.len() < 2 {
        bail!(
            "the all-reduce run printed {} timings, need 2",
            samples.len()
        );
    }
    let (b1, t1) = samples[samples.len() - 2];
    let (b2, t2) = samples[samples.len() - 1];
    // Noise can make the larger size no slower; then the largest alone bounds β.
    let bus_bandwidth = if t2 > t1 {
        (b2 - b1) as f64 / (t2 - t1)
    } else {
        b2 as f64 / t2
    };
    let (b0, t0) = samples[0];
    let alpha = ((t0 - b0 as f64 / bus_bandwidth) / 2.0).max(1e-7);
    Ok(LinkFit {
        samples,
        alpha,
        bus_bandwidth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_alpha_and_beta_of_an_exact_ring() {
        // 2α + bytes/β with α = 5 µs, β = 2 GB/s.
        let t = |b: usize| 2.0 * 5e-6 + b as f64 / 2e9;
        let samples = sizes(16 << 20).into_iter().map(|b| (b, t(b))).collect();
        let f = fit(samples).unwrap();
        assert!((f.bus_bandwidth / 2e9 - 1.0).abs() < 1e-9, "{f:?}");
        assert!((f.alpha / 5e-6 - 1.0).abs() < 1e-6, "{f:?}");
        assert!(fit(vec![(4096, 1e-5)]).is_err());
    }
}
