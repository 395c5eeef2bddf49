//! The worker pool: each worker claims a task under a lease, renews the lease from a heartbeat,
//! streams the task's resources through the roller, and records the result under its fencing
//! token. A worker that loses its lease, or whose job is cancelled, stops and lists nothing.
//!
//! The task boundary owns everything the task started: the heartbeat runs beside the task in
//! the same future, so it ends on every exit (return, error, panic, cancellation), and a panic
//! inside the task fails that task instead of the worker.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{future::BoxFuture, FutureExt, StreamExt};
use tokio::{task::JoinHandle, time::Instant};
use tracing::Instrument;
use tokio_util::sync::CancellationToken;

use super::{
    deid::{seal::ConfigKey, Deidentify},
    drain::{self, Halt, Progress},
    failure::TaskFailure,
    organized,
    pacer::Pacer,
    roller::Roller,
    status_cache::StatusCache,
    type_lines,
};
use crate::{
    fhir::{IssueCode, OperationOutcome},
    model::job::{ClaimedTask, FileKind, FileRecord, TaskKind},
    telemetry::names,
    output::Output,
    store::{Lease, StoreError, Stores},
};

/// The stem of the files of a job's own OperationOutcomes (lenient-handling warnings): lower
/// case, so no resource type's files (`OperationOutcome-1.ndjson`) can have the same name.
pub const OUTCOMES_STEM: &str = "errors";

/// The first wait before a failed task may be claimed again; it doubles with each attempt.
const RETRY_BACKOFF: Duration = Duration::from_secs(1);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

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

/// Runs at the start of every task, before it reads anything. Tests inject faults through it
/// (a panic, a database outage); the server never sets one.
pub type TaskHook = Arc<dyn Fn(&ClaimedTask) -> BoxFuture<'static, ()> + Send + Sync>;

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
    hook: Option<TaskHook>,
    /// Opens de-identified jobs' configurations.
    config_key: Option<Arc<ConfigKey>>,
}

enum TaskEnd {
    Done(Vec<FileRecord>),
    /// Cancelled, lease lost, or the lease could not be renewed: nothing to record.
    Stopped,
    Failed(TaskFailure),
}

impl From<Halt> for TaskEnd {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::Stopped => Self::Stopped,
            Halt::Failed(failure) => Self::Failed(failure),
        }
    }
}

impl Worker {
    pub fn new(id: String, stores: Stores, output: Output, settings: WorkerSettings, shutdown: CancellationToken) -> Self {
        Self { id, stores, output, settings, shutdown, status: None, hook: None, config_key: None }
    }

    /// Opens the sealed configurations of de-identified jobs with `key`.
    pub fn with_config_key(mut self, key: Arc<ConfigKey>) -> Self {
        self.config_key = Some(key);
        self
    }

    /// Forgets the job's cached status whenever a task of it ends.
    pub fn with_status_cache(mut self, status: Arc<StatusCache>) -> Self {
        self.status = Some(status);
        self
    }

