//! A bounded pool for CPU-heavy work (argon2, RSA signing): a fixed set of threads, one per
//! core, so a login flood queues here instead of starving token checks on the async workers.
//!
//! Fixed threads rather than tokio's `spawn_blocking` for memory too: each argon2 hash takes
//! 19 MiB, and glibc keeps a freed block of that size in the arena of the thread that used it.
//! `spawn_blocking` ran hashes on whichever of its (many) threads was idle, so every one of them
//! ended up holding 19 MiB: 520 MiB of RSS after a few hundred logins. With a thread per core,
//! at most that many blocks are kept, and each is reused by the next hash.
//!
//! The threads run at a lower scheduling priority (nice +10): a login flood then takes only
//! the CPU that token checks leave, and a whoami answered during one waits for no hash on a
//! busy core. With nothing else to do, hashes still get every core.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex},
};

use tokio::sync::{mpsc, oneshot};

use crate::error::{CoreError, CoreResult};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting for a thread, per thread, before `run` waits to enqueue.
const QUEUE_PER_THREAD: usize = 32;

/// How much nicer than the async workers the pool's threads are (Linux: per thread).
const NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by `NICE`; where that cannot be done, the
/// thread keeps the process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(thread)).unwrap_or(0);
        if let Err(error) = rustix::process::setpriority_process(Some(thread), current + NICE) {
            tracing::debug!(%error, "the CPU pool keeps the process's scheduling priority");
        }
    }
}

#[derive(Clone, Debug)]
pub struct BlockingPool {
    jobs: mpsc::Sender<Job>,
}

impl BlockingPool {
    /// `size` threads; they end when the last handle to the pool is dropped.
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        let (jobs, queue) = mpsc::channel::<Job>(size * QUEUE_PER_THREAD);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..size {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("identity-cpu-{index}")).spawn(move || {
                lower_priority();
                loop {
                    // One thread waits on the queue at a time; the others wait for the lock.
                    let job = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).blocking_recv();
                    match job {
                        Some(job) => job(),
                        None => break,
                    }
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start a CPU worker thread");
            }
        }
        BlockingPool { jobs }
    }

    /// One thread per available core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
    }

    pub async fn run<F, R>(&self, job: F) -> CoreResult<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // A caller that gave up (its request timed out) costs no hash.
            if done.is_closed() {
                return;
            }
            // A panicking job fails its caller, not the thread.
            let _ = done.send(catch_unwind(AssertUnwindSafe(job)));
        });
        self.jobs.send(job).await.map_err(|_| CoreError::internal("the CPU pool is gone"))?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(CoreError::internal("a CPU job panicked")),
            Err(_) => Err(CoreError::internal("a CPU job was dropped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pool_threads_and_a_panic_fails_only_its_caller() {
        let pool = BlockingPool::new(2);
        let name = pool.run(|| std::thread::current().name().map(str::to_owned)).await.unwrap();
        assert!(name.is_some_and(|name| name.starts_with("identity-cpu-")));
        assert!(pool.run(|| panic!("boom")).await.is_err());
        let results = futures::future::join_all((0..20).map(|n| pool.run(move || n * 2))).await;
        assert_eq!(results.into_iter().map(Result::unwrap).sum::<i32>(), 380);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_pool_threads_yield_to_the_async_workers() {
        let caller = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        let pool = BlockingPool::new(4);
        let niceness = futures::future::join_all(
            (0..8).map(|_| pool.run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())),
        )
        .await;
        for nice in niceness {
            assert_eq!(nice.unwrap(), (caller + NICE).min(19));
        }
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_skipped() {
        let pool = BlockingPool::new(1);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(move || gate.recv().ok()).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abandoned = tokio::spawn({
            let (pool, ran) = (pool.clone(), ran.clone());
            async move { pool.run(move || ran.store(true, std::sync::atomic::Ordering::SeqCst)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        abandoned.abort();
        let _ = abandoned.await;
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        pool.run(|| ()).await.unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "the abandoned job ran");
    }
}
