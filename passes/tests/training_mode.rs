//! Training graphs through the inference pipeline: nothing computed from parameters is
//! folded, dropout and the training form of batch_norm stay, the mode and the state updates
//! survive, and the optimized graph computes the same outputs and state in training.
//! Inference graphs: only identity dropouts go; `downscale_in_infer` keeps its scale.

use oar_ir::op::{DropoutMode, Op};
use oar_ir::{parse, ExecMode, Graph};
use oar_passes::{PassContext, Pipeline};
use oar_runtime::interp::{run_with_options, RunOptions};
use oar_runtime::{init::init_weights, run, HostTensor, Weights};

const TRAINING: &str = r#"
graph @train(%x: f32[2,3,6,6]) -> (f32[2,4,6,6]) mode=training {
  %w = param "conv.weight" {init=normal(0.0, 0.5)} : f32[4,3,3,3]
  %c = conv2d(%x, %w) {padding=[1, 1, 1, 1]} : f32[2,4,6,6]
  %s = param "bn.weight" {init=normal(1.0, 0.2)} : f32[4]
  %b = param "bn.bias" {init=normal(0.0, 0.2)} : f32[4]
  %m = param "bn._mean" {init=normal(0.0, 0.2)} : f32[4]
  %v = param "bn._variance" {init=uniform(0.5, 1.5)} : f32[4]
  %bn = batch_norm(%c, %s, %b, %m, %v) {momentum=0.9} : (f32[2,4,6,6], f32[4], f32[4])
  %r = relu(%bn) : f32[2,4,6,6]
  %d = dropout(%r) {p=0.25} : f32[2,4,6,6]
  %d2 = dropout(%d) {p=0.5, mode=downscale_in_infer} : f32[2,4,6,6]
  %d3 = dropout(%r) {p=0.25} : f32[2,4,6,6]
  %o = add(%d2, %d3) : f32[2,4,6,6]
  return %o
  update "bn._mean" = %bn#1
  update "bn._variance" = %bn#2
}
"#;

const INFERENCE: &str = r#"
graph @infer(%x: f32[2,8]) -> (f32[2,8]) {
  %a = dropout(%x) {p=0.1} : f32[2,8]
  %r = relu(%a) : f32[2,8]
  %d = dropout(%r) {p=0.2, mode=downscale_in_infer} : f32[2,8]
  return %d
}
"#;

fn optimize(g: Graph) -> Graph {
    let cluster = oar_ir::Cluster::resolve("cpu").unwrap();
    let mut cx = PassContext::new(cluster.node_groups[0].device.clone());
    cx.verify = true;
    cx.mode = g.mode;
    let p = Pipeline::named("inference", &[]).unwrap();
    p.run(g, &cx, |_, _| {}).expect("pipeline").0
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes().iter().filter(|n| pred(&n.op)).count()
}

fn input(shape: Vec<usize>, seed: u64) -> HostTensor {
    let n = shape.iter().product();
    let mut s = seed | 1;
    let data = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    HostTensor::f32(shape, data)
}

fn max_diff(a: &HostTensor, b: &HostTensor) -> f32 {
    let (a, b) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn training_graph_keeps_dropout_batch_norm_and_state_through_the_inference_pipeline() {
    let g = parse(TRAINING).unwrap();
    let opt = optimize(g.clone());
    assert_eq!(opt.mode, ExecMode::Training);
    assert_eq!(opt.state, g.state, "state updates survive");
    // Two dropouts of one value are two masks: not merged.
    assert_eq!(
        count(&opt, |o| matches!(o, Op::Dropout { .. })),
        3,
        "{}",
        oar_ir::print(&opt)
    );
    assert_eq!(
        count(&opt, |o| matches!(
            o,
            Op::BatchNorm {
                momentum: Some(_),
                ..
            }
        )),
        1,
        "{}",
        oar_ir::print(&opt)
    );
    // The conv weight is a parameter, not a constant: nothing was precomputed from it.
    assert_eq!(
        count(&opt, |o| matches!(o, Op::Constant(_))),
        0,
        "{}",
        oar_ir::print(&opt)
    );
    let w = init_weights(&g, 5).unwrap();
    let x = vec![input(vec![2, 3, 6, 6], 9)];
    let opts = RunOptions::training(17, 3);
    let a = run_with_options(&g, &x, &w, opts).unwrap();
    let b = run_with_options(&opt, &x, &w, opts).unwrap();
    assert!(max_diff(&a.outputs[0], &b.outputs[0]) <= 1e-5);
    for ((na, va), (nb, vb)) in a.state.iter().zip(&b.state) {
        assert_eq!(na, nb);
        assert!(max_diff(va, vb) <= 1e-6, "{na}");
    }
    // The verifier-checked text of the optimized graph reads back.
    assert_eq!(parse(&oar_ir::print(&opt)).unwrap(), opt);
}

#[test]
fn inference_pipeline_drops_only_identity_dropouts() {
    let g = parse(INFERENCE).unwrap();
    let opt = optimize(g.clone());
    let left: Vec<DropoutMode> = opt
        .nodes()
        .iter()
        .filter_map(|n| match n.op {
            Op::Dropout { mode, .. } => Some(mode),
            _ => None,
        })
        .collect();
    assert_eq!(left, vec![DropoutMode::DownscaleInInfer]);
    let x = vec![input(vec![2, 8], 3)];
    let a = run(&g, &x, &Weights::new()).unwrap();
    let b = run(&opt, &x, &Weights::new()).unwrap();
    assert!(max_diff(&a[0], &b[0]) <= 1e-6);
    // downscale_in_infer at inference: relu(x) · 0.8.
    let want: Vec<f32> = x[0]
        .as_f32()
        .unwrap()
        .iter()
        .map(|v| v.max(0.0) * 0.8)
        .collect();
    assert!(max_diff(&a[0], &HostTensor::f32(vec![2, 8], want)) <= 1e-6);
}
