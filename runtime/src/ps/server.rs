//! A server rank: serves its shard of every table until every worker has stopped.

use super::table::{Table, TableSpec};
use super::wire::{self, Request, Response};
use super::{server_of, Mode, PsError, SparseOptim};
use crate::comm::Communicator;
use crate::data::LoaderPosition;
use crate::io::checkpoint::{self, CheckpointMeta, Layout, ShardPiece};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mode: Mode,
    pub servers: Vec<u64>,
    pub workers: Vec<u64>,
    pub tables: Vec<TableSpec>,
    pub optim: SparseOptim,
    /// Before each save, drop rows updated fewer than this many times.
    pub evict_below: Option<u64>,
    /// Where saves go (`ROOT/step-N/`); saves are refused without it.
    pub checkpoint: Option<PathBuf>,
    /// A checkpoint to start from (any server count: each server keeps the keys it owns).
    pub load: Option<PathBuf>,
}

/// What a server did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerReport {
    pub rounds: u64,
    /// Rows held at the end, per table.
    pub rows: Vec<usize>,
    pub pulled_rows: u64,
    pub pushed_rows: u64,
    pub evicted: usize,
    pub loaded: usize,
    pub saved: Vec<PathBuf>,
}

/// The tensor names of server `index`'s part of `table` in a checkpoint.
fn piece_names(table: &str, index: usize) -> [String; 4] {
    ["keys", "values", "state", "steps"].map(|p| format!("ps.{table}.s{index}.{p}"))
}

/// Serves requests in rounds (one per worker, in worker order) until every worker stops.
pub fn run_server(comm: &dyn Communicator, cfg: &ServerConfig) -> Result<ServerReport, PsError> {
    let me = comm.rank();
    let index = cfg
        .servers
        .iter()
        .position(|&s| s == me)
        .ok_or_else(|| PsError::Config(format!("rank {me} is not a server")))?;
    let n_servers = cfg.servers.len() as u64;
    let mut tables: Vec<Table> = cfg
        .tables
        .iter()
        .map(|s| Table::new(s.clone(), cfg.optim))
        .collect();
    let mut report = ServerReport::default();
    if let Some(path) = &cfg.load {
        report.loaded = load_tables(path, &mut tables, index as u64, n_servers)?;
    }
    loop {
        // Sync mode: the round's pushes, summed per key in worker order.
        let mut pending: Vec<BTreeMap<u64, Vec<f32>>> = vec![BTreeMap::new(); tables.len()];
        let (mut stops, mut save) = (0, None);
        for &w in &cfg.workers {
            let req = Request::decode(&wire::recv(comm, w)?, w)?;
            check(&req, &tables, w, index as u64, n_servers)?;
            let mut reply = Response::default();
            for ((t, tr), acc) in tables.iter_mut().zip(&req.tables).zip(&mut pending) {
                report.pushed_rows += tr.push_keys.len() as u64;
                match cfg.mode {
                    Mode::Async => t.push(&tr.push_keys, &tr.push_grads),
                    Mode::Sync => {
                        let dim = t.spec.dim;
                        for (i, k) in tr.push_keys.iter().enumerate() {
                            let g = &tr.push_grads[i * dim..(i + 1) * dim];
                            let sum = acc.entry(*k).or_insert_with(|| vec![0.0; dim]);
                            for (s, g) in sum.iter_mut().zip(g) {
                                *s += g;
                            }
                        }
                    }
                }
                let mut rows = Vec::with_capacity(tr.pull.len() * t.spec.dim);
                t.pull(&tr.pull, req.create, &mut rows);
                report.pulled_rows += tr.pull.len() as u64;
                reply.rows.push(rows);
            }
            wire::send(comm, w, &reply.encode())?;
            stops += usize::from(req.stop);
            save = save.or(req.save_step);
        }
        for (t, acc) in tables.iter_mut().zip(pending) {
            for (k, g) in acc {
                t.push(&[k], &g);
            }
        }
        report.rounds += 1;
        if let Some(step) = save {
            if let Some(min) = cfg.evict_below {
                report.evicted += tables.iter_mut().map(|t| t.evict_below(min)).sum::<usize>();
            }
            let root = cfg.checkpoint.as_deref().ok_or_else(|| {
                PsError::Config("a worker asked for a save, but no checkpoint folder is set".into())
            })?;
            if let Some(p) = save_tables(comm, cfg, root, step, &tables, index)? {
                report.saved.push(p);
            }
        }
        if stops == cfg.workers.len() {
            break;
        }
        if stops > 0 {
            return Err(PsError::Config(format!(
                "{stops} of {} workers stopped while the others continue",
                cfg.workers.len()
            )));
        }
    }
    report.rows = tables.iter().map(Table::len).collect();
    Ok(report)
}

