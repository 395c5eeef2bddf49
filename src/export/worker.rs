//! The worker pool: each worker claims a task under a lease, renews the lease from a heartbeat
//! task, streams the task's resources through the roller, and records the result under its
//! fencing token. A worker that loses its lease, or whose job is cancelled, stops and lists
//! nothing.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;
use tokio_util::sync::CancellationToken;

use super::{
    fairness::Pacer,
    job::{ClaimedTask, FileKind, FileRecord, TaskKind},
    status_cache::StatusCache,
    organized,
    roller::Roller,
    sources::{self, Halt},
};
use crate::{
    fhir::{IssueCode, OperationOutcome},
    telemetry::names,
    output::Output,
    store::{Lease, Stores},
};

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub workers: usize,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// Claims of one task before it is failed (workers that die keep losing it).
    pub max_attempts: i32,
    /// How long an idle worker waits before looking again without a notification.
    pub idle_poll: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Ran {
    Task,
    Idle,
}

#[derive(Clone)]
pub struct Worker {
    id: String,
    stores: Stores,
    output: Output,
    settings: WorkerSettings,
    /// Stops the worker; a task in hand is handed back to the queue for another worker.
    shutdown: CancellationToken,
    /// This node's status answers: a task's end is seen by the next poll, not a heartbeat later.
    status: Option<Arc<StatusCache>>,
}

enum TaskEnd {
    Done(Vec<FileRecord>),
    /// Cancelled or lease lost: nothing to record.
    Stopped,
    Failed(String),
}

impl Worker {
    pub fn new(id: String, stores: Stores, output: Output, settings: WorkerSettings, shutdown: CancellationToken) -> Self {
        Self { id, stores, output, settings, shutdown, status: None }
    }

    /// Forgets the job's cached status whenever a task of it ends.
    pub fn with_status_cache(mut self, status: Arc<StatusCache>) -> Self {
        self.status = Some(status);
        self
    }

    /// Starts `settings.workers` workers that run until `shutdown` is cancelled.
    pub fn spawn_pool(
        stores: Stores,
        output: Output,
        settings: WorkerSettings,
        status: Arc<StatusCache>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let host = uuid::Uuid::new_v4().simple().to_string();
        (0..settings.workers)
            .map(|n| {
                let worker = Worker::new(format!("{}-{n}", &host[..8]), stores.clone(), output.clone(), settings.clone(), shutdown.clone())
                    .with_status_cache(status.clone());
                tokio::spawn(worker.run())
            })
            .collect()
    }

