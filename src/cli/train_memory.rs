//! The memory figures `oar train` reports at the end of a run: the compiled step's planned
//! peak (`CompiledRunner::planned_bytes`: every buffer of its storage plan plus each
//! thread's GEMM scratch, all allocated at once) beside the process's measured peak
//! resident set while training (`VmHWM`, reset once the step is built so LLVM's compile-time
//! peak is not counted; it also counts the loop's copy of the weights, the data set, the
//! executable code and the allocator's slack), on stdout and as a `memory` log line.

use serde_json::json;
use std::io::Write;
use std::path::Path;

/// The process's peak resident set in bytes (`VmHWM` of `/proc/self/status`); `None` where
/// the kernel does not report it.
pub(super) fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// The resident set now (`VmRSS`), bytes, after resetting the peak to it (`clear_refs` 5,
/// Linux ≥ 4.0), so a later [`peak_rss_bytes`] measures from here on.
pub(super) fn reset_peak() -> Option<u64> {
    // Best effort: without the reset the peak includes the step's compilation.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:").map(|k| k * 1024)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(bytes: f64) -> f64 {
    bytes / (1u64 << 20) as f64
}

/// Prints the planned and measured peaks and appends `{"kind":"memory","planned_bytes":P,
/// "peak_rss_bytes":R,"start_rss_bytes":S}` to the log (`null` for what is unknown: no plan
/// when the interpreter ran the step). `start` is [`reset_peak`]'s figure.
pub(super) fn report(
    planned: Option<usize>,
    start: Option<u64>,
    log: Option<&Path>,
) -> anyhow::Result<()> {
    let rss = peak_rss_bytes();
    let plan = planned.map_or("no compiled plan (interpreter)".to_string(), |p| {
        format!("compiled step planned {:.1} MiB", mib(p as f64))
    });
    let measured = rss.map_or("peak RSS unknown".to_string(), |r| {
        let at_start = start.map_or(String::new(), |s| {
            format!(" ({:.1} MiB resident when training started)", mib(s as f64))
        });
        format!(
            "process peak RSS while training {:.1} MiB{at_start}",
            mib(r as f64)
        )
    });
    println!("memory: {plan}; {measured}");
    if let Some(path) = log {
        let line = json!({
            "kind": "memory",
            "planned_bytes": planned,
            "peak_rss_bytes": rss,
            "start_rss_bytes": start,
        });
        // The loop's log is closed by now; append after its last line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
