//! What the training loop needs from a data stream, image or text: the next batch as step
//! inputs, the position a checkpoint stores, and the validation batches.

use super::loader::{eval_batches, Loader, LoaderPosition};
use super::Dataset;
use crate::tensor::HostTensor;

/// One batch as the step graph takes it: the model inputs, then the labels.
#[derive(Debug, Clone, PartialEq)]
pub struct StepBatch {
    /// The model inputs, in the graph's order (images; or the four id inputs of ERNIE).
    pub inputs: Vec<HostTensor>,
    /// `[batch]` class ids, or `[batch, seq]` token ids with −100 where not scored.
    pub labels: HostTensor,
    /// Tokens in the batch (`batch · seq`) for a text stream; the loop reports tokens/s.
    pub tokens: Option<usize>,
}

/// A stream of training batches the loop can draw from, checkpoint and resume.
pub trait BatchSource {
    /// The held-out data the stream's evaluation batches are cut from.
    type Validation;

    /// The next batch (a new epoch starts when the current one has no full batch left).
    fn next_step_batch(&mut self) -> StepBatch;

    /// The position a checkpoint stores; restoring it continues with the same batches.
    fn data_position(&self) -> LoaderPosition;

    /// Samples (images or sequences) per batch.
    fn batch_size(&self) -> usize;

    /// Samples in `val`.
    fn validation_len(val: &Self::Validation) -> usize;

    /// Every validation sample once, in batches of `batch` (the last one padded from the
    /// start), each with its number of real samples.
    fn validation_batches(&self, val: &Self::Validation, batch: usize) -> Vec<(StepBatch, usize)>;
}

impl BatchSource for Loader {
    type Validation = Dataset;

    fn next_step_batch(&mut self) -> StepBatch {
        let b = self.next_batch();
        StepBatch {
            inputs: vec![b.images],
            labels: b.labels,
            tokens: None,
        }
    }

    fn data_position(&self) -> LoaderPosition {
        self.position()
    }

    fn batch_size(&self) -> usize {
        self.config().batch
    }

    fn validation_len(val: &Dataset) -> usize {
        val.len()
    }

    fn validation_batches(&self, val: &Dataset, batch: usize) -> Vec<(StepBatch, usize)> {
        eval_batches(val, batch, &self.config().augment)
            .into_iter()
            .map(|(b, real)| {
                let sb = StepBatch {
                    inputs: vec![b.images],
                    labels: b.labels,
                    tokens: None,
                };
                (sb, real)
            })
            .collect()
    }
}
