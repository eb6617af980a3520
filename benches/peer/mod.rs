//! The peer process the benches time against (benches/peers.py in `serve` mode), and the
//! interleaved measurement: rounds of one block of oar runs then one block of peer runs, so
//! a slow spell on this shared machine hits both sides instead of one. Each block starts
//! after a short pause, so that neither side's idle threads (onnxruntime's spin-wait)
//! compete with the other's.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `peers.py serve ARGS…`; `None` (with the reason printed) when the peer is
    /// unavailable (no numpy or onnxruntime).
    pub fn start(args: &[&str]) -> Option<Peer> {
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers.py"))
            .arg("serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let input = child.stdin.take()?;
        let mut output = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        output.read_line(&mut line).ok()?;
        if line.trim() != "ready" {
            println!("peer {args:?} did not start");
            return None;
        }
        Some(Peer {
            child,
            input,
            output,
        })
    }

    /// The median of `reps` more peer runs.
    pub fn median(&mut self, reps: usize) -> Option<f64> {
        writeln!(self.input, "{reps}").ok()?;
        let mut line = String::new();
        self.output.read_line(&mut line).ok()?;
        line.trim().parse().ok()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per-round medians of both sides.
pub struct Interleaved {
    pub ours: Vec<f64>,
    pub peer: Vec<f64>,
}

impl Interleaved {
    /// `rounds` rounds of `reps` runs each side; `ours` returns the median of its block.
    pub fn measure(
        rounds: usize,
        reps: usize,
        mut ours: impl FnMut(usize) -> f64,
        peer: &mut Peer,
    ) -> Option<Interleaved> {
        let mut r = Interleaved {
            ours: Vec::new(),
            peer: Vec::new(),
        };
        // A pause before each block lets the other side's spinning threads park first.
        let settle = || std::thread::sleep(std::time::Duration::from_millis(100));
        for _ in 0..rounds {
            settle();
            r.ours.push(ours(reps));
            settle();
            r.peer.push(peer.median(reps)?);
        }
        Some(r)
    }

    /// The median over rounds of each side, then the median, lowest and highest of the
    /// per-round ratios (ours / peer).
    pub fn summary(&self) -> (f64, f64, f64, f64, f64) {
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.peer)
            .map(|(a, b)| a / b)
            .collect();
        let lo = ratios.iter().copied().fold(f64::MAX, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        (
            median(&self.ours),
            median(&self.peer),
            median(&ratios),
            lo,
            hi,
        )
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median wall time of `reps` calls of `f` after one untimed call (as peers.py does),
/// in seconds.
pub fn median_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    median(&ts)
}
