//! Persistence behind traits, one per role: the resources (`ResourceStore`), the API side of
//! export jobs (`JobStore`), and the worker side (`WorkQueue`). Each backend implements them all.

pub mod postgres;
pub mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::{
    fhir::{search::Narrowing, types::ResourceId, Resource, ResourceType},
    model::{
        client::ClientRecord,
        job::{ClaimedTask, FileKind, FileRecord, JobId, JobRecord, NewJob},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the SQLite export reader's own connection (`sqlite::reader`).
    #[error("database error: {0}")]
    Reader(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A concurrent write changed the same resource; the caller may retry.
    #[error("conflicting concurrent update of {0}")]
    Conflict(String),
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

impl StoreError {
    /// Whether the database was out of reach or refused only for the moment: the connection
    /// dropped or could not be made, the pool had no connection in time, the server is shutting
    /// down or starting, the transaction lost a deadlock or serialization race, SQLite was
    /// busy. The same call may succeed later; any other error would fail again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => is_transient_sqlx(e),
            Self::Reader(e) => is_sqlite_busy(e.sqlite_error_code()),
            Self::Migration(_) | Self::Conflict(_) | Self::UnsupportedUrl(_) => false,
        }
    }
}

fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_code(&code)),
        // A connection cut while TLS is negotiated (`sslmode=prefer` asks first): the SSLRequest
        // answered by end of file, or the handshake's socket failing. A refused certificate is
        // not transient.
        sqlx::Error::Protocol(message) => message.contains("SSLRequest"),
        sqlx::Error::Tls(cause) => caused_by_io(cause.as_ref()),
        _ => false,
    }
}

