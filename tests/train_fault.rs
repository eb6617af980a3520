//! Fault tolerance of `oar launch --max-restarts` on a 4-rank data-parallel ERNIE 3.0 tiny
//! (1 layer, hidden 32, dropout 0.1, global batch 4, checkpoints every 2 steps):
//!
//! - checkpoints under `--dp`: 2 ranks for 6 steps end with the same weights, bit for bit,
//!   as 3 steps then a resume for 3 more;
//! - a driver SIGKILLs a random rank (its pid from the launcher's heartbeats) at a random
//!   step, 5 times in one 20-step run: the job finishes, every kept checkpoint loads, each
//!   restart recomputes at most one save interval (from the events), and the final weights
//!   equal the uninterrupted run's bit for bit.
//!
//! - a rank stopped with SIGSTOP (alive, no progress) is a hang: with `--hang-timeout 15`
//!   the launcher kills the job and restarts it, and it still ends with the uninterrupted
//!   weights.
//!
//! The long version, 100 kills over 400 steps, is `#[ignore]`d:
//! `OAR_FT_KILLS=100 OAR_FT_STEPS=400 cargo test --test train_fault -- --ignored --nocapture`
//! Skips, saying so, without `mpirun` or the corpus.

mod cli_util;
mod ft_util;

use cli_util::text_corpus;
use ft_util::*;
use oar::runtime::io::checkpoint::{list_checkpoints, load_checkpoint};
use std::path::Path;
use std::time::{Duration, Instant};

const EVERY: u64 = 2;

fn mpirun(n: u64, args: &[String]) {
    let out = cli_util::mpirun(n, args);
    assert!(
        out.status.success(),
        "{args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The uninterrupted 4-rank run, checkpoints in `dir/ref`.
fn reference(data: &Path, dir: &Path, steps: u64) {
    let job = Job::new(4, 4, steps, EVERY);
    mpirun(4, &train_args(data, dir, "ref", "ref.jsonl", job));
}

/// Every tensor of the newest checkpoints under `a` and `b` equal bit for bit (f32 compared
/// as bits, so a NaN or a signed zero cannot hide a difference).
fn same_final_weights(a: &Path, b: &Path) {
    let (x, y) = (
        load_checkpoint(a).expect("load a"),
        load_checkpoint(b).expect("load b"),
    );
    assert_eq!(x.step, y.step);
    let names: Vec<&String> = x.weights.keys().collect();
    assert_eq!(names, y.weights.keys().collect::<Vec<_>>());
    for (name, t) in x.weights.iter() {
        let u = &y.weights[name];
        let bits = |t: &oar::runtime::HostTensor| -> Vec<u32> {
            t.as_f32()
                .map(|v| v.iter().map(|f| f.to_bits()).collect())
                .unwrap_or_default()
        };
        assert_eq!(t.shape, u.shape, "{name}");
        assert!(bits(t) == bits(u) && t == u, "{name} differs");
    }
    assert!(x.weights.len() > 10, "{} tensors", x.weights.len());
}

#[test]
fn dp2_checkpoints_resume_bit_for_bit() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("dp2resume");
    mpirun(
        2,
        &train_args(&data, &dir, "full", "full.jsonl", Job::new(2, 4, 6, 3)),
    );
    mpirun(
        2,
        &train_args(&data, &dir, "half", "half.jsonl", Job::new(2, 4, 3, 3)),
    );
    // The same run continued to step 6 from its step-3 checkpoint.
    let mut more = train_args(&data, &dir, "half", "half.jsonl", Job::new(2, 4, 6, 3));
    more.extend(["--resume".into(), s(&dir.join("half"))]);
    mpirun(2, &more);
    same_final_weights(&dir.join("full"), &dir.join("half"));
}

/// Runs the supervised job, killing `kills` random ranks at random steps; returns the run's
/// wall time and the events file.
fn faulty_run(data: &Path, dir: &Path, steps: u64, kills: u64) -> (f64, std::path::PathBuf) {
    let (hb, ev) = (dir.join("hb"), dir.join("events.jsonl"));
    let restarts = (kills + 2).to_string();
    let opts = [
        "-n",
        "4",
        "--max-restarts",
        &restarts,
        "--hang-timeout",
        "120",
    ];
    let train = train_args(
        data,
        dir,
        "ck",
        "faulty.jsonl",
        Job::new(4, 4, steps, EVERY),
    );
    let args = supervised(dir, &opts, train);
    let t0 = Instant::now();
    let mut child = launch(&args, &dir.join("launch.out"));
    let mut rng = Rng::new();
    // Kill k lands at a step past kill k-1's, leaving room for the rest before the end.
    let (mut done, mut last_step, mut last_attempt) = (0u64, 0u64, None);
    let mut target = rng.range(1, EVERY + 1);
    let deadline = Instant::now() + Duration::from_secs(600 + 20 * kills);
    while done < kills {
        assert!(Instant::now() < deadline, "the driver timed out");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the job ended ({status}) after {done} of {kills} kills:\n{}",
                std::fs::read_to_string(dir.join("launch.out")).unwrap_or_default()
            );
        }
        if let Some((attempt, beats)) = newest_attempt(&hb) {
            let step = beats.iter().map(|b| b.2).max().unwrap_or(0);
            if Some(attempt) != last_attempt && beats.len() == 4 && step >= target {
                let (rank, pid, _) = beats[rng.range(0, 3) as usize];
                eprintln!("kill {}: rank {rank} (pid {pid}) at step {step}", done + 1);
                sigkill(pid);
                (done, last_step, last_attempt) = (done + 1, step, Some(attempt));
                let room = (steps - 1).saturating_sub(last_step).max(1);
                let left = (kills - done).max(1);
                target = last_step + rng.range(1, (room / left).clamp(1, EVERY + 1));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.join("launch.out")).unwrap_or_default()
    );
    let _ = last_step;
    (t0.elapsed().as_secs_f64(), ev)
}

