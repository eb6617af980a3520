//! Helpers for the fault-tolerance tests (`train_fault.rs`, `train_elastic.rs`): the tiny
//! ERNIE data-parallel command, a seeded random source, the supervisor's heartbeats and
//! events, and SIGKILL of a rank found through its heartbeat.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::cli_util::mpirun_available;

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oar-ft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// One heartbeat: (rank, pid, steps completed).
pub type Beat = (u64, i32, u64);

/// The shape of a training run: ranks, global batch, steps, save interval.
#[derive(Clone, Copy)]
pub struct Job {
    pub dp: u64,
    pub batch: u64,
    pub steps: u64,
    pub every: u64,
}

impl Job {
    pub fn new(dp: u64, batch: u64, steps: u64, every: u64) -> Job {
        Job {
            dp,
            batch,
            steps,
            every,
        }
    }
}

/// `train ernie-3.0-tiny` (1 layer, hidden 32, dropout 0.1) on the corpus as `job` says,
/// checkpoints under `dir/save`, log `dir/log`.
pub fn train_args(data: &Path, dir: &Path, save: &str, log: &str, job: Job) -> Vec<String> {
    let Job {
        dp,
        batch,
        steps,
        every,
    } = job;
    let p = |x: &Path| x.display().to_string();
    let mut a: Vec<String> = crate::cli_util::TINY_ERNIE_TRAIN
        .iter()
        .map(|x| x.to_string())
        .collect();
    for (k, v) in [
        ("--batch", batch.to_string()),
        ("--steps", steps.to_string()),
        ("--save-every", every.to_string()),
        ("--dp", dp.to_string()),
        ("--data", p(data)),
        ("--vocab", p(&dir.join("vocab.txt"))),
        ("--save", p(&dir.join(save))),
        ("--log", p(&dir.join(log))),
    ] {
        a.extend([k.to_string(), v]);
    }
    a
}

/// `oar launch` arguments: `opts`, the heartbeat folder `dir/hb`, the events file
/// `dir/events.jsonl`, then `--` and the training command.
pub fn supervised(dir: &Path, opts: &[&str], train: Vec<String>) -> Vec<String> {
    let mut a: Vec<String> = opts.iter().map(|x| x.to_string()).collect();
    a.extend([
        "--heartbeat-dir".into(),
        s(&dir.join("hb")),
        "--events".into(),
        s(&dir.join("events.jsonl")),
        "--".into(),
    ]);
    a.extend(train);
    a
}

/// xorshift64*, seeded from the clock unless `OAR_FT_SEED` is set; the seed is printed so a
/// failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("OAR_FT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("fault-injection seed {seed} (repeat with OAR_FT_SEED={seed})");
        Rng(seed | 1)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (hi - lo + 1)
    }
}

/// The newest `attempt-<n>` heartbeat folder: n and its (rank, pid, step) records.
pub fn newest_attempt(hb: &Path) -> Option<(u64, Vec<Beat>)> {
    let n = std::fs::read_dir(hb)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("attempt-")?
                .parse()
                .ok()
        })
        .max()?;
    let dir = hb.join(format!("attempt-{n}"));
    let mut beats = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        if !e.file_name().to_string_lossy().starts_with("rank-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let (Some(r), Some(p), Some(s)) =
            (v["rank"].as_u64(), v["pid"].as_u64(), v["step"].as_u64())
        {
            beats.push((r, p as i32, s));
        }
    }
    beats.sort_unstable();
    Some((n, beats))
}

/// SIGKILLs `pid` (a rank this test's launcher started).
pub fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a pid read from a heartbeat of this test's own job.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// SIGSTOPs `pid`: the rank stays alive but stops taking steps (a hang).
pub fn sigstop(pid: i32) {
    // SAFETY: kill(2) on a pid read from a heartbeat of this test's own job.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
}

/// The supervisor's events of one kind.
pub fn events(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// `oar launch ARGS` started in the background, its output to `out` (a file, not a pipe
/// nobody drains).
pub fn launch(args: &[String], out: &Path) -> std::process::Child {
    let f = std::fs::File::create(out).expect("output file");
    let g = f.try_clone().expect("output file");
    Command::new(env!("CARGO_BIN_EXE_oar"))
        .arg("launch")
        .args(args)
        .stdout(f)
        .stderr(g)
        .spawn()
        .expect("start oar launch")
}

pub fn s(x: &Path) -> String {
    x.display().to_string()
}
