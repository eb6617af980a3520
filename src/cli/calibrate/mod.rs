//! `oar cluster calibrate -o local.toml`: measures this machine — the f32 FMA peak, oar's
//! compiled GEMM by shape, memory bandwidth, and (when `mpirun` runs) the all-reduce α/β
//! between two local processes — and writes a cluster file whose device carries the
//! measured per-shape efficiency table, in the format of the presets' published tables, so
//! `oar plan MODEL --cluster local.toml` prices work at what this machine reaches.

mod allreduce;
mod probes;

use anyhow::{ensure, Context};
use clap::Args;
use oar::ir::cluster::{
    Cluster, DeviceSpec, EfficiencyTable, GemmPoint, Link, NodeGroup, PeakTflops, ScaleEffects,
};
use oar::ir::dist::DeviceKind;
use oar::ir::DType;
use oar::passes::comm_cost::COMM_EFFICIENCY;
use probes::Budget;
use std::path::PathBuf;
use std::time::Instant;

pub use allreduce::rank_main;

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// The cluster file to write (TOML).
    #[arg(short, long, default_value = "calibrated.toml")]
    output: PathBuf,
    /// A short run (a few seconds, for tests): three GEMM shapes, short timings, small MPI
    /// messages.
    #[arg(long)]
    quick: bool,
    /// Devices per node the planner may place work on (ranks on this machine); each gets
    /// an equal share of the cores, memory and memory bandwidth.
    #[arg(long, default_value_t = 1)]
    devices: u32,
    /// Threads per device (default: the cores divided by `--devices`).
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the MPI all-reduce measurement (the links are then the memory bandwidth).
    #[arg(long)]
    no_mpi: bool,
}

