//! The training-step graph contract, checked once before a run so a mismatch is reported
//! by input or output position and expected type instead of failing inside the interpreter.

use super::TrainError;
use oar_ir::{DType, ExecMode, Graph, TensorType};

/// What the loop needs to know about a step graph that follows the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct StepContract {
    /// The model's inputs (everything before `labels`, `lr`, `step`).
    pub model_inputs: Vec<(String, TensorType)>,
    /// The logits' type, `[N, classes]` (or `[N, seq, vocab]` for token-level losses).
    pub logits: TensorType,
    /// Names of the parameters the step writes back.
    pub state: Vec<String>,
}

fn input_type(g: &Graph, k: usize) -> (String, TensorType) {
    let n = g.node(g.inputs()[k]);
    (n.name.clone(), n.outputs[0].clone())
}

fn expect(
    what: &str,
    name: &str,
    ty: &TensorType,
    dtype: DType,
    rank: usize,
) -> Result<(), TrainError> {
    if ty.dtype == dtype && ty.rank() == rank {
        return Ok(());
    }
    let want = match rank {
        0 => format!("{}[]", dtype.name()),
        1 => format!("{}[N]", dtype.name()),
        r => format!("{} of rank {r}", dtype.name()),
    };
    Err(TrainError::Contract(format!(
        "{what} (`{name}`) must be {want}, found {ty}"
    )))
}

impl StepContract {
    /// Checks `g`: mode=training; inputs `..model, labels: i64[N], lr: f32[], step: f32[]`;
    /// outputs `loss: f32[], logits: f32[N, classes], ..` then state updates. Token-level
    /// steps have logits `f32[N, seq, vocab]` and labels `i64[N, seq]`; regression steps
    /// (MSE) labels of the logits' type.
    pub fn check(g: &Graph) -> Result<StepContract, TrainError> {
        if g.mode != ExecMode::Training {
            return Err(TrainError::Contract(
                "the graph is not mode=training (write `mode=training` after its signature)".into(),
            ));
        }
        let n = g.inputs().len();
        if n < 4 {
            return Err(TrainError::Contract(format!(
                "expected inputs (model inputs.., labels: i64[N], lr: f32[], step: f32[]), \
                 found {n} input(s)"
            )));
        }
        let (lname, labels) = input_type(g, n - 3);
        let (rname, lr) = input_type(g, n - 2);
        expect("input -2, the learning rate", &rname, &lr, DType::F32, 0)?;
        let (sname, step) = input_type(g, n - 1);
        expect("input -1, the step", &sname, &step, DType::F32, 0)?;
        let outs = g.model_outputs();
        if outs.len() < 2 {
            return Err(TrainError::Contract(format!(
                "expected outputs (loss: f32[], logits: f32[N, classes], ..), found {} model \
                 output(s)",
                outs.len()
            )));
        }
        let ty = |k: usize| g.node(outs[k].node).outputs[outs[k].port as usize].clone();
        expect("output 0, the loss", "loss", &ty(0), DType::F32, 0)?;
        let logits = ty(1);
        if logits.dtype != DType::F32 || logits.rank() < 2 {
            return Err(TrainError::Contract(format!(
                "output 1, the logits, must be f32[N, classes] or f32[N, seq, vocab], found {logits}"
            )));
        }
        // Class ids for every row of the logits (a token's id for masked-LM logits); the
        // regression loss (MSE) takes labels of the logits' own type instead.
        let mut ids = logits.shape.0.clone();
        ids.pop();
        let class_ids = labels.dtype == DType::I64 && labels.shape.0 == ids;
        if !class_ids && labels != logits {
            return Err(TrainError::Contract(format!(
                "input -3, the labels (`{lname}`), must be i64{} (class ids of the logits \
                 {logits}) or the logits' own type; found {labels}",
                oar_ir::Shape(ids)
            )));
        }
        Ok(StepContract {
            model_inputs: (0..n - 3).map(|k| input_type(g, k)).collect(),
            logits,
            state: g.state.clone(),
        })
    }

    /// The number of classes (the logits' last dim), when static.
    pub fn classes(&self) -> Option<u64> {
        self.logits.shape.0.last().and_then(|d| d.as_static())
    }
}
