//! Saving while training continues: the trainer hands a copy of its host-side state to a
//! writer thread and goes on; at most one save is in flight (the next waits for it), and
//! the trainer waits at the end, so every error still reaches it.

use super::{invalid, save_checkpoint, Checkpoint, CheckpointError};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

type Job = JoinHandle<Result<PathBuf, CheckpointError>>;

/// One background checkpoint writer.
#[derive(Debug, Default)]
pub struct BackgroundSaver {
    inflight: Option<(u64, PathBuf, Job)>,
}

impl BackgroundSaver {
    pub fn new() -> BackgroundSaver {
        BackgroundSaver::default()
    }

    /// Waits for the save in flight, if any, then starts writing `ck` under `root` with
    /// [`save_checkpoint`]`(root, ck, keep)`. Returns the finished save's (step, directory).
    pub fn submit(
        &mut self,
        root: &Path,
        ck: Checkpoint,
        keep: usize,
    ) -> Result<Option<(u64, PathBuf)>, CheckpointError> {
        let done = self.wait()?;
        let r = root.to_path_buf();
        let step = ck.step;
        let job = std::thread::Builder::new()
            .name(format!("oar-ckpt-{step}"))
            .spawn(move || save_checkpoint(&r, &ck, keep))
            .map_err(super::io_err(root))?;
        self.inflight = Some((step, root.to_path_buf(), job));
        Ok(done)
    }

    /// Waits for the save in flight; returns its (step, directory), or its error.
    pub fn wait(&mut self) -> Result<Option<(u64, PathBuf)>, CheckpointError> {
        let Some((step, root, job)) = self.inflight.take() else {
            return Ok(None);
        };
        match job.join() {
            Ok(r) => r.map(|dir| Some((step, dir))),
            Err(_) => Err(invalid(
                &root,
                format!("the writer of step {step} panicked"),
            )),
        }
    }

    /// Whether a save is in flight.
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }
}

impl Drop for BackgroundSaver {
    fn drop(&mut self) {
        // A trainer that returns early (an error) still leaves complete files behind.
        let _ = self.wait();
    }
}