    async fn run(self) {
        tracing::debug!(worker = %self.id, "worker started");
        let shutdown = self.shutdown.clone();
        while !shutdown.is_cancelled() {
            match self.run_next_task().await {
                Ok(Ran::Task) => continue,
                Ok(Ran::Idle) => {}
                Err(e) => tracing::error!(worker = %self.id, error = %e, "worker could not claim work"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.stores.queue.wait_for_work(self.settings.idle_poll) => {}
            }
        }
        tracing::debug!(worker = %self.id, "worker stopped");
    }

    /// Claims and runs one task, if there is one. Tests call this to drain the queue.
    pub async fn run_next_task(&self) -> Result<Ran, crate::store::StoreError> {
        let queue = &self.stores.queue;
        let Some(task) = queue.claim(&self.id, self.settings.lease, self.settings.max_attempts).await? else {
            return Ok(Ran::Idle);
        };
        let span = tracing::info_span!("task", job = %task.job_id, resource_type = %task.resource_type, fence = task.fence);
        self.run_task(task).instrument(span).await?;
        Ok(Ran::Task)
    }

    async fn run_task(&self, task: ClaimedTask) -> Result<(), crate::store::StoreError> {
        let queue = &self.stores.queue;
        tracing::info!("task started");
        let started = std::time::Instant::now();
        if task.fence > 1 {
            metrics::counter!(names::TASK_RERUNS).increment(1);
        }

        let stop = self.shutdown.child_token();
        let written = Arc::new(AtomicI64::new(0));
        let heartbeat = tokio::spawn(heartbeat(self.stores.clone(), task.clone(), self.settings.clone(), stop.clone(), written.clone()));
        let end = self.execute(&task, &stop, &written).await;
        heartbeat.abort();

        let outcome = match &end {
            TaskEnd::Done(_) => "done",
            TaskEnd::Stopped => "stopped",
            TaskEnd::Failed(_) => "failed",
        };
        metrics::histogram!(names::TASK_SECONDS, "outcome" => outcome).record(started.elapsed().as_secs_f64());
        match end {
            TaskEnd::Done(files) => {
                let count: i64 = files.iter().map(|f| f.count).sum();
                let written: Vec<(String, i64, i64)> =
                    files.iter().filter(|f| f.kind == FileKind::Output).map(|f| (f.resource_type.clone(), f.count, f.bytes)).collect();
                if queue.complete(&task, files).await? {
                    tracing::info!(resources = count, "task done");
                    for (resource_type, count, bytes) in written {
                        metrics::counter!(names::RESOURCES_WRITTEN, "type" => resource_type.clone()).increment(count.max(0) as u64);
                        metrics::counter!(names::BYTES_WRITTEN, "type" => resource_type).increment(bytes.max(0) as u64);
                    }
                } else {
                    tracing::warn!("task finished after its job ended or its lease passed to another worker; its files are not listed");
                }
            }
            TaskEnd::Stopped => {
                queue.release(&task).await?;
                tracing::info!("task stopped (job ended, lease lost, or shutting down)");
            }
            TaskEnd::Failed(reason) => {
                tracing::error!(%reason, "task failed");
                let outcome = OperationOutcome::error(
                    IssueCode::Exception,
                    format!("exporting {} failed: {reason}", task.resource_type),
                );
                queue.fail(&task, outcome.to_json()).await?;
            }
        }
        if let Some(status) = &self.status {
            status.forget(task.job_id);
        }
        Ok(())
    }

    async fn execute(&self, task: &ClaimedTask, stop: &CancellationToken, written: &AtomicI64) -> TaskEnd {
        // A retry writes beside, never over, what an earlier holder of the task may still write.
        let key_dir = if task.fence <= 1 { task.folder.clone() } else { format!("{}/attempt-{}", task.folder, task.fence) };
        let mut deletions = None;
        if task.kind == TaskKind::Export && task.request.organize_by_patient {
            return match organized::write(&self.stores, &self.output, task, key_dir, stop, written).await {
                Ok(files) => TaskEnd::Done(files),
                Err(Halt::Stopped) => TaskEnd::Stopped,
                Err(Halt::Failed(reason)) => TaskEnd::Failed(reason),
            };
        }
        let (kind, source) = match task.kind {
            TaskKind::Export => {
                let Some(resource_type) = task.resource_type() else {
                    return TaskEnd::Failed(format!("unknown resource type '{}'", task.resource_type));
                };
                match sources::output(&self.stores, task, resource_type, stop).await {
                    Ok(source) => {
                        deletions = source.deletions;
                        (FileKind::Output, source.lines)
                    }
                    Err(Halt::Stopped) => return TaskEnd::Stopped,
                    Err(Halt::Failed(reason)) => return TaskEnd::Failed(reason),
                }
            }
            TaskKind::Outcomes => {
                let lines: Vec<Result<bytes::Bytes, _>> = task
                    .request
                    .warnings
                    .iter()
                    .map(|w| Ok(format!("{}\n", OperationOutcome::warning(IssueCode::NotSupported, w.clone()).to_json()).into()))
                    .collect();
                (FileKind::Error, futures::stream::iter(lines).boxed())
            }
        };
        let roller = Roller::new(&self.output, kind, &task.resource_type, key_dir.clone(), task.max_file_bytes);
        let mut files = match pump(source, roller, stop, written, 0).await {
            Ok(files) => files,
            Err(end) => return end,
        };
        if let Some(selection) = deletions {
            let source = sources::deletion_bundles(&self.stores, selection);
            let roller = Roller::new(&self.output, FileKind::Deleted, "Bundle", key_dir, task.max_file_bytes)
                .with_stem(format!("{}-deleted", task.resource_type));
            let base = written.load(Ordering::Relaxed);
            match pump(source, roller, stop, written, base).await {
                Ok(deleted) => files.extend(deleted),
                Err(end) => return end,
            }
        }
        TaskEnd::Done(files)
    }
}

/// Moves a stream of NDJSON chunks into the roller's files until it ends, the task is stopped,
/// or something fails. `written` counts lines for the heartbeat, from `base`.
async fn pump<E: std::fmt::Display>(
    mut source: futures::stream::BoxStream<'static, Result<bytes::Bytes, E>>,
    mut roller: Roller<'_>,
    stop: &CancellationToken,
    written: &AtomicI64,
    base: i64,
) -> Result<Vec<FileRecord>, TaskEnd> {
    let mut pacer = Pacer::default();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => {
                roller.abort().await;
                return Err(TaskEnd::Stopped);
            }
            next = source.next() => next,
        };
        match next {
            None => break,
            Some(Ok(chunk)) => {
                let bytes = chunk.len();
                if let Err(e) = roller.write(chunk).await {
                    roller.abort().await;
                    return Err(TaskEnd::Failed(e.to_string()));
                }
                written.store(base + roller.lines() as i64, Ordering::Relaxed);
                pacer.moved(bytes).await;
            }
            Some(Err(e)) => {
                roller.abort().await;
                return Err(TaskEnd::Failed(e.to_string()));
            }
        }
    }
    drop(source);
    roller.finish().await.map_err(|e| TaskEnd::Failed(e.to_string()))
}

/// Renews the lease until stopped; stops the task when the lease is lost or the job cancelled.
async fn heartbeat(stores: Stores, task: ClaimedTask, settings: WorkerSettings, stop: CancellationToken, written: Arc<AtomicI64>) {
    let mut interval = tokio::time::interval(settings.heartbeat);
    interval.tick().await;
    loop {
        interval.tick().await;
        match stores.queue.heartbeat(&task, settings.lease, written.load(Ordering::Relaxed)).await {
            Ok(Lease::Held) => {}
            Ok(Lease::Lost) => {
                metrics::counter!(names::LEASE_LOSSES).increment(1);
                stop.cancel();
                return;
            }
            Ok(Lease::Cancelled) => {
                stop.cancel();
                return;
            }
            // The lease is still ours until it expires; the next beat may get through.
            Err(e) => tracing::warn!(job = %task.job_id, error = %e, "heartbeat failed"),
        }
    }
}
