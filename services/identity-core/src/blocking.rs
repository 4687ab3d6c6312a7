//! A bounded pool for CPU-heavy work (argon2, RSA signing): at most one job per core runs at
//! once, so a login flood queues here instead of starving token checks on the async workers.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{CoreError, CoreResult};

#[derive(Clone, Debug)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    pub fn new(size: usize) -> Self {
        BlockingPool { permits: Arc::new(Semaphore::new(size.max(1))) }
    }

    /// One job per available core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
    }

    pub async fn run<F, R>(&self, job: F) -> CoreResult<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(CoreError::internal)?;
        tokio::task::spawn_blocking(job).await.map_err(CoreError::internal)
    }
}
