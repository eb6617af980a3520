//! Parameter-server pull/push throughput: rows per second through 2 server and 2 worker
//! ranks (threads over `LocalComm`, the same request/round code MPI ranks run), against the
//! same Adagrad table operations done directly in one thread (no sharding, no messages) in
//! the same run.
//!
//! ```text
//! cargo run --release -p oar-runtime --example ps_bench -- [steps] [batch]
//! ```
//! Defaults: 200 sync steps of a CTR batch of 512 per worker (26 slots, Zipf ids over 10⁶
//! rows, width 16): each step pulls the batch's unique rows and pushes one gradient row per
//! unique key. End-to-end CTR-DNN samples/s over MPI: docs/heterps.md.

use oar_runtime::comm::LocalComm;
use oar_runtime::data::criteo::mix64;
use oar_runtime::ps::{
    run_server, Mode, PsClient, RowInit, ServerConfig, SparseOptim, Table, TableSpec,
};
use std::time::Instant;

fn spec() -> TableSpec {
    TableSpec {
        name: "emb.weight".into(),
        dim: 16,
        rows: 1_000_000,
        init: RowInit::Normal { std: 0.01, seed: 1 },
    }
}

/// The unique keys of step `s` of worker `w`: Zipf-like (a squared uniform over the rows
/// gives a heavy head), 26 per sample.
fn keys(w: u64, s: u64, batch: usize) -> Vec<u64> {
    let mut k: Vec<u64> = (0..batch as u64 * 26)
        .map(|i| {
            let u = (mix64(w << 48 ^ s << 24 ^ i) >> 11) as f64 / (1u64 << 53) as f64;
            ((u * u * u) * 1_000_000.0) as u64
        })
        .collect();
    k.sort_unstable();
    k.dedup();
    k
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let optim = SparseOptim::by_name("adagrad", 0.05).expect("adagrad");
    let dim = spec().dim;

    // Direct: one table, one thread.
    let mut table = Table::new(spec(), optim);
    let t0 = Instant::now();
    let mut direct_rows = 0u64;
    for s in 0..steps {
        for w in 0..2 {
            let k = keys(w, s, batch);
            let mut out = Vec::new();
            table.pull(&k, true, &mut out);
            let g = vec![1e-3f32; k.len() * dim];
            table.push(&k, &g);
            direct_rows += 2 * k.len() as u64;
        }
    }
    let direct = direct_rows as f64 / t0.elapsed().as_secs_f64();

    // Through the parameter server: ranks 0, 1 serve; 2, 3 work.
    let comms = LocalComm::group(&[0, 1, 2, 3]);
    let cfg = ServerConfig {
        mode: Mode::Sync,
        servers: vec![0, 1],
        workers: vec![2, 3],
        tables: vec![spec()],
        optim,
        evict_below: None,
        checkpoint: None,
        load: None,
    };
    let t0 = Instant::now();
    let rows: u64 = std::thread::scope(|sc| {
        let mut handles = Vec::new();
        for c in &comms {
            let cfg = cfg.clone();
            handles.push(sc.spawn(move || {
                let rank = oar_runtime::comm::Communicator::rank(c);
                if rank < 2 {
                    run_server(c, &cfg).expect("server");
                    return 0;
                }
                let mut client = PsClient::new(c, vec![0, 1], vec![dim]);
                for s in 0..steps {
                    let k = keys(rank - 2, s, batch);
                    client
                        .request(std::slice::from_ref(&k), None, true, (false, None))
                        .expect("pull");
                    let g = vec![1e-3f32; k.len() * dim];
                    client
                        .request(&[vec![]], Some(&vec![(k, g)]), true, (false, None))
                        .expect("push");
                }
                client
                    .request(&[vec![]], None, false, (true, None))
                    .expect("stop");
                client.pulled + client.pushed
            }));
        }
        handles.into_iter().map(|h| h.join().expect("rank")).sum()
    });
    let ps = rows as f64 / t0.elapsed().as_secs_f64();
    println!(
        "pull+push rows/s, {steps} steps x 2 workers x batch {batch} (26 ids/sample, width {dim}):\n  \
         parameter server (2 servers + 2 workers, threads): {:.2} M rows/s\n  \
         direct table (1 thread, no messages):              {:.2} M rows/s\n  \
         ratio ps/direct: {:.2}",
        ps / 1e6,
        direct / 1e6,
        ps / direct
    );
}
