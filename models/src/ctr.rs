//! Click-through-rate (CTR) models for the parameter server (HeterPS): CTR-DNN, Wide&Deep
//! and DeepFM over Criteo-shaped inputs — `slots` categorical slots (feature ids hashed
//! modulo `table_rows`) and `dense_features` numeric ones.
//!
//! Every model has the same signature: inputs `dense_x: f32[N, dense]`,
//! `sparse_ids: i64[N, slots·ids_per_slot]` (each id `< table_rows`) and `label: f32[N, 1]`
//! (0 or 1); outputs `loss: f32[]` (mean log-loss of the sigmoid, in the numerically stable
//! form `relu(z) − z·y + log(1 + exp(−|z|))`) and `prob: f32[N, 1]`.
//!
//! Parameter servers keep the sparse tables out of the worker's graph:
//! [`SparseInput::Rows`] builds the same model with each table's lookup replaced by an
//! input of the looked-up rows (`emb_rows: f32[N, slots·ids_per_slot, dim]`), so a worker
//! feeds the rows it pulled and reads their gradient as that input's gradient. The
//! [`SparseTable`] list names both forms.
//!
//! Layers have stable node-name prefixes (`emb.`, `wide.`, `fm.`, `fc0.` …, `out.`,
//! `loss.`) so a placement pass can group nodes into layers: parameters are named
//! `<layer>.weight`/`<layer>.bias`, every other node `<layer>.<op>_<index>`.

use oar_frontend::nn::{Initializer, LinearConfig};
use oar_frontend::{BuildError, ModelBuilder, Tensor};
use oar_ir::op::{Init, Op, ReshapeDim};
use oar_ir::Graph;

/// Which CTR architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtrKind {
    /// Embeddings sum-pooled per slot, concatenated with the dense features, an MLP.
    Dnn,
    /// CTR-DNN plus a wide (linear) part: a 1-wide table over the sparse ids and a linear
    /// map of the dense features, added to the deep logit (Cheng et al., 2016).
    WideDeep,
    /// Wide&Deep's first-order part plus factorization-machine pairwise interactions of the
    /// slot embeddings, `½·Σ_d((Σ_s e)² − Σ_s e²)` (Guo et al., 2017).
    DeepFm,
}

impl CtrKind {
    pub fn name(self) -> &'static str {
        match self {
            CtrKind::Dnn => "ctr-dnn",
            CtrKind::WideDeep => "wide-deep",
            CtrKind::DeepFm => "deepfm",
        }
    }
}

/// How the sparse tables enter the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseInput {
    /// Tables are parameters looked up with `embedding` (single-process training).
    Lookup,
    /// Each table's looked-up rows are a graph input (a parameter-server worker).
    Rows,
}

/// One sparse table of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseTable {
    /// The parameter name in [`SparseInput::Lookup`] graphs (`emb.weight`).
    pub param: String,
    /// The input name in [`SparseInput::Rows`] graphs (`emb_rows`).
    pub rows_input: String,
    /// Row width.
    pub dim: u64,
    /// Rows (ids are hashed modulo this).
    pub rows: u64,
}

/// A CTR model's sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct CtrConfig {
    pub kind: CtrKind,
    /// Categorical slots (Criteo: 26).
    pub slots: u64,
    /// Ids per slot, sum-pooled (Criteo: 1).
    pub ids_per_slot: u64,
    /// Embedding width.
    pub embedding_dim: u64,
    /// Rows of each sparse table (10⁴ … 10⁹; ids are hashed modulo this).
    pub table_rows: u64,
    /// Numeric features (Criteo: 13).
    pub dense_features: u64,
    /// Hidden widths of the MLP.
    pub hidden: Vec<u64>,
}

impl CtrConfig {
    /// Criteo-sized `kind`: 26 slots of one id, 13 dense features, embedding width 10 over
    /// 1,000,001 rows (PaddleRec's Criteo configs), MLP 400-400-400.
    pub fn criteo(kind: CtrKind) -> CtrConfig {
        CtrConfig {
            kind,
            slots: 26,
            ids_per_slot: 1,
            embedding_dim: 10,
            table_rows: 1_000_001,
            dense_features: 13,
            hidden: vec![400, 400, 400],
        }
    }

    /// A test-sized `kind`: Criteo's slots and dense features, width 4 over 1,000 rows,
    /// MLP 16-16.
    pub fn tiny(kind: CtrKind) -> CtrConfig {
        CtrConfig {
            embedding_dim: 4,
            table_rows: 1000,
            hidden: vec![16, 16],
            ..CtrConfig::criteo(kind)
        }
    }

    /// Ids per sample (`slots · ids_per_slot`).
    pub fn ids_per_sample(&self) -> u64 {
        self.slots * self.ids_per_slot
    }

    /// The sparse tables: `emb` (width `embedding_dim`), and for Wide&Deep and DeepFM the
    /// first-order table `wide` (width 1).
    pub fn tables(&self) -> Vec<SparseTable> {
        let mut t = vec![SparseTable {
            param: "emb.weight".into(),
            rows_input: "emb_rows".into(),
            dim: self.embedding_dim,
            rows: self.table_rows,
        }];
        if self.kind != CtrKind::Dnn {
            t.push(SparseTable {
                param: "wide.weight".into(),
                rows_input: "wide_rows".into(),
                dim: 1,
                rows: self.table_rows,
            });
        }
        t
    }