fn check_fault_run(steps: u64, kills: u64) {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch(&format!("kill{kills}"));
    let t0 = Instant::now();
    reference(&data, &dir, steps);
    let clean = t0.elapsed().as_secs_f64();
    let (faulty, ev) = faulty_run(&data, &dir, steps, kills);
    let failures = events(&ev, "failure");
    let restarts = events(&ev, "restart");
    assert_eq!(failures.len() as u64, kills, "{failures:?}");
    assert_eq!(restarts.len() as u64, kills);
    for f in &failures {
        // OpenMPI names the rank that died, and the signal: our SIGKILL.
        assert_eq!(f["reason"], "exited", "{f}");
        assert!(f["rank"].as_u64().is_some_and(|r| r < 4), "{f}");
        assert_eq!(f["signal"], 9, "{f}");
    }
    let recomputed: Vec<u64> = restarts
        .iter()
        .map(|r| r["recomputed"].as_u64().unwrap_or(99))
        .collect();
    assert!(recomputed.iter().all(|&r| r <= EVERY), "{recomputed:?}");
    for (step, ck) in list_checkpoints(&dir.join("ck")).expect("checkpoints") {
        let c = load_checkpoint(&ck).unwrap_or_else(|e| panic!("checkpoint {step}: {e}"));
        assert_eq!(c.step, step);
    }
    same_final_weights(&dir.join("ref"), &dir.join("ck"));
    eprintln!(
        "{kills} kills over {steps} steps: {} steps recomputed ({recomputed:?}); \
         uninterrupted {clean:.1}s, with failures {faulty:.1}s",
        recomputed.iter().sum::<u64>()
    );
}

#[test]
fn five_random_sigkills_end_with_the_uninterrupted_weights() {
    check_fault_run(20, 5);
}

#[test]
#[ignore = "long: 100 kills (see the module docs for the command)"]
fn many_random_sigkills_end_with_the_uninterrupted_weights() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    check_fault_run(var("OAR_FT_STEPS", 400), var("OAR_FT_KILLS", 100));
}

#[test]
fn a_stopped_rank_is_a_hang_that_the_launcher_restarts() {
    let (Some(data), true) = (text_corpus(), mpirun_available()) else {
        return;
    };
    let dir = scratch("hang");
    let steps = 8;
    reference(&data, &dir, steps);
    let train = train_args(
        &data,
        &dir,
        "ck",
        "hang.jsonl",
        Job::new(4, 4, steps, EVERY),
    );
    let opts = ["-n", "4", "--max-restarts", "1", "--hang-timeout", "15"];
    let args = supervised(&dir, &opts, train);
    let (hb, ev) = (dir.join("hb"), dir.join("events.jsonl"));
    let t0 = Instant::now();
    let mut child = launch(&args, &dir.join("launch.out"));
    let mut rng = Rng::new();
    let target = rng.range(2, 4);
    loop {
        assert!(t0.elapsed() < Duration::from_secs(300), "no step {target}");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the job ended early"
        );
        if let Some((0, beats)) = newest_attempt(&hb) {
            if beats.len() == 4 && beats.iter().any(|b| b.2 >= target) {
                let (rank, pid, step) = beats[rng.range(0, 3) as usize];
                eprintln!("stopping rank {rank} (pid {pid}) at step {step}");
                sigstop(pid);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    let out = std::fs::read_to_string(dir.join("launch.out")).unwrap_or_default();
    assert!(status.success(), "{out}");
    let failures = events(&ev, "failure");
    assert_eq!(failures.len(), 1, "{out}");
    assert_eq!(failures[0]["reason"], "hang", "{out}");
    same_final_weights(&dir.join("ref"), &dir.join("ck"));
}