fn caused_by_io(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<std::io::Error>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Postgres SQLSTATEs (class 08 connection exception; 57P01-03 shutting down or starting;
/// 53300 too many connections; 40001 and 40P01 serialization failure and deadlock victim) and
/// SQLite's primary result codes BUSY (5) and LOCKED (6), extended codes included. A SQLSTATE
/// has five characters; SQLite's codes are numbers below 10000.
fn is_transient_code(code: &str) -> bool {
    if code.len() == 5 {
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01");
    }
    code.parse::<i32>().is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

fn is_sqlite_busy(code: Option<rusqlite::ErrorCode>) -> bool {
    matches!(code, Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// One write of a resource-level change.
#[derive(Debug, Clone)]
pub enum Write {
    Save(Resource),
    Delete { resource_type: ResourceType, id: ResourceId },
}

/// The result of one write, as stored.
#[derive(Debug, Clone)]
pub struct Applied {
    pub resource_type: ResourceType,
    pub id: ResourceId,
    pub version_id: i64,
    pub last_updated: DateTime<Utc>,
    /// True when this write created the resource (or re-created a deleted one).
    pub created: bool,
    /// For a delete: whether there was anything to delete.
    pub existed: bool,
    /// The stored text (None for deletes).
    pub body: Option<String>,
}

impl Applied {
    /// The result of saving `resource` as `version_id`, given the row it replaced
    /// (`(version_id, deleted)`), if any.
    pub fn saved(resource: &Resource, version_id: i64, now: DateTime<Utc>, replaced: Option<(i64, bool)>, body: Option<String>) -> Self {
        Self {
            resource_type: resource.resource_type.clone(),
            id: resource.id.clone(),
            version_id,
            last_updated: now,
            created: replaced.is_none_or(|(_, deleted)| deleted),
            existed: replaced.is_some_and(|(_, deleted)| !deleted),
            body,
        }
    }
}

impl Applied {
    /// The result of deleting a resource whose current row is `current` (`(version_id,
    /// deleted)`), and the new version to write, if there is anything to delete: deleting what
    /// is absent or already deleted changes nothing.
    pub fn deleted(resource_type: ResourceType, id: ResourceId, now: DateTime<Utc>, current: Option<(i64, bool)>) -> (Self, Option<i64>) {
        let live = current.filter(|(_, deleted)| !deleted);
        let new_version = live.map(|(version_id, _)| version_id + 1);
        let applied = Self {
            resource_type,
            id,
            version_id: new_version.or(current.map(|(v, _)| v)).unwrap_or(0),
            last_updated: now,
            created: false,
            existed: live.is_some(),
            body: None,
        };
        (applied, new_version)
    }
}

/// Batches at least this large, of saves only with distinct keys, take a backend's bulk path
/// (the loader sends thousands at a time).
const BULK_THRESHOLD: usize = 64;

fn is_bulk(writes: &[Write]) -> bool {
    if writes.len() < BULK_THRESHOLD {
        return false;
    }
    let mut keys = std::collections::HashSet::with_capacity(writes.len());
    writes.iter().all(|w| match w {
        Write::Save(r) => keys.insert((r.resource_type.as_str(), r.id.as_str())),
        Write::Delete { .. } => false,
    })
}

/// The current version of a resource.
#[derive(Debug, Clone)]
pub struct Stored {
    pub version_id: i64,
    pub last_updated: DateTime<Utc>,
    pub deleted: bool,
    pub body: Option<String>,
}

/// Which resources of one type an export task reads.
#[derive(Debug, Clone)]
pub struct Selection {
    pub resource_type: ResourceType,
    /// The job's transactionTime: each resource at its version current at this instant.
    pub as_of: DateTime<Utc>,
    /// Only versions last updated strictly after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only versions last updated strictly before this instant (`_until`).
    pub until: Option<DateTime<Utc>>,
    pub scope: Scope,
    /// Bounds from `_typeFilter` on indexed columns (`_id`, `_lastUpdated`): a superset of the
    /// matches, which the export pipeline then filters exactly.
    pub narrowing: Narrowing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every resource of the type.
    All,
    /// Resources in the compartment of any patient that exists at `as_of`.
    AllPatients,
    /// Resources in the compartment of the patients recorded for this job (Group export).
    JobPatients(JobId),
    /// Resources in one patient's compartment (a block of `organizeOutputBy=Patient`).
    Patient(ResourceId),
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    async fn read(&self, resource_type: &ResourceType, id: &ResourceId) -> Result<Option<Stored>, StoreError>;

    /// The body of a resource at the version current at `as_of` (None if absent or deleted then).
    async fn read_as_of(
        &self,
        resource_type: &ResourceType,
        id: &ResourceId,
        as_of: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError>;

    /// Applies the writes atomically, in order: all of them or none. Large batches of saves use
    /// the backend's fastest path (the bulk loader sends batches of thousands).
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError>;

    /// Bulk batches the loader may write at once (on separate connections, disjoint keys).
    fn bulk_writers(&self) -> usize {
        1
    }

    /// Fixes a snapshot instant: every write committed before it has `lastUpdated <= t`, and
    /// every write after it gets `lastUpdated > t`. This is an export's transactionTime.
    async fn snapshot_time(&self) -> Result<DateTime<Utc>, StoreError>;

    /// The resource types that have at least one stored resource.
    async fn types_present(&self) -> Result<Vec<ResourceType>, StoreError>;

    /// Streams the stored text of the selected resources as NDJSON: each resource's compact JSON
    /// followed by `\n`, in chunks of whole lines. Dropping the stream stops the query.
    fn export_stream(&self, selection: Selection) -> BoxStream<'static, Result<Bytes, StoreError>>;

    /// Streams the ids of the selected type's resources that stood deleted at `as_of`, deleted
    /// within `since`..`until`, one per line, in chunks of whole lines. In a compartment scope a
    /// deletion counts when the version it ended was in the compartment (Patient level: in any
    /// patient's, so deleted patients are reported too).
    fn deleted_stream(&self, selection: Selection) -> BoxStream<'static, Result<Bytes, StoreError>>;
}

/// The API side of export jobs.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Records a job with its tasks and patients, and wakes the workers; unless the owner already
    /// has `max_active` queued or running jobs, counted in the same transaction as the insert
    /// (so a burst of kick-offs cannot pass the limit).
    async fn create_job(&self, job: NewJob, max_active: Option<u32>) -> Result<Created, StoreError>;
    /// Removes a job that was never handed to its client (a kick-off that failed after
    /// recording it), with its tasks and patients.
    async fn delete_job(&self, id: JobId) -> Result<(), StoreError>;
    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    /// Output, error and deleted files of a job, in manifest order.
    async fn files(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError>;
    /// Marks a job cancelled (queued/running) or released (finished). False if it was unknown or
    /// already gone.
    async fn cancel(&self, id: JobId) -> Result<bool, StoreError>;

    /// Operators: the most recent jobs, newest first.
    async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobId>, StoreError>;
    /// Operators: the jobs kept, counted by level and status (metrics).
    async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError>;
    /// Whether every migration this build carries is applied (readiness); an error when the
    /// database does not answer.
    async fn schema_current(&self) -> Result<bool, StoreError>;
}

/// Jobs of one level in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub level: String,
    pub status: String,
    pub count: i64,
}

/// Whether the latest applied migration is the latest this build carries.
fn is_current(applied: Option<i64>, migrator: &sqlx::migrate::Migrator) -> bool {
    let latest = migrator.iter().map(|m| m.version).max();
    applied >= latest
}

/// What `create_job` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Job,
    /// Nothing: the owner already has this many queued or running jobs.
    OverLimit { active: i64 },
}

/// The worker side: claims under a lease, heartbeats and fenced writes of task state.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Claims the next runnable task (queued, or running under an expired lease), bumping its
    /// fencing token.
    async fn claim(&self, worker: &str, lease: Duration, max_attempts: i32) -> Result<Option<ClaimedTask>, StoreError>;
    /// Renews the lease and records progress. Tells the worker whether to go on.
    async fn heartbeat(&self, task: &ClaimedTask, lease: Duration, written: i64) -> Result<Lease, StoreError>;
    /// Records the task's files and marks it done; completes the job when it was the last task.
    /// False when the fence no longer matches (another worker owns the task now) or the job
    /// ended meanwhile; the files are then never listed.
    async fn complete(&self, task: &ClaimedTask, files: Vec<FileRecord>) -> Result<bool, StoreError>;
    /// Fails the task and its job with an OperationOutcome (JSON).
    async fn fail(&self, task: &ClaimedTask, outcome: String) -> Result<(), StoreError>;
    /// Hands back a task the worker stopped: cancelled when its job ended (so the job's files
    /// can be deleted at once), queued again for another worker when the worker shut down.
    async fn release(&self, task: &ClaimedTask) -> Result<(), StoreError>;
    /// Hands back a task that failed for a passing reason (the database was out of reach, a
    /// panic): any worker may claim it again once `backoff` has passed, and the attempt counts.
    /// False when it had no attempt left or is no longer this claim's: the caller fails it.
    async fn retry(&self, task: &ClaimedTask, backoff: Duration, max_attempts: i32) -> Result<bool, StoreError>;
    /// Waits until new work may be there, or the timeout passes.
    async fn wait_for_work(&self, timeout: Duration);

    /// Housekeeping: fails tasks whose workers kept dying, expires finished jobs past their
    /// retention, and lists jobs whose files should be deleted (cancelled, failed, expired, with
    /// no live task writing).
    async fn fail_exhausted(&self, max_attempts: i32) -> Result<u64, StoreError>;
    async fn expire_jobs(&self) -> Result<u64, StoreError>;
    async fn jobs_to_release(&self) -> Result<Vec<(JobId, String)>, StoreError>;
    async fn mark_released(&self, id: JobId) -> Result<(), StoreError>;
}

/// What authorization keeps: registered clients, the `jti` of accepted assertions, and the
/// server's token-signing key.
#[async_trait]
pub trait AuthStore: Send + Sync {
    /// Registers a client, or replaces the registration of the same `client_id`.
    async fn put_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// False if there was no such client.
    async fn remove_client(&self, client_id: &str) -> Result<bool, StoreError>;
    async fn has_clients(&self) -> Result<bool, StoreError>;
    /// Records an assertion's `jti` until `expires_at`. False if it is already recorded (a
    /// replay). Forgets expired ones on the way.
    async fn remember_jti(&self, client_id: &str, jti: &str, expires_at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// The stored signing key; `candidate` is stored and returned if there is none yet (so
    /// concurrent first starts of several nodes agree on one key).
    async fn signing_key(&self, candidate: &str) -> Result<String, StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Held,
    /// Another worker took the task (this one was presumed dead).
    Lost,
    /// The job was cancelled: stop and write nothing more.
    Cancelled,
}

/// A row of `export_files`, the same in every backend.
#[derive(sqlx::FromRow)]
struct FileRow {
    kind: String,
    resource_type: String,
    name: String,
    object_key: String,
    count: i64,
    bytes: i64,
}

impl From<FileRow> for FileRecord {
    fn from(row: FileRow) -> Self {
        Self {
            kind: FileKind::parse(&row.kind).unwrap_or(FileKind::Output),
            resource_type: row.resource_type,
            name: row.name,
            key: row.object_key,
            count: row.count,
            bytes: row.bytes,
        }
    }
}

/// A row of `auth_clients`, the same in every backend: client_id, jwks, jwks_url, scopes.
type ClientRow = (String, Option<String>, Option<String>, String);

fn client_record((client_id, jwks, jwks_url, scopes): ClientRow) -> ClientRecord {
    ClientRecord { client_id, jwks, jwks_url, scopes }
}

/// The roles of one backend, shared by the API, the workers and authorization.
#[derive(Clone)]
pub struct Stores {
    pub resources: Arc<dyn ResourceStore>,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn WorkQueue>,
    pub auth: Arc<dyn AuthStore>,
}

/// Logs that this start upgrades an existing database's schema, before the migrations run: one
/// that rewrites a large table takes a while (SQLite's 0005; figures: docs/performance.md), and
/// the server says nothing else meanwhile.
async fn announce_upgrade<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, migrator: &sqlx::migrate::Migrator)
where
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let Ok(mut conn) = pool.acquire().await else { return };
    // Fails on a new database, which has no migrations table yet: nothing to rewrite. (Creating
    // it here would race other nodes starting; `run` does that under its lock.)
    let Ok(applied) = conn.list_applied_migrations(&migrator.table_name).await else { return };
    let applied = applied.iter().map(|m| m.version).max();
    let latest = migrator.iter().map(|m| m.version).max();
    if let Some((applied, latest)) = applied.zip(latest).filter(|(applied, latest)| applied < latest) {
        tracing::info!(from = applied, to = latest, "upgrading the database schema; on a large database this can take minutes");
    }
}

/// How long a caller waits for a pooled connection unless told otherwise: short, so that an
/// unreachable database is reported (503, task retry) instead of holding every request.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Stores {
    /// Connects to the database named by the URL and applies migrations.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, pool_size, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// Like [`Self::connect`], waiting at most `acquire_timeout` for a pooled Postgres connection.
    pub async fn connect_with(url: &str, pool_size: u32, acquire_timeout: Duration) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = Arc::new(postgres::PgStore::connect(url, pool_size, acquire_timeout).await?);
            Ok(Self { resources: pg.clone(), jobs: pg.clone(), queue: pg.clone(), auth: pg })
        } else if url.starts_with("sqlite:") {
            // A SQLite file is never out of reach: its pool waits as long as a busy writer may.
            let lite = Arc::new(sqlite::SqliteStore::connect(url, pool_size).await?);
            Ok(Self { resources: lite.clone(), jobs: lite.clone(), queue: lite.clone(), auth: lite })
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_faults_are_transient_and_data_faults_are_not() {
        for code in ["08006", "08001", "57P01", "57P03", "53300", "40P01", "5", "517", "6"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["23505", "22008", "42P01", "19", "2067", "40002"] {
            assert!(!is_transient_code(code), "{code}");
        }
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(StoreError::Database(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::Conflict("Patient/1".into()).is_transient());
        let cut = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(StoreError::Database(cut).is_transient());
        let eof: Box<dyn std::error::Error + Send + Sync> = Box::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(StoreError::Database(sqlx::Error::Tls(eof)).is_transient());
        assert!(!StoreError::Database(sqlx::Error::Tls("certificate not valid for the host".into())).is_transient());
    }
}
