//! `oar launch --max-restarts R`: runs `mpirun` as a child in its own process group, watches
//! it, and restarts the whole job from the last checkpoint when it fails.
//!
//! A failure is either mpirun exiting non-zero (OpenMPI ends the job when a rank dies: it
//! prints `mpirun noticed that process rank 1 with PID … exited on signal 9`, which names
//! the rank) or a hang: every rank rewrites `rank-<r>.json` in the heartbeat folder after
//! each step (`OAR_HEARTBEAT_DIR`, a fresh `attempt-<n>` folder per start), and when none
//! changes for `--hang-timeout` seconds the launcher kills the process group and the ranks
//! the heartbeats name. A restart appends `--resume <--save dir>` (the loader takes the
//! newest checkpoint there), or starts from scratch when there is none yet.
//!
//! Elastic runs re-read the slots file before each start and choose the world size
//! ([`replan::choose_world`]); while a job runs, a slots file offering a larger world makes
//! the launcher wait for the job's next checkpoint, stop it and restart it larger (a
//! `replan` event, not counted as a failure).

use super::replan::{choose_world, flag_value, rank_command, read_slots};
use super::{mpirun_command, LaunchArgs};
use anyhow::{bail, Context};
use oar::runtime::io::checkpoint::list_checkpoints;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The heartbeat folder variable the ranks read (`oar train`'s `dist::HEARTBEAT_ENV`).
const HEARTBEAT_ENV: &str = "OAR_HEARTBEAT_DIR";
const POLL: Duration = Duration::from_millis(100);

/// JSON lines, one per event, flushed as written (a reader follows the file live).
struct Events {
    file: Option<std::fs::File>,
    start: Instant,
}

impl Events {
    fn emit(&mut self, event: &str, mut fields: Value) -> anyhow::Result<()> {
        if let Some(o) = fields.as_object_mut() {
            o.insert("event".into(), event.into());
            o.insert("t".into(), json!(self.start.elapsed().as_secs_f64()));
        }
        let line = fields.to_string();
        eprintln!("oar launch: {line}");
        if let Some(f) = &mut self.file {
            writeln!(f, "{line}").context("cannot write the events file")?;
            f.flush().context("cannot write the events file")?;
        }
        Ok(())
    }
}

/// How one start of the job ended.
enum Outcome {
    Done,
    /// mpirun exited non-zero; what its stderr said about the first lost rank.
    Failed {
        status: String,
        lost: Option<Lost>,
    },
    Hung,
    /// Stopped at a checkpoint to restart on more ranks.
    Grow(u64),
}

/// The rank mpirun reported lost, from its stderr.
#[derive(Debug, Clone, PartialEq)]
struct Lost {
    rank: u64,
    signal: Option<u64>,
}

/// Reads OpenMPI's report of the first failed rank from one line of mpirun's stderr:
/// `mpirun noticed that process rank 1 with PID 7 on node h exited on signal 9 (Killed).`
/// or `MPI_ABORT was invoked on rank 2 in communicator ...`.
fn parse_lost(line: &str) -> Option<Lost> {
    let num_after = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    if line.contains("mpirun noticed that process rank") {
        return Some(Lost {
            rank: num_after("process rank ")?,
            signal: num_after("exited on signal "),
        });
    }
    if line.contains("MPI_ABORT was invoked on rank") {
        return Some(Lost {
            rank: num_after("invoked on rank ")?,
            signal: None,
        });
    }
    None
}

/// The ranks' heartbeats in `dir`: (rank, pid, step) each.
fn heartbeats(dir: &Path) -> Vec<(u64, i32, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, i32, u64)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rank-"))
        .filter_map(|e| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
            Some((
                v["rank"].as_u64()?,
                i32::try_from(v["pid"].as_u64()?).ok()?,
                v["step"].as_u64()?,
            ))
        })
        .collect();
    out.sort_unstable();
    out
}

