//! `MpiComm` under `mpirun`: the communicator cases of `comm.rs` (collectives against direct
//! computations on random data, sub-groups in any order, send/recv, typed errors) and the
//! timeout that names the lost rank. Each `#[test]` here re-launches this test binary under
//! `mpirun -n N`, running only the matching `worker_*` function on every rank (selected by
//! `OAR_MPI_CASE`); outside `mpirun` the workers return at once. Skips, with a message, when
//! `mpirun` is missing.
#![cfg(feature = "mpi")]

mod comm_common;

use comm_common::{assert_close, random, reduce_direct};
use oar_ir::dist::ReduceOp;
use oar_runtime::comm::{CommError, Communicator, MpiComm};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::process::Command;
use std::time::Instant;

const CASE_ENV: &str = "OAR_MPI_CASE";

fn mpirun_available() -> bool {
    Command::new("mpirun").arg("--version").output().is_ok()
}

/// Runs worker `case` on `n` ranks; returns (exit success, stdout + stderr, seconds).
fn launch(case: &str, n: usize, env: &[(&str, &str)]) -> Option<(bool, String, f64)> {
    if !mpirun_available() {
        eprintln!("skipped: mpirun is not installed (scripts/setup.sh installs OpenMPI)");
        return None;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-n",
        &n.to_string(),
    ])
    .arg(exe)
    .args([
        &format!("worker_{case}"),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CASE_ENV, case);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let out = cmd.output().expect("run mpirun");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text, t.elapsed().as_secs_f64()))
}

/// The communicator when this process is the worker for `case`.
fn worker(case: &str) -> Option<MpiComm> {
    if std::env::var(CASE_ENV).ok().as_deref() != Some(case) {
        return None;
    }
    Some(MpiComm::init().expect("MPI init"))
}

/// The groups a world of `n` ranks exercises: the world, the world reversed (member index
/// differs from the rank), and, for n = 4, two disjoint pairs in scrambled order.
fn groups(n: u64) -> Vec<Vec<u64>> {
    let mut gs = vec![(0..n).collect::<Vec<_>>(), (0..n).rev().collect()];
    if n == 4 {
        gs.push(vec![2, 0]);
        gs.push(vec![1, 3]);
    }
    gs
}

/// Every rank draws every member's input from the same seed, so each can check the result.
fn collectives(c: &MpiComm) {
    let n = c.world_size();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for group in groups(n) {
        let Some(me) = group.iter().position(|&r| r == c.rank()) else {
            continue;
        };
        let k = group.len();
        for op in ReduceOp::ALL {
            for len in [1, k, 3 * k + 1, 1000] {
                let parts: Vec<Vec<f32>> = (0..k).map(|_| random(&mut rng, len, op)).collect();
                let mut buf = parts[me].clone();
                c.all_reduce(&group, op, &mut buf).expect("all_reduce");
                let what = format!("all_reduce {} {group:?} len {len}", op.name());
                assert_close(&buf, &reduce_direct(op, &parts), &what);
            }
            let m = 5;
            let parts: Vec<Vec<f32>> = (0..k).map(|_| random(&mut rng, k * m, op)).collect();
            let mut out = vec![0f32; m];
            c.reduce_scatter(&group, op, &parts[me], &mut out)
                .expect("reduce_scatter");
            let want = reduce_direct(op, &parts);
            let what = format!("reduce_scatter {} {group:?}", op.name());
            assert_close(&out, &want[me * m..(me + 1) * m], &what);
        }
        let l = 6 * k;
        let inputs: Vec<Vec<u8>> = (0..k)
            .map(|_| (0..l).map(|_| rng.gen()).collect())
            .collect();
        let mut o = vec![0; k * l];
        c.all_gather(&group, &inputs[me], &mut o)
            .expect("all_gather");
        assert_eq!(o, inputs.concat(), "all_gather {group:?}");
        for root in 0..k {
            let mut b = inputs[me].clone();
            c.broadcast(&group, root, &mut b).expect("broadcast");
            assert_eq!(b, inputs[root], "broadcast {group:?} root {root}");
        }
        let mut o = vec![0; l];
        c.all_to_all(&group, &inputs[me], &mut o)
            .expect("all_to_all");
        let q = l / k;
        let want: Vec<u8> = (0..k)
            .flat_map(|i| inputs[i][me * q..(me + 1) * q].to_vec())
            .collect();
        assert_eq!(o, want, "all_to_all {group:?} member {me}");
        c.barrier(&group).expect("barrier");
    }
}

