//! Moving a pipeline's activations and gradients between ranks: each message is a header
//! (its [`MessageId`] and payload size) and the payload (the tensors' bytes, in order). The
//! receiver reads whatever its peer sent next; a message other than the one it waits for
//! is kept until asked for, so an interleaved schedule may receive in a different order
//! than its peer sends, and a message nobody asks for by the end of a step is an error
//! ([`Mailbox::check_empty`]) rather than a silent mix-up.

use super::pipeline::{Kind, MessageId};
use crate::comm::{CommError, Communicator};
use crate::tensor::{HostTensor, TensorData};
use oar_ir::{DType, TensorType};
use std::collections::BTreeMap;

/// Why a pipeline message could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum PipeCommError {
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("pipeline message {id:?}: {what}")]
    Bad { id: MessageId, what: String },
    #[error("rank {rank}: messages left unreceived at the end of the step: {left}")]
    Left { rank: u64, left: String },
}

const HEADER: usize = 32;

/// Received messages not yet asked for, by (sender, id).
#[derive(Debug, Default)]
pub struct Mailbox {
    waiting: BTreeMap<(u64, MessageId), Vec<u8>>,
}

fn tensor_bytes(t: &HostTensor, out: &mut Vec<u8>) {
    match &t.data {
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
    }
}

fn elem(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => Some(4),
        DType::I64 | DType::F64 => Some(8),
        DType::Bool => Some(1),
        // op-contract: pass-through (pipeline boundaries carry these dtypes only)
        _ => None,
    }
}

impl Mailbox {
    /// Sends `tensors` to global rank `peer` as message `id` (buffered).
    pub fn send(
        comm: &dyn Communicator,
        peer: u64,
        id: MessageId,
        tensors: &[HostTensor],
    ) -> Result<(), PipeCommError> {
        let mut payload = Vec::new();
        for t in tensors {
            tensor_bytes(t, &mut payload);
        }
        let kind = match id.kind {
            Kind::Activation => 1u64,
            Kind::Gradient => 2,
        };
        let mut header = Vec::with_capacity(HEADER);
        for x in [
            kind,
            id.micro_batch as u64,
            id.to_stage as u64,
            payload.len() as u64,
        ] {
            header.extend_from_slice(&x.to_le_bytes());
        }
        comm.send(peer, &header)?;
        Ok(comm.send(peer, &payload)?)
    }

    /// Receives message `id` from global rank `peer` as tensors of `types`, keeping any
    /// other message that arrives first.
    pub fn recv(
        &mut self,
        comm: &dyn Communicator,
        peer: u64,
        id: MessageId,
        types: &[TensorType],
    ) -> Result<Vec<HostTensor>, PipeCommError> {
        let bytes = loop {
            if let Some(b) = self.waiting.remove(&(peer, id)) {
                break b;
            }
            let mut header = [0u8; HEADER];
            comm.recv(peer, &mut header)?;
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&header[8 * i..8 * i + 8]);
                u64::from_le_bytes(w)
            };
            let kind = match word(0) {
                1 => Kind::Activation,
                2 => Kind::Gradient,
                k => {
                    return Err(PipeCommError::Bad {
                        id,
                        what: format!("rank {peer} sent a header of unknown kind {k}"),
                    })
                }
            };
            let got = MessageId {
                kind,
                micro_batch: word(1) as usize,
                to_stage: word(2) as usize,
            };
            let mut payload = vec![0u8; word(3) as usize];
            comm.recv(peer, &mut payload)?;
            if self.waiting.insert((peer, got), payload).is_some() {
                return Err(PipeCommError::Bad {
                    id: got,
                    what: format!("rank {peer} sent it twice"),
                });
            }
        };
        let bad = |what: String| PipeCommError::Bad { id, what };
        let mut out = Vec::with_capacity(types.len());
        let mut at = 0;
        for ty in types {
            let dims: Vec<usize> = ty
                .shape
                .as_static()
                .ok_or_else(|| bad(format!("symbolic type {ty}")))?
                .into_iter()
                .map(|d| d as usize)
                .collect();
            let n: usize = dims.iter().product();
            let size = elem(ty.dtype).ok_or_else(|| bad(format!("cannot carry {ty}")))?;
            let end = at + n * size;
            let b = bytes
                .get(at..end)
                .ok_or_else(|| bad(format!("{} bytes, fewer than the types need", bytes.len())))?;
            let w8 = |c: &[u8]| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                w
            };
            out.push(match ty.dtype {
                DType::F32 => HostTensor::f32(
                    dims,
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                DType::I64 => HostTensor::i64(
                    dims,
                    b.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(w8(c)))
                        .collect(),
                ),
                DType::F64 => HostTensor {
                    shape: dims,
                    data: TensorData::F64(
                        b.chunks_exact(8)
                            .map(|c| f64::from_le_bytes(w8(c)))
                            .collect(),
                    ),
                },
                _ => HostTensor {
                    shape: dims,
                    data: TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
                },
            });
            at = end;
        }
        if at != bytes.len() {
            return Err(bad(format!("{} bytes, the types need {at}", bytes.len())));
        }
        Ok(out)
    }

    /// An error when a message arrived that no action asked for.
    pub fn check_empty(&self, rank: u64) -> Result<(), PipeCommError> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let left: Vec<String> = self
            .waiting
            .keys()
            .map(|(p, id)| format!("{id:?} from rank {p}"))
            .collect();
        Err(PipeCommError::Left {
            rank,
            left: left.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::LocalComm;

    #[test]
    fn messages_arrive_out_of_order_and_whole() {
        let comms = LocalComm::group(&[0, 1]);
        let id = |kind, mb| MessageId {
            kind,
            micro_batch: mb,
            to_stage: 1,
        };
        let ty = TensorType::new(
            DType::F32,
            vec![oar_ir::Dim::Static(2), oar_ir::Dim::Static(3)],
        );
        let a = HostTensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let b = HostTensor::f32(vec![2, 3], vec![-1.0; 6]);
        Mailbox::send(
            &comms[0],
            1,
            id(Kind::Activation, 0),
            std::slice::from_ref(&a),
        )
        .unwrap();
        Mailbox::send(
            &comms[0],
            1,
            id(Kind::Gradient, 3),
            std::slice::from_ref(&b),
        )
        .unwrap();
        let mut m = Mailbox::default();
        let got = m
            .recv(
                &comms[1],
                0,
                id(Kind::Gradient, 3),
                std::slice::from_ref(&ty),
            )
            .unwrap();
        assert_eq!(got[0], b);
        assert!(m.check_empty(1).is_err(), "the activation waits");
        let got = m
            .recv(
                &comms[1],
                0,
                id(Kind::Activation, 0),
                std::slice::from_ref(&ty),
            )
            .unwrap();
        assert_eq!(got[0], a);
        m.check_empty(1).unwrap();
    }
}
