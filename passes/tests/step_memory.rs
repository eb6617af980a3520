//! The step-graph memory model's parts on a small MLP step, where each can be counted by
//! hand, and its errors. Its agreement with the compiled step's real allocations is
//! `codegen/tests/step_memory.rs`.

use oar_ir::parse;
use oar_passes::step_memory::{predict_step_memory, StepMemoryError, StepMemoryOptions};
use oar_passes::training::{build_train_step, TrainConfig};

const MLP: &str = r#"
graph @mlp(%x: f32[8,6]) -> (f32[8,5]) {
  %w1 = param "fc1.weight" {init=normal(0.0, 0.5)} : f32[6,16]
  %b1 = param "fc1.bias" {init=normal(0.0, 0.5)} : f32[16]
  %w2 = param "fc2.weight" {init=normal(0.0, 0.5)} : f32[16,5]
  %b2 = param "fc2.bias" {init=normal(0.0, 0.5)} : f32[5]
  %m1 = matmul(%x, %w1) : f32[8,16]
  %a1 = add(%m1, %b1) : f32[8,16]
  %h = tanh(%a1) : f32[8,16]
  %d = dropout(%h) {p=0.25} : f32[8,16]
  %m2 = matmul(%d, %w2) : f32[8,5]
  %y = add(%m2, %b2) : f32[8,5]
  return %y
}
"#;

#[test]
fn the_parts_of_an_mlp_step_add_up() {
    let model = parse(MLP).expect("parse");
    let step =
        build_train_step(&model, &TrainConfig::new("adamw".parse().expect("adamw"))).expect("step");
    let opts = StepMemoryOptions {
        slots: step.slots.iter().map(|s| s.name.clone()).collect(),
        threads: 3,
        scratch_per_thread: 1000,
    };
    let m = predict_step_memory(&step.graph, &opts).expect("prediction");
    let params = 4 * (6 * 16 + 16 + 16 * 5 + 5);
    assert_eq!(m.parameters, params);
    // AdamW: two moments per parameter, and every parameter and moment updated.
    assert_eq!(m.optimizer_state, 2 * params);
    assert_eq!(m.updated_state, 3 * params);
    // x [8, 6], labels [8] i64, lr and step.
    assert_eq!(m.inputs, 4 * 48 + 8 * 8 + 4 + 4);
    // One mask for the forward dropout, replayed by its backward.
    assert_eq!(m.dropout_masks, 4 * 8 * 16);
    // The loss, then the logits in the executor and read back.
    assert_eq!(m.outputs, 2 * 4 + 2 * 4 * 8 * 5);
    assert_eq!(m.scratch, 3000);
    assert_eq!(m.padded_copies, 0);
    // The backward reads the hidden activations: at least tanh's output and the dropped
    // one stay live across the loss.
    assert!(m.activations >= 2 * 4 * 8 * 16, "{m:?}");
    let sum: u64 = m.parts().iter().map(|(_, b)| b).sum();
    assert_eq!(sum, m.total());
    // More threads, more scratch; nothing else moves.
    let more = predict_step_memory(
        &step.graph,
        &StepMemoryOptions {
            threads: 4,
            ..opts.clone()
        },
    )
    .expect("prediction");
    assert_eq!(more.total(), m.total() + 1000);
}

#[test]
fn inference_and_symbolic_graphs_are_errors() {
    let model = parse(MLP).expect("parse");
    let opts = StepMemoryOptions::default();
    let e = predict_step_memory(&model, &opts).expect_err("an inference graph");
    assert!(matches!(e, StepMemoryError::NotTraining(_)), "{e}");
    let symbolic = MLP
        .replace("f32[8,6]", "f32[N,6]")
        .replace("f32[8,", "f32[N,");
    let model = parse(&symbolic).expect("parse");
    let step = build_train_step(&model, &TrainConfig::new("sgd".parse().expect("sgd")));
    // The step builder wants static shapes too; either way the prediction never panics.
    if let Ok(step) = step {
        let e = predict_step_memory(&step.graph, &opts).expect_err("symbolic");
        assert!(e.to_string().contains("static shapes"), "{e}");
    }
}