/// Days since 1970-01-01 as a civil date (H. Hinnant's algorithm): the file records when it
/// was measured without a date crate.
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn run(a: CalibrateArgs) -> anyhow::Result<()> {
    ensure!(a.devices >= 1, "--devices must be at least 1");
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = a.threads.unwrap_or((cores / a.devices as usize).max(1));
    ensure!(threads >= 1, "--threads must be at least 1");
    let budget = Budget::new(a.quick);
    let cpu = probes::cpu_name();
    eprintln!("calibrating {cpu}: {cores} cores, {threads} threads per device");

    let (peak, how) = probes::fma_peak(threads, budget);
    eprintln!("  f32 FMA peak       {:8.1} GFLOP/s ({how})", peak / 1e9);

    let mut samples = Vec::new();
    for (m, n, k) in probes::gemm_grid(a.quick) {
        let s = probes::gemm(m, n, k, threads, budget)?;
        eprintln!(
            "  GEMM {:>4}×{:<4}×{:<4} {:8.1} GFLOP/s",
            m,
            n,
            k,
            s.flops_per_s / 1e9
        );
        samples.push(s);
    }
    // A GEMM beats the FMA loop only by timing noise, a clock boost between the two runs, or
    // a probe built without optimisation (a debug build of oar: the GEMM is JIT-compiled at
    // O3 either way); the table must stay within (0, 1], so the peak is the higher of the two.
    let best_gemm = samples.iter().map(|s| s.flops_per_s).fold(0.0, f64::max);
    if best_gemm > peak {
        eprintln!(
            "  peak taken from the best GEMM ({:.1} GFLOP/s): the FMA probe was slower{}",
            best_gemm / 1e9,
            if cfg!(debug_assertions) {
                " (a debug build: use a release build of oar to calibrate)"
            } else {
                ""
            }
        );
    }
    let peak = peak.max(best_gemm);

    let elements = if a.quick { 4 << 20 } else { 16 << 20 };
    let bandwidth = probes::triad_bandwidth(elements, cores, budget);
    eprintln!(
        "  memory (triad)     {:8.1} GB/s ({cores} threads, {} MiB arrays)",
        bandwidth / 1e9,
        (elements * 4) >> 20
    );

    let memory_link = Link {
        kind: "shared memory (not measured: --no-mpi or no mpirun)".into(),
        bandwidth_gbs: bandwidth / 1e9 / a.devices as f64,
        latency_us: 1.0,
    };
    let link = if a.no_mpi || !allreduce::mpirun_available() {
        if !a.no_mpi {
            eprintln!("  all-reduce         skipped: mpirun is not available");
        }
        memory_link
    } else {
        let max_bytes = if a.quick { 256 << 10 } else { 16 << 20 };
        let f = allreduce::measure(max_bytes)?;
        // The planner prices a 2-rank ring as 2α + bytes/(β·e): β = bus bandwidth / e.
        let beta = f.bus_bandwidth / COMM_EFFICIENCY;
        eprintln!(
            "  all-reduce (2 ranks, MpiComm) α {:.1} µs, bus {:.2} GB/s → link {:.2} GB/s at efficiency {COMM_EFFICIENCY}",
            f.alpha * 1e6,
            f.bus_bandwidth / 1e9,
            beta / 1e9
        );
        Link {
            kind: format!(
                "MPI between local processes (measured: {} sizes, {}–{} KiB)",
                f.samples.len(),
                f.samples.first().map_or(0, |s| s.0 >> 10),
                f.samples.last().map_or(0, |s| s.0 >> 10)
            ),
            bandwidth_gbs: beta / 1e9,
            latency_us: f.alpha * 1e6,
        }
    };

    let source = format!(
        "oar cluster calibrate, {date}: {cpu}, {threads} thread(s) per device; oar's f32 GEMM \
         (LLVM JIT), best of {blocks} timed blocks per shape; peak = measured FMA throughput \
         ({how})",
        date = today(),
        blocks = budget.blocks,
    );
    let table = EfficiencyTable {
        source,
        gemm: samples
            .iter()
            .map(|s| GemmPoint {
                dtype: DType::F32,
                m: s.m,
                n: s.n,
                k: s.k,
                efficiency: (s.flops_per_s / peak).clamp(f64::MIN_POSITIVE, 1.0),
            })
            .collect(),
        attention: Vec::new(),
    };
    let device = DeviceSpec {
        kind: DeviceKind::Cpu,
        model: cpu.clone(),
        peak_tflops: PeakTflops {
            f32: Some(peak / 1e12),
            ..Default::default()
        },
        memory_gib: probes::memory_gib().unwrap_or(8.0) / a.devices as f64,
        memory_bandwidth_gbs: bandwidth / 1e9 / a.devices as f64,
        price_per_hour: 0.0,
        efficiency: Some(table),
    };
    let cluster = Cluster {
        name: "calibrated".into(),
        node_groups: vec![NodeGroup {
            name: cpu,
            nodes: 1,
            devices_per_node: a.devices,
            device,
            intra_node: link.clone(),
        }],
        // One machine: the network between nodes is not measured. The local link stands in
        // so the file is complete; edit it for a real cluster.
        inter_node: Link {
            kind: format!("not measured (copy of the local link: {})", link.kind),
            ..link
        },
        scale_effects: ScaleEffects::default(),
    };
    let text = format!(
        "# Written by `oar cluster calibrate{}` in {:.1} s. Figures are this machine's, measured.\n{}",
        if a.quick { " --quick" } else { "" },
        started.elapsed().as_secs_f64(),
        cluster.to_toml()
    );
    let shown = a.output.display().to_string();
    // What is written must load: the planner reads it back through the same validation.
    Cluster::from_toml(&text, &shown).context("the calibrated cluster does not validate")?;
    std::fs::write(&a.output, &text).with_context(|| format!("cannot write {shown}"))?;
    eprintln!(
        "wrote {shown} in {:.1} s: `oar plan MODEL --cluster {shown}` uses it",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(20_789), (2026, 12, 2));
    }
}
