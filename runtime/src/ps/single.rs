//! Single-process training of a CTR model with its tables as ordinary parameters: the
//! reference a parameter-server run is checked against. The step graph takes `dense_x`,
//! `sparse_ids` (ids hashed modulo the tables' rows) and `label` and outputs loss, prob and
//! the gradient of every parameter in `params`; tables are updated row by row on the rows the
//! batch touches (the same rule the servers follow), everything else as one row.

use super::table::TableSpec;
use super::{PsError, SparseOptim};
use crate::data::criteo::CtrBatch;
use crate::interp;
use crate::io::weights::Weights;
use crate::tensor::{HostTensor, TensorData};
use oar_ir::Graph;

/// The inputs of a lookup-form graph (`dense_x`, `sparse_ids`, `label`) for `batch`.
pub fn lookup_inputs(g: &Graph, batch: &CtrBatch, rows: u64) -> Result<Vec<HostTensor>, PsError> {
    let b = batch.len();
    let dense = batch.dense.len() / b.max(1);
    let per = batch.keys.len() / b.max(1);
    g.inputs()
        .iter()
        .map(|&id| match g.node(id).name.as_str() {
            "dense_x" => Ok(HostTensor::f32(vec![b, dense], batch.dense.clone())),
            "sparse_ids" => Ok(HostTensor::i64(vec![b, per], batch.ids(rows))),
            "label" => Ok(HostTensor::f32(vec![b, 1], batch.labels.clone())),
            other => Err(PsError::Config(format!(
                "the graph has an input `{other}`; expected dense_x, sparse_ids, label"
            ))),
        })
        .collect()
}

/// Per-parameter optimizer state of [`train_single`].
pub struct SingleState {
    state: Vec<(Vec<f32>, Vec<u64>)>,
}

/// One step of single-process training: runs `step` on `batch`, applies `sparse` to the
/// touched rows of each table in `tables` and `dense` to the other `params`; returns the loss.
#[allow(clippy::too_many_arguments)]
pub fn train_single(
    step: &Graph,
    params: &[String],
    weights: &mut Weights,
    state: &mut Option<SingleState>,
    tables: &[TableSpec],
    (sparse, dense): (SparseOptim, SparseOptim),
    batch: &CtrBatch,
) -> Result<f32, PsError> {
    let rows = tables.first().map_or(1, |t| t.rows);
    let inputs = lookup_inputs(step, batch, rows)?;
    let out = interp::run(step, &inputs, weights).map_err(|e| PsError::Step(e.to_string()))?;
    if out.len() != 2 + params.len() {
        return Err(PsError::Step(format!(
            "the step graph has {} outputs, expected loss, prob and {} gradients",
            out.len(),
            params.len()
        )));
    }
    let st = state.get_or_insert_with(|| SingleState {
        state: params
            .iter()
            .map(|p| {
                let n = weights.get(p).map_or(0, HostTensor::numel);
                match tables.iter().find(|t| &t.name == p) {
                    Some(t) => (
                        sparse.init_state(t.dim).repeat(t.rows as usize),
                        vec![0; t.rows as usize],
                    ),
                    None => (dense.init_state(n), vec![0]),
                }
            })
            .collect(),
    });
    let mut touched: Vec<u64> = batch.ids(rows).iter().map(|&i| i as u64).collect();
    touched.sort_unstable();
    touched.dedup();
    for (k, p) in params.iter().enumerate() {
        let g = out[2 + k]
            .as_f32()
            .ok_or_else(|| PsError::Step(format!("the gradient of `{p}` is not f32")))?;
        let Some(TensorData::F32(v)) = weights.get_mut(p).map(|t| &mut t.data) else {
            return Err(PsError::Config(format!("no f32 value for `{p}`")));
        };
        let (s, steps) = &mut st.state[k];
        match tables.iter().find(|t| &t.name == p) {
            Some(t) => {
                let (d, sl) = (t.dim, sparse.state_len(t.dim));
                for &r in &touched {
                    let r = r as usize;
                    sparse.apply(
                        &mut v[r * d..(r + 1) * d],
                        &mut s[r * sl..(r + 1) * sl],
                        &mut steps[r],
                        &g[r * d..(r + 1) * d],
                    );
                }
            }
            None => dense.apply(v, s, &mut steps[0], g),
        }
    }
    out[0]
        .as_f32()
        .and_then(|l| l.first().copied())
        .ok_or_else(|| PsError::Step("the loss is not an f32 scalar".into()))
}