/// A ring of sends: each rank sends three messages of growing size to the next, both before
/// receiving (buffered sends must not deadlock), and a wrong-size receive is a typed error.
fn send_recv(c: &MpiComm) {
    let n = c.world_size();
    let (me, next, prev) = (c.rank(), (c.rank() + 1) % n, (c.rank() + n - 1) % n);
    for k in 0..3usize {
        c.send(next, &vec![(10 * me as usize + k) as u8; 4 + 1000 * k])
            .expect("send");
    }
    for k in 0..3usize {
        let mut b = vec![0; 4 + 1000 * k];
        c.recv(prev, &mut b).expect("recv");
        assert_eq!(b, vec![(10 * prev as usize + k) as u8; 4 + 1000 * k]);
    }
    c.send(next, &[1, 2, 3]).expect("send");
    let mut b = vec![0; 5];
    let e = c.recv(prev, &mut b);
    assert!(
        matches!(
            e,
            Err(CommError::SizeMismatch {
                mine: 5,
                theirs: 3,
                ..
            })
        ),
        "{e:?}"
    );
    let e = c.all_reduce(&[0, n], ReduceOp::Sum, &mut [0.0]);
    assert!(matches!(e, Err(CommError::NotInGroup { .. })), "{e:?}");
    let e = c.all_reduce(&[me, me], ReduceOp::Sum, &mut [0.0]);
    assert!(matches!(e, Err(CommError::BadGroup { .. })), "{e:?}");
}

#[test]
fn worker_cases() {
    let Some(c) = worker("cases") else { return };
    collectives(&c);
    send_recv(&c);
    // Every rank must be done with its receives before any finalizes.
    c.barrier(&(0..c.world_size()).collect::<Vec<_>>())
        .expect("final barrier");
    println!("rank {} passed", c.rank());
}

#[test]
fn mpi_collectives_match_direct_on_2_and_4_ranks() {
    for n in [2, 4] {
        let Some((ok, text, _)) = launch("cases", n, &[]) else {
            return;
        };
        assert!(ok, "mpirun -n {n} failed:\n{text}");
        for r in 0..n {
            assert!(text.contains(&format!("rank {r} passed")), "{text}");
        }
    }
}

/// The last rank never joins the second all-reduce; the others must fail with a timeout that
/// names it, then end the job.
#[test]
fn worker_timeout() {
    let Some(c) = worker("timeout") else { return };
    let world: Vec<u64> = (0..c.world_size()).collect();
    let mut buf = vec![1.0f32; 16];
    c.all_reduce(&world, ReduceOp::Sum, &mut buf)
        .expect("first all_reduce");
    if c.rank() + 1 == c.world_size() {
        std::thread::sleep(c.timeout() * 4);
        return;
    }
    let e = c
        .all_reduce(&world, ReduceOp::Sum, &mut buf)
        .expect_err("the last rank never joins");
    eprintln!("oar error: {e}");
    c.abort(3);
}

#[test]
fn a_rank_that_stops_calling_is_named_within_the_timeout() {
    let Some((ok, text, secs)) = launch("timeout", 3, &[("OAR_COMM_TIMEOUT", "2")]) else {
        return;
    };
    assert!(!ok, "the job must fail:\n{text}");
    assert!(
        text.contains("all_reduce on group [0, 1, 2] timed out") && text.contains("lost rank 2"),
        "{text}"
    );
    assert!(secs < 30.0, "took {secs} s:\n{text}");
}

/// Every rank all-reduces in a loop until the test kills one of them.
#[test]
fn worker_spin() {
    let Some(c) = worker("spin") else { return };
    let world: Vec<u64> = (0..c.world_size()).collect();
    let mut buf = vec![1.0f32; 1000];
    loop {
        if let Err(e) = c.all_reduce(&world, ReduceOp::Mean, &mut buf) {
            eprintln!("oar error: {e}");
            c.abort(3);
        }
    }
}

/// The pid of the process of world rank `rank` started for this test (`OAR_MPI_TAG`).
fn rank_pid(tag: &str, rank: u64) -> Option<u32> {
    let want = [
        format!("OAR_MPI_TAG={tag}"),
        format!("OMPI_COMM_WORLD_RANK={rank}"),
    ];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
        let pid: u32 = d.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(d.path().join("environ")).ok()?;
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        want.iter()
            .all(|w| vars.contains(&w.as_bytes()))
            .then_some(pid)
    })
}

/// SIGKILL one rank mid-collective: the job ends non-zero well within 60 s and what the user
/// sees names rank 1 (OpenMPI's mpirun tears the job down itself when a rank dies; where a
/// launcher does not, the survivors' timeout names it instead — `worker_timeout`).
#[test]
fn killing_a_rank_ends_the_job_naming_it() {
    if !mpirun_available() {
        eprintln!("skipped: mpirun is not installed (scripts/setup.sh installs OpenMPI)");
        return;
    }
    let tag = format!("{}", std::process::id());
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-n", "3"])
        .arg(exe)
        .args(["worker_spin", "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE_ENV, "spin")
        .env("OAR_MPI_TAG", &tag)
        .env("OAR_COMM_TIMEOUT", "20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mpirun");
    // Let the ranks start and enter the loop.
    let t = Instant::now();
    let pid = loop {
        if let Some(p) = rank_pid(&tag, 1) {
            break p;
        }
        assert!(t.elapsed().as_secs() < 30, "rank 1 never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -9 {pid}");
    let killed_at = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for mpirun") {
            break s;
        }
        if killed_at.elapsed().as_secs() > 60 {
            let _ = child.kill();
            panic!("the job still runs 60 s after rank 1 was killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("mpirun output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "the job must fail:\n{text}");
    assert!(
        text.contains("rank 1 with PID") || text.contains("lost rank 1"),
        "the output must name rank 1:\n{text}"
    );
}
