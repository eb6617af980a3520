//! Pipeline parallelism: a model with its loss cut by layer into consecutive *stages*, each
//! with a forward graph and a backward graph for one micro-batch, and the optimizer update
//! of a set of parameters as its own graph. The runtime's schedules
//! (`oar_runtime::train::pipeline`) order them; the CLI's runner sends the activations
//! and gradients between ranks.
//!
//! Stages split the encoder layers (`…layers.<i>.…`, the frontend's module names) into
//! contiguous blocks of equal size (the first stages take one more when they do not divide).
//! Every other node goes where its data is: a node that reads a layer's result (the MLM
//! head, the loss) joins the latest stage among its operands; a node computed from graph
//! inputs and parameters alone (the embeddings, the label mask) joins the earliest stage
//! that reads it. Graph inputs and parameters are copied into every stage that reads them;
//! a parameter read by two stages (ERNIE's word embedding, tied to the MLM head) gets a
//! gradient in each, which the runner sums. A value one stage computes and the next reads
//! is a *boundary*: the sender's forward outputs it, the receiver's graphs take it as an
//! input.
//!
//! The backward of a stage recomputes the stage's forward (its graph is the forward with
//! the backward appended), so a stage keeps only its boundary inputs per micro-batch in
//! flight, not every activation. It differentiates `Σ_i ⟨out_i, grad_i⟩` over the float
//! boundary outputs and their gradients from the next stage (inputs `pipeline.grad.<i>`),
//! whose gradient with respect to the stage's inputs and parameters is the vector-Jacobian
//! product the chain rule needs; the last stage differentiates `loss · w` (input
//! [`LOSS_WEIGHT_INPUT`]), `w` the micro-batch's share of the global batch's loss
//! ([`loss_units`]), so the summed gradients over micro-batches are the global batch's.

use super::loss::IGNORE_INDEX;
use super::optim::{insert_optimizer, OptimConfig, Slot};
use super::{append_loss, Emit, LossKind, TrainConfig, TrainError};
use crate::autodiff::append_backward;
use crate::parallel::annotate::layer_prefix;
use oar_ir::dist::ReduceOp;
use oar_ir::op::Op;
use oar_ir::{DType, ExecMode, Graph, NodeId, TensorType, ValueRef};
use oar_runtime::HostTensor;
use std::collections::BTreeMap;

/// The scalar input of the last stage's backward: the micro-batch's share of the loss.
pub const LOSS_WEIGHT_INPUT: &str = "pipeline.loss_weight";

/// Why a model cannot be cut into stages.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("--pp {stages}{chunks}: the model has {layers} layers (`…layers.<i>.…`), fewer than the {total} stages asked (each stage needs at least one layer)")]
    TooFewLayers {
        layers: usize,
        stages: usize,
        chunks: String,
        total: usize,
    },
    #[error("stage {from} computes `{value}`, which stage {to} reads: a pipeline passes values only to the next stage")]
    Skip {
        value: String,
        from: usize,
        to: usize,
    },
    #[error("`{node}` (stage {to}) reads `{value}` from the later stage {from}: the layers are not in order")]
    Backwards {
        node: String,
        value: String,
        from: usize,
        to: usize,
    },
    #[error("pipeline parallelism does not carry batch_norm running statistics yet (`{0}`)")]
    State(String),
    #[error("{0}")]
    Train(#[from] TrainError),
}

