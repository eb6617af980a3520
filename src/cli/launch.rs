//! `oar launch -n N [--hostfile F] -- train MODEL ...`: starts N ranks of an `oar` command
//! through OpenMPI's `mpirun`, adding the flags this machine needs (`--allow-run-as-root`
//! as root, `--oversubscribe` when N exceeds the cores and no hostfile says otherwise).

use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::process::Command;

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Number of ranks (processes).
    #[arg(short = 'n', long = "np", value_name = "N")]
    ranks: u64,
    /// An MPI hostfile: the hosts to start ranks on (default: this machine).
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Print the mpirun command instead of running it.
    #[arg(long)]
    dry_run: bool,
    /// The oar command every rank runs, after `--` (e.g. `train ernie-3.0-tiny --dp 2 ...`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// The mpirun command line for `a`, running `exe` on every rank.
fn mpirun_command(a: &LaunchArgs, exe: &str, root: bool, cores: u64) -> Vec<String> {
    let mut cmd = vec!["mpirun".to_string()];
    if root {
        cmd.push("--allow-run-as-root".into());
    }
    match &a.hostfile {
        Some(f) => {
            cmd.push("--hostfile".into());
            cmd.push(f.display().to_string());
        }
        None if a.ranks > cores => cmd.push("--oversubscribe".into()),
        None => {}
    }
    cmd.extend(["-n".to_string(), a.ranks.to_string(), exe.to_string()]);
    cmd.extend(a.command.iter().cloned());
    cmd
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn run(a: LaunchArgs) -> anyhow::Result<()> {
    if a.ranks == 0 {
        bail!("-n must be at least 1");
    }
    let exe = std::env::current_exe().context("cannot find the oar executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let cmd = mpirun_command(&a, &exe.display().to_string(), running_as_root(), cores);
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
            ranks: n,
            hostfile: hostfile.map(PathBuf::from),
            dry_run: false,
            command: vec!["train".into(), "m".into()],
        }
    }

    #[test]
    fn flags_follow_the_machine() {
        let c = mpirun_command(&args(4, None), "oar", true, 2);
        assert_eq!(
            c.join(" "),
            "mpirun --allow-run-as-root --oversubscribe -n 4 oar train m"
        );
        let c = mpirun_command(&args(2, Some("hosts")), "oar", false, 2);
        assert_eq!(c.join(" "), "mpirun --hostfile hosts -n 2 oar train m");
    }
}
