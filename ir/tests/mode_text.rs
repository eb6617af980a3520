//! The execution mode and state updates in the text format, and what the verifier says
//! about them.

use oar_ir::op::{DropoutMode, Op};
use oar_ir::{parse, print, ExecMode};

const TRAIN: &str = r#"graph @t(%x: f32[N,3,4,4]) -> (f32[N,3,4,4]) mode=training {
  %s = param "bn.weight" : f32[3]
  %b = param "bn.bias" : f32[3]
  %m = param "bn._mean" : f32[3]
  %v = param "bn._variance" : f32[3]
  %bn = batch_norm(%x, %s, %b, %m, %v) {momentum=0.9} : (f32[N,3,4,4], f32[3], f32[3])
  %d = dropout(%bn) {p=0.2, mode=downscale_in_infer} : f32[N,3,4,4]
  return %d
  update "bn._mean" = %bn#1
  update "bn._variance" = %bn#2
}
"#;

#[test]
fn training_graph_prints_mode_and_updates_and_reads_back() {
    let g = parse(TRAIN).unwrap();
    assert_eq!(g.mode, ExecMode::Training);
    assert_eq!(
        g.state,
        vec!["bn._mean".to_string(), "bn._variance".to_string()]
    );
    assert_eq!(g.model_outputs().len(), 1);
    assert_eq!(g.outputs().len(), 3);
    let d = g.node(g.find("d").unwrap());
    assert_eq!(
        d.op,
        Op::Dropout {
            p: 0.2,
            mode: DropoutMode::DownscaleInInfer,
            mask_of: None,
        }
    );
    assert_eq!(print(&g), TRAIN);
}

#[test]
fn inference_graph_prints_no_mode_and_default_dropout_mode() {
    let text =
        "graph @i(%x: f32[4]) -> (f32[4]) {\n  %d = dropout(%x) {p=0.5} : f32[4]\n  return %d\n}\n";
    let g = parse(text).unwrap();
    assert_eq!(g.mode, ExecMode::Inference);
    assert_eq!(print(&g), text);
    let explicit = text.replace("{p=0.5}", "{p=0.5, mode=upscale_in_train}");
    assert_eq!(parse(&explicit).unwrap(), g);
    let explicit_mode = text.replace(") {\n", ") mode=inference {\n");
    assert_eq!(parse(&explicit_mode).unwrap(), g);
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn bad_modes_and_updates_are_errors() {
    let e = error(&TRAIN.replace("mode=training", "mode=train"));
    assert!(e.contains("unknown mode `train`"), "{e}");
    let e = error(&TRAIN.replace("mode=downscale_in_infer", "mode=sideways"));
    assert!(e.contains("downscale_in_infer"), "{e}");
    let e = error(&TRAIN.replace("update \"bn._variance\"", "update \"bn._mean\""));
    assert!(e.contains("updated twice"), "{e}");
    let e = error(&TRAIN.replace("update \"bn._variance\"", "update \"nope\""));
    assert!(e.contains("no parameter"), "{e}");
    let e = error(&TRAIN.replace("= %bn#2", "= %d"));
    assert!(e.contains("new value"), "{e}");
    let e = error(&TRAIN.replace(" mode=training", ""));
    assert!(e.contains("training"), "{e}");
}
