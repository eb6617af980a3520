//! `oar launch -n N [--hostfile F] -- train MODEL ...`: starts N ranks of an `oar` command
//! through OpenMPI's `mpirun`, adding the flags this machine needs (`--allow-run-as-root`
//! as root, `--oversubscribe` when N exceeds the cores and no hostfile says otherwise).
//!
//! With `--max-restarts R` (or the elastic `--min-ranks`/`--max-ranks`/`--slots`) it
//! supervises the job instead of only starting it: [`supervise`]. See docs/fault-tolerance.md.

mod replan;
mod supervise;

use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::process::Command;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Number of ranks (processes); optional with --max-ranks.
    #[arg(short = 'n', long = "np", value_name = "N")]
    ranks: Option<u64>,
    /// An MPI hostfile: the hosts to start ranks on (default: this machine).
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Print the mpirun command instead of running it.
    #[arg(long)]
    dry_run: bool,
    /// Supervise the job: restart it from the last checkpoint of the command's `--save DIR`
    /// when a rank dies or the job hangs, up to R times.
    #[arg(long, value_name = "R")]
    max_restarts: Option<u32>,
    /// Seconds without a new heartbeat (a rank finishing a step) before the job counts as
    /// hung and is killed (supervised runs).
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    hang_timeout: f64,
    /// Append the supervisor's events (start, failure, restart, replan, done) as JSON lines.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Where ranks write heartbeats (default: a folder under the temporary directory; must
    /// be shared with every host of a hostfile).
    #[arg(long, value_name = "DIR")]
    heartbeat_dir: Option<PathBuf>,
    /// Elastic: the fewest ranks to run on (default: the most).
    #[arg(long, value_name = "A")]
    min_ranks: Option<u64>,
    /// Elastic: the most ranks to run on (default: -n).
    #[arg(long, value_name = "B")]
    max_ranks: Option<u64>,
    /// Elastic: a file holding the number of ranks available now, re-read before every
    /// (re)start and at every poll (100 ms) while running (default: the most).
    #[arg(long, value_name = "FILE")]
    slots: Option<PathBuf>,
    /// Elastic: seconds to wait for the slots file to offer at least --min-ranks.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    wait_slots: f64,
    /// The oar command every rank runs, after `--` (e.g. `train ernie-3.0-tiny --dp 2 ...`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The mpirun command line for `ranks` ranks of `exe COMMAND`.
fn mpirun_command(a: &LaunchArgs, ranks: u64, exe: &str, root: bool, cores: u64) -> Vec<String> {
    let mut cmd = vec!["mpirun".to_string()];
    if root {
        cmd.push("--allow-run-as-root".into());
    }
    match &a.hostfile {
        Some(f) => {
            cmd.push("--hostfile".into());
            cmd.push(f.display().to_string());
        }
        None if ranks > cores => cmd.push("--oversubscribe".into()),
        None => {}
    }
    cmd.extend(["-n".to_string(), ranks.to_string(), exe.to_string()]);
    cmd.extend(a.command.iter().cloned());
    cmd
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn run(a: LaunchArgs) -> anyhow::Result<()> {
    if a.ranks == Some(0) {
        bail!("-n must be at least 1");
    }
    let exe = std::env::current_exe().context("cannot find the oar executable")?;
    let exe = exe.display().to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let root = running_as_root();
    let supervised = a.max_restarts.is_some()
        || a.min_ranks.is_some()
        || a.max_ranks.is_some()
        || a.slots.is_some();
    if supervised && !a.dry_run {
        return supervise::Supervisor {
            args: a,
            exe,
            root,
            cores,
        }
        .run();
    }
    let ranks = a
        .ranks
        .or(a.max_ranks)
        .context("give the number of ranks: -n N")?;
    let cmd = mpirun_command(&a, ranks, &exe, root, cores);
    if a.dry_run {
        println!("{}", cmd.join(" "));
        return Ok(());
    }
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .context("cannot start mpirun: install OpenMPI (scripts/setup.sh does)")?;
    if !status.success() {
        bail!("mpirun exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(n: u64, hostfile: Option<&str>) -> LaunchArgs {
        LaunchArgs {
            ranks: Some(n),
            hostfile: hostfile.map(PathBuf::from),
            dry_run: false,
            max_restarts: None,
            hang_timeout: 300.0,
            events: None,
            heartbeat_dir: None,
            min_ranks: None,
            max_ranks: None,
            slots: None,
            wait_slots: 600.0,
            command: vec!["train".into(), "m".into()],
        }
    }

    #[test]
    fn flags_follow_the_machine() {
        let c = mpirun_command(&args(4, None), 4, "oar", true, 2);
        assert_eq!(
            c.join(" "),
            "mpirun --allow-run-as-root --oversubscribe -n 4 oar train m"
        );
        let c = mpirun_command(&args(2, Some("hosts")), 2, "oar", false, 2);
        assert_eq!(c.join(" "), "mpirun --hostfile hosts -n 2 oar train m");
    }
}