    /// Runs `hook` at the start of every task (fault injection in tests).
    pub fn with_task_hook(mut self, hook: TaskHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Starts `settings.workers` workers that run until `shutdown` is cancelled.
    pub fn spawn_pool(
        stores: Stores,
        output: Output,
        settings: WorkerSettings,
        status: Arc<StatusCache>,
        config_key: Arc<ConfigKey>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let host = uuid::Uuid::new_v4().simple().to_string();
        (0..settings.workers)
            .map(|n| {
                let worker = Worker::new(format!("{}-{n}", &host[..8]), stores.clone(), output.clone(), settings.clone(), shutdown.clone())
                    .with_status_cache(status.clone())
                    .with_config_key(config_key.clone());
                tokio::spawn(worker.run())
            })
            .collect()
    }

    async fn run(self) {
        tracing::debug!(worker = %self.id, "worker started");
        let shutdown = self.shutdown.clone();
        while !shutdown.is_cancelled() {
            // A panic outside a task's own work (tasks catch theirs) must not end the worker.
            match AssertUnwindSafe(self.run_next_task()).catch_unwind().await {
                Ok(Ok(Ran::Task)) => continue,
                Ok(Ok(Ran::Idle)) => {}
                Ok(Err(e)) => tracing::error!(worker = %self.id, error = %e, "worker could not claim work or record a task"),
                Err(payload) => {
                    tracing::error!(worker = %self.id, reason = %TaskFailure::panic(payload.as_ref()).detail(), "worker recovered from a panic")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.stores.queue.wait_for_work(self.settings.idle_poll) => {}
            }
        }
        tracing::debug!(worker = %self.id, "worker stopped");
    }

    /// Claims and runs one task, if there is one. Tests call this to drain the queue.
    pub async fn run_next_task(&self) -> Result<Ran, StoreError> {
        let queue = &self.stores.queue;
        let Some(task) = queue.claim(&self.id, self.settings.lease, self.settings.max_attempts).await? else {
            return Ok(Ran::Idle);
        };
        let span = tracing::info_span!("task", job = %task.job_id, resource_type = %task.resource_type, fence = task.fence);
        self.run_task(task).instrument(span).await?;
        Ok(Ran::Task)
    }

    async fn run_task(&self, task: ClaimedTask) -> Result<(), StoreError> {
        tracing::info!("task started");
        let lease = LeaseClock::new(self.settings.lease);
        let started = std::time::Instant::now();
        if task.fence > 1 {
            metrics::counter!(names::TASK_RERUNS).increment(1);
        }
        let stop = self.shutdown.child_token();
        let written = AtomicI64::new(0);
        let end = {
            // Both futures live in this block: whatever way the task ends, the heartbeat ends too.
            let work = AssertUnwindSafe(self.execute(&task, &stop, &written)).catch_unwind();
            let beat = heartbeat(&self.stores, &task, &self.settings, &stop, &written, &lease);
            tokio::pin!(work, beat);
            let ended = tokio::select! {
                ended = &mut work => ended,
                () = &mut beat => {
                    // The heartbeat stopped the task: it winds down within what is left of the lease.
                    tokio::time::timeout_at(lease.expires(), &mut work).await.unwrap_or(Ok(TaskEnd::Stopped))
                }
            };
            ended.unwrap_or_else(|payload| TaskEnd::Failed(TaskFailure::panic(payload.as_ref())))
        };
        let outcome = match &end {
            TaskEnd::Done(_) => "done",
            TaskEnd::Stopped => "stopped",
            TaskEnd::Failed(_) => "failed",
        };
        metrics::histogram!(names::TASK_SECONDS, "outcome" => outcome).record(started.elapsed().as_secs_f64());
        let result = self.record(&task, end, &lease).await;
        if let Some(status) = &self.status {
            status.forget(task.job_id);
        }
        result
    }

    /// Records how the task ended, trying again while the database is out of reach and the
    /// lease lasts (after it, the task goes back to the queue by itself).
    async fn record(&self, task: &ClaimedTask, end: TaskEnd, lease: &LeaseClock) -> Result<(), StoreError> {
        let queue = &self.stores.queue;
        match end {
            TaskEnd::Done(files) => {
                let count: i64 = files.iter().map(|f| f.count).sum();
                match self.persist(lease, || queue.complete(task, files.clone())).await {
                    Ok(true) => {
                        tracing::info!(resources = count, "task done");
                        for file in files.iter().filter(|f| f.kind == FileKind::Output) {
                            metrics::counter!(names::RESOURCES_WRITTEN, "type" => file.resource_type.clone()).increment(file.count.max(0) as u64);
                            metrics::counter!(names::BYTES_WRITTEN, "type" => file.resource_type.clone()).increment(file.bytes.max(0) as u64);
                        }
                    }
                    Ok(false) => {
                        tracing::warn!("task finished after its job ended or its lease passed to another worker; its files are not listed")
                    }
                    // Fails the same way on every attempt: say so now, not after the lease lapses.
                    Err(e) if !e.is_transient() => {
                        let mut failure = TaskFailure::store(e);
                        failure.client = "recording its files failed (the server log has the details)".into();
                        return Box::pin(self.record(task, TaskEnd::Failed(failure), lease)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            TaskEnd::Stopped => {
                self.persist(lease, || queue.release(task)).await?;
                tracing::info!("task stopped (job ended, lease lost, or shutting down)");
            }
            TaskEnd::Failed(failure) => {
                if failure.retry {
                    let backoff = retry_backoff(task.fence);
                    if self.persist(lease, || queue.retry(task, backoff, self.settings.max_attempts)).await? {
                        tracing::warn!(reason = %failure.detail(), retry_in = ?backoff, "task failed; it will be tried again");
                        return Ok(());
                    }
                }
                tracing::error!(reason = %failure.detail(), "task failed");
                let outcome = OperationOutcome::error(failure.code, format!("exporting {} failed: {}", task.resource_type, failure.client));
                self.persist(lease, || queue.fail(task, outcome.to_json())).await?;
            }
        }
        Ok(())
    }

    /// Runs a write of the task's state; a transient failure is tried again with backoff until
    /// the lease would run out.
    async fn persist<T, F, Fut>(&self, lease: &LeaseClock, mut write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            match write().await {
                Err(e) if e.is_transient() && Instant::now() + wait < lease.expires() && !self.shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, "recording the task's end failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                result => return result,
            }
        }
    }

    async fn execute(&self, task: &ClaimedTask, stop: &CancellationToken, written: &AtomicI64) -> TaskEnd {
        if let Some(hook) = &self.hook {
            hook(task).await;
        }
        // A retry writes beside, never over, what an earlier holder of the task may still write.
        let key_dir = if task.fence <= 1 { task.folder.clone() } else { format!("{}/attempt-{}", task.folder, task.fence) };
        let mut deletions = None;
        let deid = match Deidentify::open(task, self.config_key.as_deref()) {
            Ok(deid) => deid,
            Err(message) => return TaskEnd::Failed(TaskFailure::data(message)),
        };
        if task.kind == TaskKind::Export && task.request.organize_by_patient {
            return match organized::write(&self.stores, &self.output, task, deid.as_deref(), key_dir, stop, written).await {
                Ok(files) => TaskEnd::Done(files),
                Err(halt) => halt.into(),
            };
        }
        let (kind, source) = match task.kind {
            TaskKind::Export => {
                let Some(resource_type) = task.resource_type() else {
                    return TaskEnd::Failed(TaskFailure::data(format!("unknown resource type '{}'", task.resource_type)));
                };
                match type_lines::output(&self.stores, task, resource_type, deid.as_deref(), stop).await {
                    Ok(source) => {
                        deletions = source.deletions;
                        (FileKind::Output, source.lines)
                    }
                    Err(halt) => return halt.into(),
                }
            }
            TaskKind::Outcomes => {
                let lines: Vec<Result<bytes::Bytes, super::pipeline::PipelineError>> = task
                    .request
                    .warnings
                    .iter()
                    .map(|w| Ok(format!("{}\n", OperationOutcome::warning(IssueCode::NotSupported, w.clone()).to_json()).into()))
                    .collect();
                (FileKind::Error, futures::stream::iter(lines).boxed())
            }
        };
        let mut roller = Roller::new(&self.output, kind, &task.resource_type, key_dir.clone(), task.max_file_bytes);
        if kind == FileKind::Error {
            roller = roller.with_stem(OUTCOMES_STEM.to_owned());
        }
        let mut pacer = Pacer::default();
        let mut files = match drain::into_files(source, roller, stop, &mut pacer, Progress::from_now(written)).await {
            Ok(files) => files,
            Err(halt) => return halt.into(),
        };
        if let Some(selection) = deletions {
            let source = type_lines::deletion_bundles(&self.stores, selection);
            let roller = Roller::for_deletions(&self.output, &task.resource_type, key_dir, task.max_file_bytes);
            match drain::into_files(source, roller, stop, &mut pacer, Progress::from_now(written)).await {
                Ok(deleted) => files.extend(deleted),
                Err(halt) => return halt.into(),
            }
        }
        TaskEnd::Done(files)
    }
}

/// The wait before another attempt of a task claimed `fence` times: doubling, bounded.
fn retry_backoff(fence: i64) -> Duration {
    let doublings = u32::try_from(fence.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    RETRY_BACKOFF.saturating_mul(1 << doublings).min(MAX_RETRY_BACKOFF)
}

/// When the lease of the task in hand runs out, as far as this worker knows: a lease from the
/// claim (or the last renewal) on.
struct LeaseClock {
    lease: Duration,
    start: Instant,
    /// Milliseconds from `start` to the sending of the last renewal that held.
    renewed_ms: AtomicU64,
}

impl LeaseClock {
    fn new(lease: Duration) -> Self {
        Self { lease, start: Instant::now(), renewed_ms: AtomicU64::new(0) }
    }

    fn renewed(&self, sent: Instant) {
        let ms = u64::try_from(sent.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
        self.renewed_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn expires(&self) -> Instant {
        self.start + Duration::from_millis(self.renewed_ms.load(Ordering::Relaxed)) + self.lease
    }
}

/// Renews the lease until the task ends; stops the task (and returns) when the lease is lost,
/// the job ended, or the lease could not be renewed while there is still time to wind down
/// (two heartbeats, at most half the lease, before it runs out).
async fn heartbeat(stores: &Stores, task: &ClaimedTask, settings: &WorkerSettings, stop: &CancellationToken, written: &AtomicI64, lease: &LeaseClock) {
    let margin = (settings.heartbeat * 2).min(settings.lease / 2);
    let mut interval = tokio::time::interval(settings.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let give_up = lease.expires() - margin;
        let sent = Instant::now();
        let renewal = tokio::time::timeout_at(give_up, stores.queue.heartbeat(task, settings.lease, written.load(Ordering::Relaxed))).await;
        match renewal {
            Ok(Ok(Lease::Held)) => lease.renewed(sent),
            Ok(Ok(Lease::Lost)) => {
                metrics::counter!(names::LEASE_LOSSES).increment(1);
                break;
            }
            Ok(Ok(Lease::Cancelled)) => break,
            // The lease is still ours until it expires; the next beat may get through.
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            Err(_) => {}
        }
        if Instant::now() >= give_up {
            tracing::error!("the lease could not be renewed; stopping the task before it runs out");
            break;
        }
    }
    stop.cancel();
}