    /// The MLP's layer widths from its input to the logit.
    fn mlp_widths(&self) -> Vec<u64> {
        let mut w = vec![self.slots * self.embedding_dim + self.dense_features];
        w.extend(&self.hidden);
        w.push(1);
        w
    }

    /// Parameter elements by formula: the tables, the MLP's weights and biases, and the
    /// wide part's dense linear map (`dense_features + 1`).
    pub fn param_count(&self) -> u64 {
        let tables: u64 = self.tables().iter().map(|t| t.rows * t.dim).sum();
        let w = self.mlp_widths();
        let mlp: u64 = w.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
        let wide = match self.kind {
            CtrKind::Dnn => 0,
            CtrKind::WideDeep | CtrKind::DeepFm => self.dense_features + 1,
        };
        tables + mlp + wide
    }

    /// Matmul FLOPs per sample by formula (2 per multiply-accumulate): the MLP, and the wide
    /// part's dense linear map.
    pub fn matmul_flops_per_sample(&self) -> u64 {
        let w = self.mlp_widths();
        let mlp: u64 = w.windows(2).map(|p| 2 * p[0] * p[1]).sum();
        let wide = match self.kind {
            CtrKind::Dnn => 0,
            CtrKind::WideDeep | CtrKind::DeepFm => 2 * self.dense_features,
        };
        mlp + wide
    }

    /// The training graph with its tables as parameters (see the module docs).
    pub fn build(&self, name: &str) -> Result<Graph, BuildError> {
        self.build_with(name, SparseInput::Lookup)
    }

    /// The training graph with the tables as parameters or as inputs of looked-up rows.
    pub fn build_with(&self, name: &str, sparse: SparseInput) -> Result<Graph, BuildError> {
        let b = ModelBuilder::new(name);
        let mut layers = Layers::default();
        let n_ids = self.ids_per_sample();
        // Inputs first: `finish` moves inputs to the front, so declaring them first keeps
        // every other node's index and the layer ranges below valid.
        let dense_x = b.input("dense_x", &format!("f32[N,{}]", self.dense_features));
        let tables = self.tables();
        let (ids, rows_inputs) = match sparse {
            SparseInput::Lookup => (
                Some(b.input("sparse_ids", &format!("i64[N,{n_ids}]"))),
                vec![],
            ),
            SparseInput::Rows => {
                let r = tables
                    .iter()
                    .map(|t| b.input(&t.rows_input, &format!("f32[N,{n_ids},{}]", t.dim)))
                    .collect();
                (None, r)
            }
        };
        let label = b.input("label", "f32[N,1]");

        // `[N, slots, dim]`: the table's rows for every id, sum-pooled per slot.
        let pooled = |layers: &mut Layers, k: usize, t: &SparseTable| -> Tensor {
            let layer = t.param.split('.').next().unwrap_or("emb").to_string();
            layers.run(&b, &layer, || {
                let rows = match (&ids, rows_inputs.get(k)) {
                    (_, Some(r)) => r.clone(),
                    (Some(ids), None) => {
                        let init = if t.dim == 1 {
                            Init::Constant(0.0)
                        } else {
                            Init::Normal {
                                mean: 0.0,
                                std: 0.01,
                            }
                        };
                        let w = b.scope(&layer, || b.param("weight", &[t.rows, t.dim], init));
                        w.embedding(ids)
                    }
                    (None, None) => unreachable!("Rows mode declares one input per table"),
                };
                if self.ids_per_slot == 1 {
                    return rows;
                }
                let shape: Vec<ReshapeDim> = vec![
                    ReshapeDim::Infer,
                    (self.slots as i64).into(),
                    (self.ids_per_slot as i64).into(),
                    (t.dim as i64).into(),
                ];
                rows.reshape(shape).reduce_sum(&[2], false)
            })
        };
        let emb = pooled(&mut layers, 0, &tables[0]);

        let flat = layers.run(&b, "emb", || {
            let flat = emb.reshape(vec![
                ReshapeDim::Infer,
                ((self.slots * self.embedding_dim) as i64).into(),
            ]);
            b.concat(&[&flat, &dense_x], 1)
        });
        let widths = self.mlp_widths();
        let mut h = flat;
        for (i, pair) in widths.windows(2).enumerate() {
            let last = i + 2 == widths.len();
            let layer = if last {
                "out".to_string()
            } else {
                format!("fc{i}")
            };
            h = layers.run(&b, &layer, || {
                let init = if last {
                    Initializer::XavierUniform
                } else {
                    Initializer::KaimingNormal
                };
                let y = LinearConfig::new(pair[0], pair[1])
                    .with_init(init)
                    .init(&b, &layer)
                    .forward(&h);
                if last {
                    y
                } else {
                    y.relu()
                }
            });
        }
        let mut logit = h;
        if self.kind != CtrKind::Dnn {
            let first = pooled(&mut layers, 1, &tables[1]);
            let wide = layers.run(&b, "wide", || {
                let dense = LinearConfig::new(self.dense_features, 1)
                    .with_init(Initializer::Constant(0.0))
                    .init(&b, "wide.dense")
                    .forward(&dense_x);
                first.reduce_sum(&[1], false) + dense
            });
            logit = layers.run(&b, "wide", || &logit + &wide);
        }
        if self.kind == CtrKind::DeepFm {
            let fm = layers.run(&b, "fm", || {
                let sum = emb.reduce_sum(&[1], false);
                let sum_sq = &sum * &sum;
                let sq_sum = (&emb * &emb).reduce_sum(&[1], false);
                (&sum_sq - &sq_sum).reduce_sum(&[1], true).mul_scalar(0.5)
            });
            logit = layers.run(&b, "fm", || &logit + &fm);
        }
        let (loss, prob) = layers.run(&b, "loss", || {
            let z = &logit;
            let softplus_neg_abs = z.abs().neg().exp().add_scalar(1.0).log();
            let per = &(&z.relu() - &(z * &label)) + &softplus_neg_abs;
            (per.reduce_mean(&[0, 1], false), z.sigmoid())
        });
        let mut g = b.finish(&[&loss, &prob])?;
        layers.name_nodes(&mut g);
        Ok(g)
    }
}