/// Refuses a request that does not fit the tables or sends keys to the wrong server.
fn check(req: &Request, tables: &[Table], w: u64, me: u64, n: u64) -> Result<(), PsError> {
    let bad = |message: String| PsError::Wire { rank: w, message };
    if !req.tables.is_empty() && req.tables.len() != tables.len() {
        return Err(bad(format!(
            "{} tables in the request, the server has {}",
            req.tables.len(),
            tables.len()
        )));
    }
    for (t, tr) in tables.iter().zip(&req.tables) {
        if tr.push_grads.len() != tr.push_keys.len() * t.spec.dim {
            return Err(bad(format!(
                "{}: {} gradient floats for {} keys of width {}",
                t.spec.name,
                tr.push_grads.len(),
                tr.push_keys.len(),
                t.spec.dim
            )));
        }
        for &k in tr.pull.iter().chain(&tr.push_keys) {
            if k >= t.spec.rows || server_of(k, n) != me {
                return Err(bad(format!(
                    "{}: key {k} is not this server's (server {me} of {n}, {} rows)",
                    t.spec.name, t.spec.rows
                )));
            }
        }
    }
    Ok(())
}

/// Writes this server's shard of checkpoint `step`; the first server commits the index
/// once every server has written (a barrier among the servers).
fn save_tables(
    comm: &dyn Communicator,
    cfg: &ServerConfig,
    root: &Path,
    step: u64,
    tables: &[Table],
    index: usize,
) -> Result<Option<PathBuf>, PsError> {
    let ck = |e: checkpoint::CheckpointError| PsError::Checkpoint(e.to_string());
    let tensors: Vec<_> = tables.iter().map(Table::to_tensors).collect();
    let names: Vec<[String; 4]> = tables
        .iter()
        .map(|t| piece_names(&t.spec.name, index))
        .collect();
    let mut pieces = Vec::new();
    for (ts, ns) in tensors.iter().zip(&names) {
        for (t, n) in ts.iter().zip(ns) {
            pieces.push(ShardPiece::whole(n, t));
        }
    }
    let world = cfg.servers.len();
    checkpoint::save_shard(root, step, index, world, &pieces).map_err(ck)?;
    comm.barrier(&cfg.servers)?;
    if index != 0 {
        return Ok(None);
    }
    let meta = CheckpointMeta {
        step,
        loader: LoaderPosition {
            epoch: 0,
            index: 0,
            rng: 0,
        },
        seed: 0,
        config: serde_json::json!({
            "kind": "parameter-server tables",
            "servers": world,
            "tables": cfg.tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
        }),
        best_eval_accuracy: None,
        rng: None,
        layout: Layout {
            world,
            mesh: Vec::new(),
        },
    };
    Ok(Some(checkpoint::commit_index(root, &meta, 0).map_err(ck)?))
}

/// Loads the rows this server owns from a checkpoint written by any number of servers.
fn load_tables(path: &Path, tables: &mut [Table], me: u64, n: u64) -> Result<usize, PsError> {
    let ck = checkpoint::load_checkpoint(path).map_err(|e| PsError::Checkpoint(e.to_string()))?;
    let mut loaded = 0;
    for t in tables.iter_mut() {
        let mut found = false;
        for s in 0.. {
            let names = piece_names(&t.spec.name, s);
            let Some(keys) = ck.weights.get(&names[0]) else {
                break;
            };
            found = true;
            let get = |k: usize| {
                ck.weights.get(&names[k]).ok_or_else(|| {
                    PsError::Checkpoint(format!("{}: `{}` is missing", path.display(), names[k]))
                })
            };
            let parts = [keys, get(1)?, get(2)?, get(3)?];
            loaded += t
                .load_tensors(parts, |k| server_of(k, n) == me)
                .map_err(|e| {
                    PsError::Checkpoint(format!("{}: {}: {e}", path.display(), names[0]))
                })?;
        }
        if !found {
            return Err(PsError::Checkpoint(format!(
                "{}: no rows of table `{}` (expected tensors ps.{}.s0.keys …)",
                path.display(),
                t.spec.name,
                t.spec.name
            )));
        }
    }
    Ok(loaded)
}
