//! The janitor: fails tasks whose workers keep dying, expires completed jobs past their
//! retention, and deletes the files of cancelled, failed and expired jobs.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{output::Output, store::Stores};

pub fn spawn(stores: Stores, output: Output, every: Duration, max_attempts: i32, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(e) = sweep(&stores, &output, max_attempts).await {
                tracing::error!(error = %e, "janitor sweep failed; will retry");
            }
        }
    })
}

/// One pass of housekeeping. Public so tests can run it without waiting.
pub async fn sweep(stores: &Stores, output: &Output, max_attempts: i32) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let failed = stores.queue.fail_exhausted(max_attempts).await?;
    if failed > 0 {
        tracing::warn!(tasks = failed, "failed tasks whose workers kept stopping");
    }
    let expired = stores.queue.expire_jobs().await?;
    if expired > 0 {
        tracing::info!(jobs = expired, "expired completed exports past their retention");
    }
    // One folder that cannot be deleted must not keep the others' data on disk: each job is
    // tried on its own, and a job stays unreleased (tried again next pass) until its folder is
    // empty.
    for (job, folder) in stores.queue.jobs_to_release().await? {
        if let Err(e) = output.delete_folder(&folder).await {
            tracing::warn!(%job, %folder, error = %e, "could not delete all files of a finished export; will retry");
            continue;
        }
        match stores.queue.mark_released(job).await {
            Ok(()) => tracing::info!(%job, %folder, "deleted the files of a finished export"),
            Err(e) => tracing::warn!(%job, error = %e, "deleted the files of a finished export but could not record it; will retry"),
        }
    }
    Ok(())
}