/// One stage's graphs for one micro-batch.
#[derive(Debug, Clone)]
pub struct Stage {
    pub index: usize,
    /// Inputs: `data_inputs` (by name), then the received boundary values; outputs: the
    /// boundary values for the next stage, or `[loss]` on the last stage.
    pub forward: Graph,
    /// Inputs: the forward's, then `pipeline.grad.<i>` per sent value (of its type) or
    /// [`LOSS_WEIGHT_INPUT`] on the last stage; outputs: `[loss]` on the last stage, then
    /// the gradient of each received value, then each of `params`' gradients.
    pub backward: Graph,
    /// The step inputs the stage reads (input ids, labels, …), in its graphs' order.
    pub data_inputs: Vec<String>,
    /// Types of the boundary values received from the previous stage, in order.
    pub recv: Vec<TensorType>,
    /// Types of the boundary values sent to the next stage, in order.
    pub send: Vec<TensorType>,
    /// Parameters with a gradient here (name, type), in the backward's output order.
    pub params: Vec<(String, TensorType)>,
    /// The layers (`layers.<i>`) this stage runs.
    pub layers: std::ops::Range<usize>,
}

impl Stage {
    /// Whether the stage computes the loss.
    pub fn is_last(&self) -> bool {
        self.send.is_empty()
    }
}

/// `model` with `cfg`'s loss, cut into `stages` stages (module docs). `what` names the
/// layout in errors (`--pp 2 --chunks 2`).
pub fn build_pipeline_stages(
    model: &Graph,
    cfg: &TrainConfig,
    stages: usize,
    what: (usize, usize),
) -> Result<Vec<Stage>, PipelineError> {
    let lg = append_loss(model, cfg)?;
    if let Some(s) = lg.graph.state.first() {
        return Err(PipelineError::State(s.clone()));
    }
    let g = &lg.graph;
    let layer_of = |name: &str| -> Option<usize> {
        let pre = layer_prefix(name)?;
        pre[pre.rfind('.')? + 1..].parse().ok()
    };
    let layers = g
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Param(p) => layer_of(&p.name),
            // op-contract: pass-through (only parameters carry module names)
            _ => layer_of(&n.name),
        })
        .max()
        .map_or(0, |l| l + 1);
    if layers < stages || stages == 0 {
        let (pp, chunks) = what;
        return Err(PipelineError::TooFewLayers {
            layers,
            stages: pp,
            chunks: match chunks {
                1 => String::new(),
                c => format!(" --chunks {c}"),
            },
            total: stages,
        });
    }
    // Contiguous blocks, the first `layers % stages` one layer longer.
    let bounds: Vec<usize> = (0..=stages)
        .map(|s| s * (layers / stages) + s.min(layers % stages))
        .collect();
    let stage_of_layer = |l: usize| bounds.partition_point(|&b| b <= l) - 1;

    // Live nodes: those the loss depends on.
    let n = g.len();
    let mut live = vec![false; n];
    live[lg.loss.node.index()] = true;
    for i in (0..n).rev() {
        if live[i] {
            for v in &g.nodes()[i].inputs {
                live[v.node.index()] = true;
            }
        }
    }
    // Forward: layer nodes and what reads them; `None` for nodes of sources alone.
    let mut stage: Vec<Option<usize>> = vec![None; n];
    for (id, node) in g.iter() {
        let i = id.index();
        if !live[i] || node.op.is_source() {
            continue;
        }
        let from_inputs = node
            .inputs
            .iter()
            .filter_map(|v| stage[v.node.index()])
            .max();
        // The builder names parameters by module; an op is in the layer whose
        // parameters it reads (or whose name it has).
        let layer = layer_of(&node.name).or_else(|| {
            node.inputs.iter().find_map(|v| match &g.node(v.node).op {
                Op::Param(p) => layer_of(&p.name),
                // op-contract: pass-through (only parameters carry module names)
                _ => None,
            })
        });
        stage[i] = match layer {
            Some(l) => Some(stage_of_layer(l).max(from_inputs.unwrap_or(0))),
            None => from_inputs,
        };
    }
    // Backward: source-only nodes join their earliest reader.
    for i in (0..n).rev() {
        if !live[i] || stage[i].is_some() || g.nodes()[i].op.is_source() {
            continue;
        }
        let readers = g
            .iter()
            .filter(|(_, m)| m.inputs.iter().any(|v| v.node.index() == i))
            .filter_map(|(id, _)| stage[id.index()]);
        stage[i] = Some(readers.min().unwrap_or(stages - 1));
    }
    // Boundaries: values of stage s read by stage s + 1, in node order.
    let mut boundary: Vec<Vec<ValueRef>> = vec![Vec::new(); stages];
    for (id, node) in g.iter() {
        let Some(to) = stage[id.index()] else {
            continue;
        };
        for &v in &node.inputs {
            let Some(from) = stage[v.node.index()] else {
                continue;
            };
            let value = || format!("{}:{}", g.node(v.node).name, v.port);
            if from > to {
                return Err(PipelineError::Backwards {
                    node: node.name.clone(),
                    value: value(),
                    from,
                    to,
                });
            }
            if to > from + 1 {
                return Err(PipelineError::Skip {
                    value: value(),
                    from,
                    to,
                });
            }
            if to == from + 1 && !boundary[from].contains(&v) {
                boundary[from].push(v);
            }
        }
    }
    for b in &mut boundary {
        b.sort_by_key(|v| (v.node.index(), v.port));
    }
    (0..stages)
        .map(|s| {
            let recv: &[ValueRef] = if s == 0 { &[] } else { &boundary[s - 1] };
            let send: &[ValueRef] = if s + 1 == stages {
                std::slice::from_ref(&lg.loss)
            } else {
                &boundary[s]
            };
            let range = bounds[s]..bounds[s + 1];
            build_stage(g, &stage, s, recv, send, s + 1 == stages, range)
        })
        .collect()
}

