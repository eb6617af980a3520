//! Requests and replies between workers and servers, as little-endian bytes framed by an
//! 8-byte length (the communicator's `recv` takes a buffer of the exact size).

use super::PsError;
use crate::comm::Communicator;

/// One table's part of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableRequest {
    /// Keys whose rows the worker wants, in the order the reply lists them.
    pub pull: Vec<u64>,
    pub push_keys: Vec<u64>,
    /// `[push_keys.len(), dim]`.
    pub push_grads: Vec<f32>,
}

/// A worker's request to one server.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// Store rows pulled for the first time (training); evaluation pulls do not.
    pub create: bool,
    /// The worker is done.
    pub stop: bool,
    /// Save the tables as checkpoint step `n` (servers act when every worker asks).
    pub save_step: Option<u64>,
    pub tables: Vec<TableRequest>,
}

/// A server's reply: the pulled rows of each table, `[pull.len(), dim]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub rows: Vec<Vec<f32>>,
}

fn put(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64s(out: &mut Vec<u8>, v: &[u64]) {
    put(out, v.len() as u64);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    put(out, v.len() as u64);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Reads fields off a received message, naming the sender on a malformed one.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    rank: u64,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PsError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(PsError::Wire {
                rank: self.rank,
                message: format!(
                    "truncated: wanted {n} bytes at offset {} of {}",
                    self.at,
                    self.bytes.len()
                ),
            });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, PsError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn len(&mut self, width: usize) -> Result<usize, PsError> {
        let n = self.u64()? as usize;
        if n.saturating_mul(width) > self.bytes.len() - self.at {
            return Err(PsError::Wire {
                rank: self.rank,
                message: format!("a length of {n} overruns the message"),
            });
        }
        Ok(n)
    }

    fn u64s(&mut self) -> Result<Vec<u64>, PsError> {
        let n = self.len(8)?;
        let b = self.take(n * 8)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    fn f32s(&mut self) -> Result<Vec<f32>, PsError> {
        let n = self.len(4)?;
        let b = self.take(n * 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect())
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put(
            &mut out,
            u64::from(self.create) | (u64::from(self.stop) << 1),
        );
        put(&mut out, self.save_step.map_or(u64::MAX, |s| s));
        put(&mut out, self.tables.len() as u64);
        for t in &self.tables {
            put_u64s(&mut out, &t.pull);
            put_u64s(&mut out, &t.push_keys);
            put_f32s(&mut out, &t.push_grads);
        }
        out
    }

    pub fn decode(bytes: &[u8], rank: u64) -> Result<Request, PsError> {
        let mut r = Reader { bytes, at: 0, rank };
        let flags = r.u64()?;
        let save = r.u64()?;
        let n = r.len(24)?;
        let mut tables = Vec::with_capacity(n);
        for _ in 0..n {
            tables.push(TableRequest {
                pull: r.u64s()?,
                push_keys: r.u64s()?,
                push_grads: r.f32s()?,
            });
        }
        Ok(Request {
            create: flags & 1 != 0,
            stop: flags & 2 != 0,
            save_step: (save != u64::MAX).then_some(save),
            tables,
        })
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, self.rows.len() as u64);
        for r in &self.rows {
            put_f32s(&mut out, r);
        }
        out
    }

    pub fn decode(bytes: &[u8], rank: u64) -> Result<Response, PsError> {
        let mut r = Reader { bytes, at: 0, rank };
        let n = r.len(8)?;
        let rows = (0..n).map(|_| r.f32s()).collect::<Result<_, _>>()?;
        Ok(Response { rows })
    }
}

/// Sends one framed message.
pub fn send(comm: &dyn Communicator, peer: u64, bytes: &[u8]) -> Result<(), PsError> {
    comm.send(peer, &(bytes.len() as u64).to_le_bytes())?;
    comm.send(peer, bytes)?;
    Ok(())
}

/// Receives one framed message from `peer`.
pub fn recv(comm: &dyn Communicator, peer: u64) -> Result<Vec<u8>, PsError> {
    let mut len = [0u8; 8];
    comm.recv(peer, &mut len)?;
    let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
    comm.recv(peer, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_truncation_is_an_error() {
        let q = Request {
            create: true,
            stop: false,
            save_step: Some(3),
            tables: vec![TableRequest {
                pull: vec![1, 2],
                push_keys: vec![5],
                push_grads: vec![0.5, -1.0],
            }],
        };
        let b = q.encode();
        assert_eq!(Request::decode(&b, 2).unwrap(), q);
        let e = Request::decode(&b[..b.len() - 3], 2).unwrap_err();
        assert!(e.to_string().contains("rank 2"), "{e}");
        let r = Response {
            rows: vec![vec![1.0, 2.0], vec![]],
        };
        assert_eq!(Response::decode(&r.encode(), 0).unwrap(), r);
    }
}