/// Node-index ranges of each layer, for naming nodes after the graph is finished.
#[derive(Default)]
struct Layers {
    ranges: Vec<(String, usize, usize)>,
}

impl Layers {
    fn run<R>(&mut self, b: &ModelBuilder, layer: &str, f: impl FnOnce() -> R) -> R {
        let start = b.len();
        let r = f();
        self.ranges.push((layer.to_string(), start, b.len()));
        r
    }

    /// Names every auto-named (numeric) node `<layer>.<op>_<index>`; parameters keep their
    /// names, which already start with the layer.
    fn name_nodes(&self, g: &mut Graph) {
        let ids: Vec<_> = g.iter().map(|(id, _)| id).collect();
        for (layer, start, end) in &self.ranges {
            for (i, &id) in ids.iter().enumerate().take(*end).skip(*start) {
                let node = g.node_mut(id);
                if matches!(node.op, Op::Param(_)) || !node.name.chars().all(|c| c.is_ascii_digit())
                {
                    continue;
                }
                node.name = format!("{layer}.{}_{i}", node.op.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oar_ir::stats::graph_stats;
    use std::collections::BTreeMap;

    fn bindings(n: u64) -> BTreeMap<String, u64> {
        [("N".to_string(), n)].into_iter().collect()
    }

    #[test]
    fn parameter_counts_and_matmul_flops_match_the_formula() {
        for kind in [CtrKind::Dnn, CtrKind::WideDeep, CtrKind::DeepFm] {
            for cfg in [CtrConfig::tiny(kind), CtrConfig::criteo(kind)] {
                let g = cfg.build(kind.name()).unwrap();
                let s = graph_stats(&g, &bindings(4));
                assert_eq!(s.param_elements, cfg.param_count(), "{kind:?}");
                let mm: u64 = g
                    .iter()
                    .filter(|(_, n)| matches!(n.op, Op::MatMul(_)))
                    .map(|(_, n)| {
                        let ins: Vec<_> = n
                            .inputs
                            .iter()
                            .filter_map(|v| g.value_type(*v).cloned())
                            .collect();
                        oar_ir::op::op_cost(&n.op, &ins, &n.outputs, &bindings(4), 1).flops
                    })
                    .sum();
                assert_eq!(mm, 4 * cfg.matmul_flops_per_sample(), "{kind:?}");
                // Everything else (bias adds, activations, pooling, the loss) is elementwise:
                // well under the matmuls for these widths.
                assert!(
                    s.flops >= mm && s.flops < mm + mm / 5,
                    "{kind:?}: {} vs {mm}",
                    s.flops
                );
            }
        }
    }

    #[test]
    fn rows_form_has_the_same_dense_parameters_and_named_layers() {
        for kind in [CtrKind::Dnn, CtrKind::WideDeep, CtrKind::DeepFm] {
            let cfg = CtrConfig::tiny(kind);
            let full = cfg.build("m").unwrap();
            let rows = cfg.build_with("m", SparseInput::Rows).unwrap();
            let params = |g: &Graph| -> Vec<String> {
                g.iter()
                    .filter_map(|(_, n)| {
                        if let Op::Param(p) = &n.op {
                            Some(p.name.clone())
                        } else {
                            None
                        }
                    })
                    .collect()
            };
            let tables: Vec<String> = cfg.tables().into_iter().map(|t| t.param).collect();
            let dense: Vec<String> = params(&full)
                .into_iter()
                .filter(|p| !tables.contains(p))
                .collect();
            assert_eq!(dense, params(&rows));
            for (_, n) in full.iter() {
                assert!(
                    !n.name.chars().all(|c| c.is_ascii_digit()),
                    "{kind:?}: node {} has no layer name",
                    n.name
                );
            }
        }
    }
}