/// The forward and backward graphs of stage `s` (see [`Stage`]).
fn build_stage(
    g: &Graph,
    stage: &[Option<usize>],
    s: usize,
    recv: &[ValueRef],
    send: &[ValueRef],
    last: bool,
    layers: std::ops::Range<usize>,
) -> Result<Stage, PipelineError> {
    let mut f = Graph::new(format!("{}.stage{s}", g.name));
    f.mode = ExecMode::Training;
    let mine: Vec<NodeId> = g
        .iter()
        .filter(|(id, _)| stage[id.index()] == Some(s))
        .map(|(id, _)| id)
        .collect();
    let mut map: BTreeMap<ValueRef, ValueRef> = BTreeMap::new();
    // Inputs first: the step inputs the stage reads (graph order), then the boundary.
    let mut data_inputs = Vec::new();
    for &id in g.inputs() {
        let reads = mine
            .iter()
            .any(|m| g.node(*m).inputs.iter().any(|v| v.node == id));
        if reads {
            let node = g.node(id);
            let v = f.add_input(node.name.clone(), node.outputs[0].clone());
            map.insert(ValueRef::new(id, 0), v);
            data_inputs.push(node.name.clone());
        }
    }
    let mut recv_types = Vec::new();
    for (i, &v) in recv.iter().enumerate() {
        let ty = value_type(g, v)?;
        map.insert(v, f.add_input(format!("pipeline.recv.{i}"), ty.clone()));
        recv_types.push(ty);
    }
    for &id in &mine {
        let node = g.node(id);
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            if let Some(&m) = map.get(&v) {
                inputs.push(m);
                continue;
            }
            // A parameter or constant of this stage: copied under its name.
            let src = g.node(v.node);
            let copied = f
                .add_node_typed(
                    src.op.clone(),
                    vec![],
                    src.outputs.clone(),
                    Some(src.name.clone()),
                )
                .map_err(TrainError::from)?;
            for port in 0..src.outputs.len() as u32 {
                map.insert(ValueRef::new(v.node, port), ValueRef::new(copied, port));
            }
            inputs.push(ValueRef::new(copied, v.port));
        }
        let new = f
            .add_node_typed(
                node.op.clone(),
                inputs,
                node.outputs.clone(),
                Some(node.name.clone()),
            )
            .map_err(TrainError::from)?;
        for port in 0..node.outputs.len() as u32 {
            map.insert(ValueRef::new(id, port), ValueRef::new(new, port));
        }
    }
    let outs: Vec<ValueRef> = send.iter().map(|v| map[v]).collect();
    let send_types = match last {
        true => Vec::new(),
        false => send
            .iter()
            .map(|&v| value_type(g, v))
            .collect::<Result<_, _>>()?,
    };
    f.set_outputs(outs.clone());

    // Backward: the forward, the surrogate loss, and its gradients.
    let mut b = f.clone();
    let mut e = Emit::new(&mut b, "pipeline");
    let surrogate = if last {
        let w = e.input(LOSS_WEIGHT_INPUT, TensorType::new(DType::F32, vec![]))?;
        e.mul(outs[0], w)?
    } else {
        let mut total: Option<ValueRef> = None;
        for (i, (&o, ty)) in outs.iter().zip(&send_types).enumerate() {
            let gi = e.input(&format!("pipeline.grad.{i}"), ty.clone())?;
            if !ty.dtype.is_float() {
                continue;
            }
            let p = e.mul(o, gi)?;
            let s = e.reduce(ReduceOp::Sum, p, vec![], false)?;
            total = Some(match total {
                Some(t) => e.add(t, s)?,
                None => s,
            });
        }
        match total {
            Some(t) => t,
            None => e.scalar(0.0)?,
        }
    };
    let bwd = append_backward(&b, surrogate, true).map_err(TrainError::from)?;
    let mut b = bwd.graph;
    let by_name: BTreeMap<&str, ValueRef> = bwd
        .input_grads
        .iter()
        .map(|(n, v)| (n.as_str(), *v))
        .collect();
    let mut outputs = Vec::new();
    if last {
        outputs.push(outs[0]);
    }
    let mut missing = Vec::new();
    for (i, ty) in recv_types.iter().enumerate() {
        match by_name.get(format!("pipeline.recv.{i}").as_str()) {
            Some(&v) => outputs.push(v),
            None => {
                missing.push((outputs.len(), ty.clone()));
                outputs.push(outs[0]);
            }
        }
    }
    // A received value the loss does not depend on through this stage: a zero gradient.
    let mut e = Emit::new(&mut b, "pipeline.zero");
    for (at, ty) in missing {
        outputs[at] = e.fill(0.0, ty)?;
    }
    let mut params = Vec::new();
    for (name, v) in &bwd.param_grads {
        outputs.push(*v);
        params.push((name.clone(), value_type(&b, *v)?));
    }
    b.set_outputs(outputs);
    b.canonicalize_order();
    oar_ir::verify(&b).map_err(|e| TrainError::Verify(format!("stage {s} backward: {e}")))?;
    oar_ir::verify(&f).map_err(|e| TrainError::Verify(format!("stage {s} forward: {e}")))?;
    Ok(Stage {
        index: s,
        forward: f,
        backward: b,
        data_inputs,
        recv: recv_types,
        send: send_types,
        params,
        layers,
    })
}

