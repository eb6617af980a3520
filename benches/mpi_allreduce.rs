//! All-reduce bus bandwidth of oar's `MpiComm` against mpi4py's `Allreduce` on the same
//! machine, 1 KiB … 64 MiB of f32, as a ratio (oar / mpi4py; 1.0 = parity).
//!
//! `cargo bench --bench mpi_allreduce` (or run the bench binary directly) re-launches itself
//! under `mpirun -n $OAR_BENCH_RANKS` (default 2), then runs `benches/mpi_allreduce.py`
//! under the same `mpirun` flags and prints one table. Bus bandwidth is NCCL's definition:
//! `bytes / time · 2(n−1)/n`. oar's figure includes what the timeout machinery costs: the
//! arrival handshake (2(n−1) 16-byte messages), the copies into owned buffers and polling.
//! Skips, saying so, without `mpirun` (or the mpi4py side without mpi4py).

use oar_ir::dist::ReduceOp;
use oar_runtime::comm::{launched_by_mpi, Communicator, MpiComm};
use std::process::Command;
use std::time::Instant;

const SIZES: [usize; 9] = [
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];

/// Calls per size: enough for small sizes to time, few for the large ones.
fn iters(bytes: usize) -> usize {
    ((64 << 20) / bytes.max(1) / 8).clamp(5, 1000)
}

/// One rank's part: prints `oar <bytes> <seconds per call>` lines from rank 0.
fn rank_main() -> Result<(), String> {
    let comm = MpiComm::init().map_err(|e| e.to_string())?;
    let world: Vec<u64> = (0..comm.world_size()).collect();
    for bytes in SIZES {
        let mut buf: Vec<f32> = (0..bytes / 4)
            .map(|i| ((i as u64 * 2654435761 + comm.rank()) % 1000) as f32 * 1e-3)
            .collect();
        for _ in 0..3 {
            comm.all_reduce(&world, ReduceOp::Sum, &mut buf)
                .map_err(|e| e.to_string())?;
        }
        comm.barrier(&world).map_err(|e| e.to_string())?;
        let n = iters(bytes);
        let t = Instant::now();
        for _ in 0..n {
            comm.all_reduce(&world, ReduceOp::Sum, &mut buf)
                .map_err(|e| e.to_string())?;
        }
        let mut dt = [t.elapsed().as_secs_f32() / n as f32];
        comm.all_reduce(&world, ReduceOp::Max, &mut dt)
            .map_err(|e| e.to_string())?;
        if comm.rank() == 0 {
            println!("oar {bytes} {:.9}", dt[0]);
        }
    }
    Ok(())
}

/// `(bytes, seconds)` from lines `<tag> <bytes> <seconds>`.
fn parse(out: &str, tag: &str) -> Vec<(usize, f64)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == tag).then_some(())?;
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

fn mpirun(ranks: &str) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-n", ranks]);
    c
}

fn main() {
    if launched_by_mpi() {
        if let Err(e) = rank_main() {
            eprintln!("mpi_allreduce: {e}");
            std::process::exit(1);
        }
        return;
    }
    let ranks = std::env::var("OAR_BENCH_RANKS").unwrap_or_else(|_| "2".into());
    let n: f64 = ranks.parse().unwrap_or(2.0);
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("mpi_allreduce: cannot find the bench executable");
        return;
    };
    let oar = match mpirun(&ranks).arg(&exe).output() {
        Ok(o) if o.status.success() => parse(&String::from_utf8_lossy(&o.stdout), "oar"),
        Ok(o) => {
            eprintln!(
                "mpi_allreduce: the oar ranks failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("skipped: mpirun is not installed (scripts/setup.sh installs OpenMPI)");
            return;
        }
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mpi_allreduce.py");
    let sizes: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    let reference = match mpirun(&ranks)
        .arg("python3")
        .arg(script)
        .args(&sizes)
        .output()
    {
        Ok(o) if o.status.success() => parse(&String::from_utf8_lossy(&o.stdout), "mpi4py"),
        _ => {
            eprintln!("mpi4py side skipped: `python3 -m pip install mpi4py` (scripts/setup.sh)");
            Vec::new()
        }
    };
    let bus = |bytes: usize, s: f64| bytes as f64 / s * 2.0 * (n - 1.0) / n / 1e9;
    println!("all_reduce f32 sum, {ranks} ranks, bus bandwidth GB/s");
    println!(
        "{:>10} {:>10} {:>10} {:>8}",
        "bytes", "oar", "mpi4py", "ratio"
    );
    for (bytes, s) in oar {
        let r = reference.iter().find(|(b, _)| *b == bytes).map(|&(_, t)| t);
        let (refbw, ratio) = match r {
            Some(t) => (format!("{:.3}", bus(bytes, t)), format!("{:.2}", t / s)),
            None => ("-".into(), "-".into()),
        };
        println!("{bytes:>10} {:>10.3} {refbw:>10} {ratio:>8}", bus(bytes, s));
    }
}
