//! A small persistent thread pool for parallel-for over a kernel's extent. Workers spin
//! briefly then sleep between jobs: per-kernel dispatch must cost microseconds, not a
//! thread spawn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = Arc<dyn Fn(usize) + Send + Sync>;

struct Shared {
    /// Bumped for each job; workers run a job when it changes.
    generation: AtomicUsize,
    pending: AtomicUsize,
    job: Mutex<Option<Job>>,
    wake: Condvar,
    shutdown: AtomicUsize,
}

/// `threads − 1` workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl ThreadPool {
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            shutdown: AtomicUsize::new(0),
        });
        let workers = (1..threads)
            .map(|id| {
                let s = shared.clone();
                std::thread::spawn(move || worker(s, id))
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            threads,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(thread_index)` on every thread (the caller is thread 0) and waits.
    pub fn run(&self, f: Job) {
        if self.threads == 1 {
            f(0);
            return;
        }
        {
            let mut slot = self.shared.job.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(f.clone());
            self.shared
                .pending
                .store(self.threads - 1, Ordering::SeqCst);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
        f(0);
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(s: Arc<Shared>, id: usize) {
    let mut seen = 0;
    loop {
        // Spin a little for back-to-back kernels, then sleep until the next job.
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) != 0 {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                let guard = s.job.lock().unwrap_or_else(|p| p.into_inner());
                if s.generation.load(Ordering::Acquire) == seen
                    && s.shutdown.load(Ordering::Acquire) == 0
                {
                    let _ = s
                        .wake
                        .wait_timeout(guard, std::time::Duration::from_millis(50));
                }
                spins = 0;
            }
        }
        let job = s.job.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(f) = job {
            f(id);
        }
        s.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(1, Ordering::Release);
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_job() {
        let pool = ThreadPool::new(3);
        let hits = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let h = hits.clone();
            pool.run(Arc::new(move |_| {
                h.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 300);
    }
}