fn value_type(g: &Graph, v: ValueRef) -> Result<TensorType, TrainError> {
    g.value_type(v)
        .cloned()
        .ok_or_else(|| TrainError::Verify(format!("no value {v}")))
}

/// The optimizer update of `params` (name, type; `source` holds each as a parameter node to
/// copy) as a graph: inputs `<name>.grad` in order (the summed, clipped gradients), then
/// `lr`, `step`; no model outputs, and the new parameters and optimizer state as state
/// updates. Clipping and accumulation are the caller's (the norm spans every stage).
pub fn build_update(
    params: &[(String, TensorType)],
    sources: &[&Graph],
    cfg: &OptimConfig,
) -> Result<(Graph, Vec<Slot>), TrainError> {
    let mut g = Graph::new("pipeline_update");
    g.mode = ExecMode::Training;
    let mut grads = Vec::with_capacity(params.len());
    for (name, ty) in params {
        grads.push((
            name.clone(),
            g.add_input(format!("{name}.grad"), ty.clone()),
        ));
    }
    for (name, _) in params {
        let node = sources
            .iter()
            .find_map(|s| {
                s.nodes()
                    .iter()
                    .find(|n| matches!(&n.op, Op::Param(p) if p.name == *name))
            })
            .ok_or_else(|| TrainError::NoParam { name: name.clone() })?;
        g.add_node_typed(
            node.op.clone(),
            vec![],
            node.outputs.clone(),
            Some(node.name.clone()),
        )?;
    }
    let cfg = OptimConfig {
        clip_global_norm: None,
        accumulate: 1,
        ..cfg.clone()
    };
    let slots = insert_optimizer(&mut g, &grads, &cfg)?;
    g.canonicalize_order();
    oar_ir::verify(&g).map_err(|e| TrainError::Verify(format!("pipeline update: {e}")))?;
    Ok((g, slots))
}

