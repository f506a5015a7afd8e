//! A small fixed pool of OS threads for blocking device calls that are too large to run on
//! a connection task (big reads and writes, flushes).
//!
//! Jobs are boxed closures in one FIFO queue. The pool never grows, so a flood of requests
//! queues instead of spawning threads; connections bound what they submit. Dropping the
//! pool lets queued jobs finish, then joins the threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The IO thread pool.
pub(crate) struct IoPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    /// Starts `n` threads (at least one).
    pub(crate) fn new(n: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let s = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("nbd-io-{i}"))
                .spawn(move || worker(&s))?;
            threads.push(t);
        }
        Ok(IoPool { shared, threads })
    }

    /// Queues a job.
    pub(crate) fn submit(&self, job: Job) {
        let mut q = self.shared.queue.lock();
        q.jobs.push_back(job);
        drop(q);
        self.shared.ready.notify_one();
    }
}

fn worker(s: &Shared) {
    loop {
        let job = {
            let mut q = s.queue.lock();
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.closed {
                    return;
                }
                s.ready.wait(&mut q);
            }
        };
        job();
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_job_before_drop_returns() {
        let n = Arc::new(AtomicUsize::new(0));
        let pool = IoPool::new(2).unwrap();
        for _ in 0..100 {
            let n = n.clone();
            pool.submit(Box::new(move || {
                n.fetch_add(1, Ordering::Relaxed);
            }));
        }
        drop(pool);
        assert_eq!(n.load(Ordering::Relaxed), 100);
    }
}
