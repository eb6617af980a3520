//! `oar train ernie-3.0-tiny ... --plan auto --cluster examples/clusters/local-epyc2.toml`
//! (this CI machine as `oar cluster calibrate` describes it, from a recorded run): on 4
//! ranks through `oar launch -n 4` and on 2 ranks under `mpirun -n 2`, rank 0 prints the
//! plan it chose for that many ranks, every rank's log records the same plan, the per-step
//! losses of every rank equal those of the same run with the plan's fixed flags (`as flags:
//! …`) to 1e-5 relative, and the runtime reports building the same layout: the run is the
//! plan. Flags the plan replaces, a model the planner does not describe, a missing or bad
//! --cluster are refused with messages. The tiny ERNIE of the MPI tests at 2 layers, batch
//! 8, 3 steps. Skips, saying so, without `mpirun` or the corpus (and fails instead when
//! `CI=true`).

mod cli_util;

use cli_util::{assert_rank_losses, fails, log_lines, mpirun_ok, repo, step_losses};
use std::path::{Path, PathBuf};
use std::process::Command;

const CLUSTER: &str = "examples/clusters/local-epyc2.toml";

fn setup() -> Option<PathBuf> {
    cli_util::mpi_corpus("the --plan auto tests")
}

/// The tiny ERNIE at 2 layers, batch 8, 3 steps, logging to `dir/name.jsonl`.
fn args(data: &Path, dir: &Path, name: &str) -> Vec<String> {
    cli_util::tiny_ernie_args(data, dir, name, ("2", "3"), false)
}

fn auto(mut a: Vec<String>) -> Vec<String> {
    a.extend([
        "--plan".into(),
        "auto".into(),
        "--cluster".into(),
        repo(CLUSTER),
    ]);
    a
}

/// `oar launch -n N -- ARGS`, which must succeed; its stdout.
fn launch_ok(n: u64, a: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(["launch", "-n", &n.to_string(), "--"])
        .args(a)
        .output()
        .expect("run oar launch");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{a:?}:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The plan's fixed flags from rank 0's summary (`  as flags: --dp 4 ...`).
fn printed_flags(stdout: &str, n: u64) -> Vec<String> {
    assert!(
        stdout.contains(&format!("plan auto for {n} rank(s) on ")),
        "{stdout}"
    );
    assert!(stdout.contains("  predicted: step "), "{stdout}");
    assert!(stdout.contains("  why: the fastest of "), "{stdout}");
    assert_eq!(stdout.matches("plan auto for").count(), 1, "rank 0 alone");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("  as flags: "))
        .expect("an `as flags` line");
    line.split_whitespace().map(String::from).collect()
}

/// Every rank's log holds one plan record for `n` ranks with `flags`; the layout's ranks.
fn check_logs(dir: &Path, name: &str, n: u64, flags: &[String]) {
    for r in 0..n {
        let log = match r {
            0 => dir.join(format!("{name}.jsonl")),
            r => dir.join(format!("{name}.rank{r}.jsonl")),
        };
        let plans = log_lines(&log, "plan");
        assert_eq!(plans.len(), 1, "{name} rank {r}");
        let p = &plans[0];
        assert_eq!(p["rank"], r, "{p}");
        assert_eq!(p["world"], n, "{p}");
        assert_eq!(p["flags"], flags.join(" "), "{p}");
        let l = &p["layout"];
        let ranks = ["dp", "tp", "pp"].map(|k| l[k].as_u64().expect("a degree"));
        assert_eq!(ranks.iter().product::<u64>(), n, "{p}");
        assert!(p["predicted_step_seconds"]
            .as_f64()
            .is_some_and(|t| t > 0.0));
    }
}

/// The lines a run prints about the layout it built (tensor/pipeline parallel, ZeRO).
fn layout_lines(stdout: &str) -> Vec<&str> {
    let kinds = ["tensor parallel:", "pipeline parallel:", "zero-"];
    stdout
        .lines()
        .filter(|l| kinds.iter().any(|k| l.starts_with(k)))
        .collect()
}

#[test]
fn plan_auto_trains_the_plan_it_prints_on_4_and_2_ranks() {
    let Some(data) = setup() else { return };
    let dir = cli_util::scratch_dir("auto", "runs");
    let mut chosen = Vec::new();
    for n in [4u64, 2] {
        let name = format!("auto{n}");
        let a = auto(args(&data, &dir, &name));
        // 4 ranks as the command runs them, 2 under mpirun itself.
        let stdout = match n {
            4 => launch_ok(n, &a),
            _ => mpirun_ok(n, &a),
        };
        assert!(stdout.contains("final loss"), "{stdout}");
        let flags = printed_flags(&stdout, n);
        check_logs(&dir, &name, n, &flags);
        // The same run with the plan's flags spelled out.
        let fixed = format!("fixed{n}");
        let mut f = args(&data, &dir, &fixed);
        f.extend(flags.iter().cloned());
        let out = mpirun_ok(n, &f);
        assert!(!out.contains("plan auto"), "{out}");
        // Every layout gives one process's losses, so the runtime's own account of the
        // layout it built tells which one ran: the same as the flags' run.
        let built = layout_lines(&out);
        assert_eq!(layout_lines(&stdout), built, "{stdout}");
        let special = ["--tp", "--pp", "--zero"];
        if flags.iter().any(|f| special.contains(&f.as_str())) {
            assert!(!built.is_empty(), "{out}");
        }
        let want = step_losses(&dir.join(format!("{fixed}.jsonl")));
        assert_eq!(want.len(), 3, "{want:?}");
        assert_rank_losses(&dir, &name, n, &want);
        chosen.push(flags);
    }
    // Each plan is for its own world (the layout's ranks were checked against the logs).
    assert_ne!(chosen[0], chosen[1], "4 and 2 ranks chose the same layout");
}

#[test]
fn plan_auto_refuses_what_it_cannot_plan() {
    let d = "/nonexistent-corpus";
    let c = repo(CLUSTER);
    let c = c.as_str();
    let e = fails(&[
        "train",
        "ernie-3.0-tiny",
        "--data",
        d,
        "--steps",
        "1",
        "--plan",
        "auto",
        "--cluster",
        c,
        "--dp",
        "2",
    ]);
    assert!(
        e.contains("--plan auto chooses the layout itself: drop --dp"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "ernie-3.0-tiny",
        "--data",
        d,
        "--steps",
        "1",
        "--plan",
        "auto",
        "--recompute",
        "full",
    ]);
    assert!(e.contains("drop --recompute"), "{e}");
    let e = fails(&["train", "ernie-3.0-tiny", "--data", d, "--plan", "auto"]);
    assert!(e.contains("--plan auto needs --cluster FILE"), "{e}");
    assert!(e.contains("oar cluster calibrate -o local.toml"), "{e}");
    let e = fails(&[
        "train",
        "lcnet_x0_25",
        "--data",
        d,
        "--plan",
        "auto",
        "--cluster",
        c,
    ]);
    assert!(e.contains("--plan auto plans a zoo ERNIE"), "{e}");
    let e = fails(&[
        "train",
        "ernie-3.0-tiny",
        "--data",
        d,
        "--plan",
        "auto",
        "--cluster",
        "nope.toml",
    ]);
    assert!(e.contains("nope.toml"), "{e}");
}