/// How many units the loss averages over in `labels` (a micro-batch's, or the global
/// batch's): scored positions for the masked-LM loss, rows otherwise. A micro-batch's loss
/// weight is its units over the global batch's, so the weighted sum of micro-batch means is
/// the global mean. `None` for a loss this does not know (distillation).
pub fn loss_units(kind: &LossKind, labels: &HostTensor) -> Option<f64> {
    match kind {
        LossKind::MaskedLm => {
            let ids = labels.as_i64()?;
            Some(ids.iter().filter(|&&l| l != IGNORE_INDEX).count() as f64)
        }
        LossKind::CrossEntropy { .. } | LossKind::Mse | LossKind::ArcMargin { .. } => {
            labels.shape.first().map(|&r| r as f64)
        }
        LossKind::Distill { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oar_runtime::interp::{run_with_options, RunOptions};

    /// A 2-row ERNIE masked-LM with `layers` layers (hidden 16, dropout 0.1).
    fn ernie(layers: u64) -> Graph {
        let cfg = oar_models::ErnieConfig {
            vocab: 50,
            max_positions: 8,
            dropout: 0.1,
            universal: oar_models::ernie::StackConfig::new(layers, 16, 2, 32),
            ..oar_models::ErnieConfig::nano()
        };
        let m = cfg.build_masked_lm("mlm").expect("build ERNIE");
        let b = BTreeMap::from([("N".to_string(), 2u64), ("seq".to_string(), 8u64)]);
        crate::parallel::specialize(&m, &b).expect("specialize")
    }

    fn config() -> TrainConfig {
        let mut cfg = TrainConfig::new("adamw".parse().expect("adamw"));
        cfg.loss = LossKind::MaskedLm;
        cfg
    }

    /// Random token ids and labels (every other position scored), by input name.
    fn batch() -> BTreeMap<String, HostTensor> {
        let mut s = 12345u64;
        let mut next = |m: i64| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % m as u64) as i64
        };
        let ids: Vec<i64> = (0..16).map(|_| next(50)).collect();
        let labels: Vec<i64> = (0..16)
            .map(|i| if i % 2 == 0 { next(50) } else { IGNORE_INDEX })
            .collect();
        let pos: Vec<i64> = (0..16).map(|i| i % 8).collect();
        BTreeMap::from([
            ("input_ids".into(), HostTensor::i64(vec![2, 8], ids)),
            (
                "token_type_ids".into(),
                HostTensor::i64(vec![2, 8], vec![0; 16]),
            ),
            ("position_ids".into(), HostTensor::i64(vec![2, 8], pos)),
            (
                "task_type_ids".into(),
                HostTensor::i64(vec![2, 8], vec![0; 16]),
            ),
            ("labels".into(), HostTensor::i64(vec![2, 8], labels)),
        ])
    }

    fn feed(
        g: &Graph,
        named: &BTreeMap<String, HostTensor>,
        rest: &[HostTensor],
    ) -> Vec<HostTensor> {
        let mut x: Vec<HostTensor> = g
            .inputs()
            .iter()
            .filter_map(|&i| named.get(&g.node(i).name).cloned())
            .collect();
        x.extend_from_slice(rest);
        x
    }

    #[test]
    fn two_stages_chain_to_one_process_loss_and_gradients() {
        let (model, cfg) = (ernie(2), config());
        let stages = build_pipeline_stages(&model, &cfg, 2, (2, 1)).expect("stages");
        assert_eq!(stages[0].send.len(), 1, "the hidden state is the boundary");
        assert_eq!(stages[1].recv, stages[0].send);
        assert_eq!(
            (stages[0].layers.clone(), stages[1].layers.clone()),
            (0..1, 1..2)
        );
        // One process: the loss and every parameter's gradient.
        let lg = append_loss(&model, &cfg).expect("loss");
        let bwd = append_backward(&lg.graph, lg.loss, false).expect("backward");
        let mut rg = bwd.graph.clone();
        let mut outs = vec![lg.loss];
        outs.extend(bwd.param_grads.iter().map(|(_, v)| *v));
        rg.state.clear();
        rg.set_outputs(outs);
        let w = oar_runtime::init::init_weights(&rg, 7).expect("init");
        let data = batch();
        // Dropout draws the same masks in the stages: they keep the nodes' names.
        let opts = RunOptions::training(3, 1);
        let run =
            |g: &Graph, x: Vec<HostTensor>| run_with_options(g, &x, &w, opts).expect("run").outputs;
        let want = run(&rg, feed(&rg, &data, &[]));
        let act = run(&stages[0].forward, feed(&stages[0].forward, &data, &[]));
        let mut x1 = feed(&stages[1].backward, &data, &act);
        x1.push(HostTensor::f32(vec![], vec![1.0]));
        let b1 = run(&stages[1].backward, x1);
        let b0 = run(
            &stages[0].backward,
            feed(&stages[0].backward, &data, &act[..0])
                .into_iter()
                .chain([b1[1].clone()])
                .collect(),
        );
        let (l0, l1) = (want[0].as_f32().unwrap()[0], b1[0].as_f32().unwrap()[0]);
        assert!((l0 - l1).abs() <= 1e-6 * l0.abs(), "{l0} vs {l1}");
        // Each parameter's gradient: summed over the stages that hold it (the tied word
        // embedding is in both).
        let mut got: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        for (st, outs) in [(&stages[0], &b0[..]), (&stages[1], &b1[2..])] {
            for ((name, _), g) in st.params.iter().zip(outs) {
                let g = g.as_f32().unwrap();
                got.entry(name.as_str())
                    .and_modify(|a| a.iter_mut().zip(g).for_each(|(a, b)| *a += b))
                    .or_insert_with(|| g.to_vec());
            }
        }
        assert_eq!(got.len(), bwd.param_grads.len());
        assert!(stages[0]
            .params
            .iter()
            .any(|(n, _)| n.ends_with("word_embeddings.weight")));
        assert!(stages[1]
            .params
            .iter()
            .any(|(n, _)| n.ends_with("word_embeddings.weight")));
        for ((name, _), g) in bwd.param_grads.iter().zip(&want[1..]) {
            let g = g.as_f32().unwrap();
            let scale = g.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
            for (a, b) in g.iter().zip(&got[name.as_str()]) {
                assert!((a - b).abs() <= 1e-5 * scale, "{name}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn more_stages_than_layers_is_an_error_naming_both() {
        let e = build_pipeline_stages(&ernie(2), &config(), 3, (3, 1)).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("--pp 3") && e.contains("2 layers") && e.contains("3 stages"),
            "{e}"
        );
        let e = build_pipeline_stages(&ernie(2), &config(), 4, (2, 2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--pp 2 --chunks 2") && e.contains("4 stages"),
            "{e}"
        );
    }
}
