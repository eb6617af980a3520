//! The memory figures `oar train` reports at the end of a run: the compiled step's planned
//! peak (`CompiledRunner::planned_bytes`: every buffer of its storage plan plus each
//! thread's GEMM scratch, all allocated at once) beside the process's measured peak
//! resident set (`VmHWM`, which also counts the loop's copy of the weights, the data set,
//! the executable code and the allocator's slack), on stdout and as a `memory` log line.

use serde_json::json;
use std::io::Write;
use std::path::Path;

/// The process's peak resident set in bytes (`VmHWM` of `/proc/self/status`); `None` where
/// the kernel does not report it.
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: f64) -> f64 {
    bytes / (1u64 << 20) as f64
}

/// Prints the planned and measured peaks and appends
/// `{"kind":"memory","planned_bytes":P,"peak_rss_bytes":R}` to the log (`null` for what is
/// unknown: no plan when the interpreter ran the step).
pub(super) fn report(planned: Option<usize>, log: Option<&Path>) -> anyhow::Result<()> {
    let rss = peak_rss_bytes();
    let plan = planned.map_or("no compiled plan (interpreter)".to_string(), |p| {
        format!("compiled step planned {:.1} MiB", mib(p as f64))
    });
    let measured = rss.map_or("peak RSS unknown".to_string(), |r| {
        format!("process peak RSS {:.1} MiB", mib(r as f64))
    });
    println!("memory: {plan}; {measured}");
    if let Some(path) = log {
        let line = json!({"kind": "memory", "planned_bytes": planned, "peak_rss_bytes": rss});
        // The loop's log is closed by now; append after its last line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
