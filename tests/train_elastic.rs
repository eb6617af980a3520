//! Elastic data parallelism under `oar launch --min-ranks 3 --max-ranks 4 --slots FILE`:
//! a 4-rank ERNIE 3.0 tiny run (global batch 12) loses a rank for good (the slots file says
//! 3, then a rank is SIGKILLed), re-plans for 3 ranks and resumes from the last checkpoint;
//! the slots file goes back to 4 and the launcher stops the job at its next checkpoint and
//! re-plans for 4. Every step's loss stays within `TOL` (relative) of the uninterrupted
//! 4-rank run: the global batch, data order and dropout masks are the same at any world size,
//! so only the order of the gradient and loss sums changes. Prints the loss table of
//! docs/fault-tolerance.md. Skips, saying so, without `mpirun` or the corpus.

mod cli_util;
mod ft_util;

use cli_util::{log_lines, text_corpus};
use ft_util::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

// Long enough that the 3-rank stretch outlasts the launcher's notice of the returning
// rank (a poll, then the next checkpoint) even on a fast, idle machine.
const STEPS: u64 = 30;
const EVERY: u64 = 2;
const BATCH: u64 = 12;
/// Relative loss tolerance against the uninterrupted run: summation order only (fp32).
const TOL: f64 = 1e-5;

/// step -> loss, the last record of each step (a restart recomputes a few).
fn losses(path: &Path) -> BTreeMap<u64, f64> {
    log_lines(path, "step")
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r["loss"].as_f64()?)))
        .collect()
}

/// Waits until the newest heartbeat attempt is past `min_attempt` with every one of its
/// `ranks` ranks at `step` or beyond; returns its beats.
fn wait_for(
    hb: &Path,
    child: &mut std::process::Child,
    min_attempt: u64,
    ranks: usize,
    step: u64,
) -> (u64, Vec<Beat>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for step {step}"
        );
        if let Some(s) = child.try_wait().expect("wait") {
            panic!("the job ended early ({s})");
        }
        if let Some((n, beats)) = newest_attempt(hb) {
            if n >= min_attempt && beats.len() == ranks && beats.iter().all(|b| b.2 >= step) {
                return (n, beats);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn four_ranks_lose_one_then_regain_it_and_the_loss_curve_continues() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("elastic");
    let reference = train_args(
        &data,
        &dir,
        "ref",
        "ref.jsonl",
        Job::new(4, BATCH, STEPS, EVERY),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oar"))
        .args(["launch", "-n", "4", "--"])
        .args(&reference)
        .output()
        .expect("run oar launch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = losses(&dir.join("ref.jsonl"));
    assert_eq!(want.len() as u64, STEPS);

    let (hb, ev, slots) = (dir.join("hb"), dir.join("events.jsonl"), dir.join("slots"));
    std::fs::write(&slots, "4\n").expect("slots");
    let slots_arg = s(&slots);
    let opts = [
        "--min-ranks",
        "3",
        "--max-ranks",
        "4",
        "--slots",
        &slots_arg,
        "--max-restarts",
        "2",
        "--hang-timeout",
        "120",
    ];
    let job = Job::new(4, BATCH, STEPS, EVERY);
    let args = supervised(
        &dir,
        &opts,
        train_args(&data, &dir, "ck", "elastic.jsonl", job),
    );
    let mut child = launch(&args, &dir.join("launch.out"));
    let mut rng = Rng::new();
    // A rank is lost for good: the scheduler offers 3, then the rank dies.
    let (_, beats) = wait_for(&hb, &mut child, 0, 4, rng.range(3, 5));
    std::fs::write(&slots, "3\n").expect("slots");
    let (rank, pid, step) = beats[rng.range(0, 3) as usize];
    eprintln!("killing rank {rank} (pid {pid}) at step {step}");
    sigkill(pid);
    // On 3 ranks for a few steps, then a fourth comes back.
    wait_for(&hb, &mut child, 1, 3, step + 3);
    std::fs::write(&slots, "4\n").expect("slots");
    let status = child.wait().expect("wait");
    let log = std::fs::read_to_string(dir.join("launch.out")).unwrap_or_default();
    assert!(status.success(), "{log}");

    let starts = events(&ev, "start");
    let worlds: Vec<u64> = starts.iter().filter_map(|e| e["world"].as_u64()).collect();
    assert_eq!(worlds, [4, 3, 4], "{log}");
    assert_eq!(events(&ev, "failure").len(), 1);
    let replan = events(&ev, "replan");
    assert_eq!(replan.len(), 1);
    assert_eq!(
        (
            replan[0]["from_world"].as_u64(),
            replan[0]["to_world"].as_u64()
        ),
        (Some(3), Some(4))
    );

    // The world each step ran on: a start resumes after its from_step.
    let from: Vec<(u64, u64)> = starts
        .iter()
        .filter_map(|e| Some((e["from_step"].as_u64()?, e["world"].as_u64()?)))
        .collect();
    let world_at = |step: u64| {
        from.iter()
            .rev()
            .find(|(f, _)| *f < step)
            .map_or(0, |x| x.1)
    };
    let got = losses(&dir.join("elastic.jsonl"));
    assert_eq!(got.len() as u64, STEPS);
    eprintln!("| step | ranks | loss (elastic) | loss (4 ranks throughout) | rel. diff |");
    eprintln!("|---:|---:|---:|---:|---:|");
    for (step, l) in &got {
        let w = want[step];
        let rel = (l - w).abs() / w.abs().max(1e-6);
        eprintln!(
            "| {step} | {} | {l:.6} | {w:.6} | {rel:.1e} |",
            world_at(*step)
        );
        assert!(rel <= TOL, "step {step}: {l} vs {w} ({rel:.2e})");
    }
}
