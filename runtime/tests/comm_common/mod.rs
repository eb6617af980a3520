//! Helpers shared by the communicator tests (`comm.rs` on thread-ranks, `comm_mpi.rs` on
//! MPI processes): random inputs and the direct reductions results are checked against.
#![allow(dead_code)]

use oar_ir::dist::ReduceOp;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Random values; for products, near one so the result stays finite and sensitive.
pub fn random(rng: &mut ChaCha8Rng, len: usize, op: ReduceOp) -> Vec<f32> {
    (0..len)
        .map(|_| match op {
            ReduceOp::Prod => rng.gen_range(0.5f32..1.5),
            _ => rng.gen_range(-2.0f32..2.0),
        })
        .collect()
}

pub fn reduce_direct(op: ReduceOp, parts: &[Vec<f32>]) -> Vec<f64> {
    let mut acc: Vec<f64> = parts[0].iter().map(|&v| v as f64).collect();
    for p in &parts[1..] {
        for (a, &v) in acc.iter_mut().zip(p) {
            let v = v as f64;
            *a = match op {
                ReduceOp::Sum | ReduceOp::Mean => *a + v,
                ReduceOp::Max => a.max(v),
                ReduceOp::Min => a.min(v),
                ReduceOp::Prod => *a * v,
            };
        }
    }
    if op == ReduceOp::Mean {
        acc.iter_mut().for_each(|a| *a /= parts.len() as f64);
    }
    acc
}

pub fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}: element {i} is {g}, want {w}"
        );
    }
}