/// The newest checkpoint's step under `root`, if any.
fn newest_checkpoint(root: Option<&Path>) -> Option<u64> {
    list_checkpoints(root?).ok()?.last().map(|(s, _)| *s)
}

/// Ends a job: SIGKILLs the ranks the heartbeats name (OpenMPI starts each rank in its own
/// process group, so they are not in mpirun's), asks mpirun to end the rest (SIGTERM: it
/// kills ranks that never sent a heartbeat), and SIGKILLs mpirun's group if it has not
/// exited within a few seconds.
fn stop_job(child: &mut Child, pids: &[i32]) {
    let Ok(pgid) = i32::try_from(child.id()) else {
        let _ = child.kill();
        return;
    };
    // SAFETY: kill(2) takes plain integers; a pid that has already exited yields ESRCH,
    // which is ignored (these are our own children and their ranks).
    unsafe {
        for &p in pids {
            libc::kill(p, libc::SIGKILL);
        }
        libc::kill(pgid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(POLL);
    }
    // SAFETY: as above; the negative pid names mpirun's own process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
}

pub struct Supervisor {
    pub args: LaunchArgs,
    pub exe: String,
    pub root: bool,
    pub cores: u64,
}

impl Supervisor {
    /// `(min, max)` ranks: `--min-ranks`/`--max-ranks`, each defaulting to `-n`.
    fn bounds(&self) -> anyhow::Result<(u64, u64)> {
        let a = &self.args;
        let max = a
            .max_ranks
            .or(a.ranks)
            .context("give -n N or --max-ranks B")?;
        let min = a.min_ranks.unwrap_or(max);
        if min == 0 || min > max {
            bail!("need 1 <= --min-ranks ({min}) <= --max-ranks ({max})");
        }
        Ok((min, max))
    }

    /// The world size for the next start, or why there is none now.
    fn world(&self, batch: Option<u64>) -> Result<u64, String> {
        let (min, max) = self.bounds().map_err(|e| e.to_string())?;
        let available = match &self.args.slots {
            Some(f) => read_slots(f)?,
            None => max,
        };
        choose_world(min, max, available, batch).ok_or_else(|| {
            format!(
                "{available} slots offer no world size in {min}..={max} dividing --batch {}",
                batch.map_or("?".into(), |b| b.to_string())
            )
        })
    }

    /// Waits (re-reading the slots file each second) until a world size qualifies.
    fn wait_for_world(&self, ev: &mut Events, batch: Option<u64>) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.wait_slots);
        let mut said = false;
        loop {
            match self.world(batch) {
                Ok(w) => return Ok(w),
                Err(e) if Instant::now() >= deadline => bail!("gave up waiting for ranks: {e}"),
                Err(e) => {
                    if !said {
                        ev.emit("waiting", json!({ "reason": e }))?;
                        said = true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    pub fn run(&self) -> anyhow::Result<()> {
        let a = &self.args;
        for (name, v) in [
            ("--hang-timeout", a.hang_timeout),
            ("--wait-slots", a.wait_slots),
        ] {
            // Durations from user input: Duration::from_secs_f64 refuses NaN and negatives.
            if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
                bail!("{name} {v}: give seconds between 0 and 1e9");
            }
        }
        let mut ev = Events {
            file: match &a.events {
                Some(p) => Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?,
                ),
                None => None,
            },
            start: Instant::now(),
        };
        let save = flag_value(&a.command, "--save").map(PathBuf::from);
        if save.is_none() {
            eprintln!(
                "oar launch: the command has no --save DIR: every restart starts from scratch"
            );
        }
        let batch = flag_value(&a.command, "--batch").and_then(|b| b.parse::<u64>().ok());
        // A checkpoint at --steps is the run's last: nothing is left to restart.
        let steps = flag_value(&a.command, "--steps").and_then(|b| b.parse::<u64>().ok());
        let finished = |ck: Option<u64>| matches!((ck, steps), (Some(c), Some(s)) if c >= s);
        let hb_root = a.heartbeat_dir.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("oar-launch-{}", std::process::id()))
        });
        let max_restarts = a.max_restarts.unwrap_or(0);
        let (mut restarts, mut attempt) = (0u32, 0u32);
        loop {
            let world = self.wait_for_world(&mut ev, batch)?;
            let from = newest_checkpoint(save.as_deref());
            let cmd = rank_command(&a.command, from.and(save.as_deref()), world);
            let hb = hb_root.join(format!("attempt-{attempt}"));
            std::fs::create_dir_all(&hb)
                .with_context(|| format!("cannot create {}", hb.display()))?;
            ev.emit(
                "start",
                json!({"attempt": attempt, "world": world, "from_step": from.unwrap_or(0),
                       "resume": from.is_some(), "command": cmd.join(" ")}),
            )?;
            let (outcome, reached) =
                self.run_once(&cmd, world, &hb, save.as_deref(), batch, steps)?;
            let resumed_at = from.unwrap_or(0);
            match outcome {
                Outcome::Done => {
                    ev.emit(
                        "done",
                        json!({"attempts": attempt + 1, "restarts": restarts, "step": reached}),
                    )?;
                    // Only what this launcher created: --heartbeat-dir may hold other files.
                    for n in 0..=attempt {
                        let _ = std::fs::remove_dir_all(hb_root.join(format!("attempt-{n}")));
                    }
                    let _ = std::fs::remove_dir(&hb_root);
                    return Ok(());
                }
                Outcome::Grow(to) => {
                    ev.emit(
                        "replan",
                        json!({"attempt": attempt, "from_world": world, "to_world": to,
                               "step": reached}),
                    )?;
                }
                Outcome::Failed { .. } | Outcome::Hung => {
                    let (reason, status, rank, signal) = match &outcome {
                        Outcome::Failed { status, lost } => (
                            "exited",
                            status.clone(),
                            lost.as_ref().map(|l| l.rank),
                            lost.as_ref().and_then(|l| l.signal),
                        ),
                        _ => ("hang", "killed by the launcher".to_string(), None, None),
                    };
                    ev.emit(
                        "failure",
                        json!({"attempt": attempt, "reason": reason, "rank": rank, "signal": signal,
                               "status": status, "world": world, "step": reached,
                               "started_at": resumed_at}),
                    )?;
                    if finished(newest_checkpoint(save.as_deref())) {
                        // It died after its final checkpoint (shutting down): the run is done.
                        ev.emit(
                            "done",
                            json!({"attempts": attempt + 1, "restarts": restarts, "step": reached}),
                        )?;
                        return Ok(());
                    }
                    if restarts >= max_restarts {
                        ev.emit("gave_up", json!({"restarts": restarts}))?;
                        bail!("the job failed ({reason}: {status}) after {restarts} restarts");
                    }
                    restarts += 1;
                    let ck = newest_checkpoint(save.as_deref());
                    ev.emit(
                        "restart",
                        json!({"restart": restarts, "from_step": ck.unwrap_or(0),
                        "recomputed": reached.saturating_sub(ck.unwrap_or(0))}),
                    )?;
                }
            }
            attempt += 1;
        }
    }

    /// Starts mpirun once and watches it; returns how it ended and the highest step a
    /// heartbeat reported.
    fn run_once(
        &self,
        cmd: &[String],
        world: u64,
        hb: &Path,
        save: Option<&Path>,
        batch: Option<u64>,
        steps: Option<u64>,
    ) -> anyhow::Result<(Outcome, u64)> {
        let mut line = mpirun_command(&self.args, world, &self.exe, self.root, self.cores);
        // The user's command, rewritten for this start, replaces the one mpirun_command added.
        line.truncate(line.len() - self.args.command.len());
        line.extend(cmd.iter().cloned());
        // Export the heartbeat folder to ranks on other hosts too (it must be shared there).
        line.splice(1..1, ["-x".to_string(), HEARTBEAT_ENV.to_string()]);
        let mut child = Command::new(&line[0])
            .args(&line[1..])
            .env(HEARTBEAT_ENV, hb)
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("cannot start mpirun: install OpenMPI (scripts/setup.sh does)")?;
        let lost = relay_stderr(&mut child);
        let hang = Duration::from_secs_f64(self.args.hang_timeout);
        let (mut last_seen, mut last_change) = (Vec::new(), Instant::now());
        let mut grow: Option<(u64, Option<u64>)> = None;
        loop {
            if let Some(status) = child.try_wait().context("cannot wait for mpirun")? {
                let reached = heartbeats(hb).iter().map(|h| h.2).max().unwrap_or(0);
                if status.success() {
                    return Ok((Outcome::Done, reached));
                }
                // The relay thread has seen all of stderr once mpirun closed it.
                std::thread::sleep(POLL);
                let lost = lost.lock().map(|l| l.clone()).unwrap_or(None);
                return Ok((
                    Outcome::Failed {
                        status: status.to_string(),
                        lost,
                    },
                    reached,
                ));
            }
            let beats = heartbeats(hb);
            if beats != last_seen {
                last_seen = beats;
                last_change = Instant::now();
            }
            let stop = if last_change.elapsed() > hang {
                Some(Outcome::Hung)
            } else {
                // Re-read the slots (a few bytes) at every poll, so a short job still sees a
                // rank come back; a larger world waits for the next checkpoint.
                if let Ok(w) = self.world(batch) {
                    grow = match grow {
                        // Still the same offer: keep the checkpoint it was first seen at.
                        Some((g, at)) if g == w => Some((g, at)),
                        _ => (w > world).then(|| (w, newest_checkpoint(save))),
                    };
                }
                // Not at the final checkpoint: the job is about to end there anyway.
                let newest = newest_checkpoint(save);
                match grow {
                    Some((w, at)) if newest > at && steps.is_none_or(|s| newest < Some(s)) => {
                        Some(Outcome::Grow(w))
                    }
                    _ => None,
                }
            };
            if let Some(o) = stop {
                let pids: Vec<i32> = last_seen.iter().map(|h| h.1).collect();
                stop_job(&mut child, &pids);
                let reached = last_seen.iter().map(|h| h.2).max().unwrap_or(0);
                return Ok((o, reached));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Copies mpirun's stderr to ours line by line, keeping the first lost rank it reports.
fn relay_stderr(child: &mut Child) -> Arc<Mutex<Option<Lost>>> {
    let lost = Arc::new(Mutex::new(None));
    if let Some(err) = child.stderr.take() {
        let keep = lost.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let (Some(l), Ok(mut k)) = (parse_lost(&line), keep.lock()) {
                    k.get_or_insert(l);
                }
            }
        });
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpirun_reports_name_the_lost_rank() {
        let l = "mpirun noticed that process rank 3 with PID 4242 on node box exited on signal 9 (Killed).";
        assert_eq!(
            parse_lost(l),
            Some(Lost {
                rank: 3,
                signal: Some(9)
            })
        );
        let l = "MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD";
        assert_eq!(
            parse_lost(l),
            Some(Lost {
                rank: 1,
                signal: None
            })
        );
        assert_eq!(parse_lost("step 3: loss 5.1"), None);
    }

    #[test]
    fn heartbeats_are_read_back() {
        let d = std::env::temp_dir().join(format!("oar-hb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("rank-1.json"), r#"{"rank":1,"pid":12,"step":7}"#).expect("w");
        std::fs::write(d.join("rank-0.json"), r#"{"rank":0,"pid":11,"step":8}"#).expect("w");
        std::fs::write(d.join(".rank-2.json.tmp"), "half").expect("w");
        assert_eq!(heartbeats(&d), vec![(0, 11, 8), (1, 12, 7)]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
