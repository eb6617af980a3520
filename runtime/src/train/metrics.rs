//! What the loop reports, and to whom: an [`Observer`] receives every step, evaluation and
//! checkpoint (the CLI draws a progress bar from it; the library prints nothing), and
//! [`JsonlLog`] writes them as JSON lines.
//!
//! Log format, one object per line: `{"kind":"step","step":S,"epoch":E,"loss":L,"lr":R,
//! "samples_per_sec":T}`, `{"kind":"eval","step":S,"eval_accuracy":A,"eval_loss":L,
//! "samples":N}` and `{"kind":"checkpoint","step":S,"path":P}`. A text (masked-LM) run adds
//! `"tokens_per_sec"` to step lines and `"tokens"` (scored positions) to eval lines, whose
//! accuracy and loss are then token-level over the masked positions. A distillation run adds
//! its loss parts to step lines: `"teacher_loss"`, `"student_loss"`, `"distill_loss"`.

use super::TrainError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One training step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub step: u64,
    /// Epochs of the training split completed when the step's batch was drawn.
    pub epoch: u64,
    pub loss: f32,
    pub lr: f64,
    /// Batch size over the step's wall time (batch fetch included).
    pub samples_per_sec: f64,
    /// Loss scaling skipped the update (non-finite gradients).
    pub skipped: bool,
    /// Tokens (batch · seq) over the step's wall time, for a text stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    /// The parts of a joint loss by name (a distillation step: `teacher_loss`,
    /// `student_loss`, `distill_loss`), as fields of the log line; empty otherwise.
    #[serde(flatten)]
    pub losses: BTreeMap<String, f32>,
}

/// One evaluation on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRecord {
    pub step: u64,
    /// Fraction of scored rows (samples; masked tokens for text) whose largest logit is the
    /// label.
    pub eval_accuracy: f64,
    /// Mean cross-entropy of the softmax of the logits over the scored rows (for text: the
    /// validation MLM loss).
    pub eval_loss: f64,
    pub samples: usize,
    /// Scored (masked) positions, for a text stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The step count reached (resumed runs count the steps before the resume).
    pub steps: u64,
    /// Steps run by this invocation.
    pub steps_run: u64,
    pub final_loss: Option<f32>,
    pub best_eval_accuracy: Option<f64>,
    pub last_eval: Option<EvalRecord>,
    pub seconds: f64,
}

/// Receives progress; every method defaults to doing nothing.
pub trait Observer {
    fn on_step(&mut self, _r: &StepRecord) -> Result<(), TrainError> {
        Ok(())
    }
    fn on_eval(&mut self, _r: &EvalRecord) -> Result<(), TrainError> {
        Ok(())
    }
    fn on_checkpoint(&mut self, _step: u64, _path: &Path) -> Result<(), TrainError> {
        Ok(())
    }
    /// After every save point, on every process, whether or not it wrote (a background
    /// save may still be writing).
    fn on_save_point(&mut self, _step: u64) -> Result<(), TrainError> {
        Ok(())
    }
}

/// The observer that ignores everything.
impl Observer for () {}

/// JSON lines to a file (appended, so a resumed run continues the same log; its folder is
/// created if needed).
pub struct JsonlLog {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonlLog {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> Result<JsonlLog, TrainError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| TrainError::Log(format!("{}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::Log(format!("{}: {e}", path.display())))?;
        Ok(JsonlLog {
            path: path.to_path_buf(),
            file,
        })
    }

    fn line(&mut self, kind: &str, record: serde_json::Value) -> Result<(), TrainError> {
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.into());
        if let serde_json::Value::Object(fields) = record {
            obj.extend(fields);
        }
        let text = serde_json::Value::Object(obj).to_string();
        writeln!(self.file, "{text}")
            .map_err(|e| TrainError::Log(format!("{}: {e}", self.path.display())))
    }

    fn value(r: &impl Serialize) -> Result<serde_json::Value, TrainError> {
        serde_json::to_value(r).map_err(|e| TrainError::Log(e.to_string()))
    }
}

impl Observer for JsonlLog {
    fn on_step(&mut self, r: &StepRecord) -> Result<(), TrainError> {
        self.line("step", JsonlLog::value(r)?)
    }
    fn on_eval(&mut self, r: &EvalRecord) -> Result<(), TrainError> {
        self.line("eval", JsonlLog::value(r)?)
    }
    fn on_checkpoint(&mut self, step: u64, path: &Path) -> Result<(), TrainError> {
        let v = serde_json::json!({"step": step, "path": path.display().to_string()});
        self.line("checkpoint", v)
    }
}

/// The area under the ROC curve of `scores` against binary `labels` (> 0.5 is positive):
/// the probability that a random positive scores above a random negative, ties counting
/// half (the Mann–Whitney statistic over ranks with ties averaged). `None` when either class
/// is absent or the lengths differ.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|&&l| l > 0.5).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * order[i..=j].iter().filter(|&&k| labels[k] > 0.5).count() as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod auc_tests {
    use super::auc;

    #[test]
    fn auc_counts_ordered_pairs_and_halves_ties() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.5, 0.5], &[0.0, 1.0]), Some(0.5));
        assert_eq!(auc(&[1.0, 2.0], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[1.0, 2.0], &[1.0, 1.0]), None);
    }
}
