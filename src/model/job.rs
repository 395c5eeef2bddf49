//! Export jobs, their tasks and files: the records the store keeps and the export works on.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::request::ExportRequest;
use crate::fhir::{types::ResourceId, ResourceType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    /// Cancelled by the client, or released (DELETE after completion): gone for the client.
    Cancelled,
    /// Past its retention: files deleted.
    Expired,
}

impl JobStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Completed, Self::Failed, Self::Cancelled, Self::Expired]
            .into_iter()
            .find(|status| status.as_str() == s)
    }

    pub const fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// Cancelled and expired jobs no longer exist for the client (404).
    pub const fn is_gone(self) -> bool {
        matches!(self, Self::Cancelled | Self::Expired)
    }
}

/// What a task writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// The resources of one type; under `organizeOutputBy=Patient`, the job's one task that
    /// writes every type, patient by patient (the request says which).
    Export,
    /// The job's OperationOutcomes (lenient-handling warnings) as `error` files.
    Outcomes,
}

impl TaskKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::Outcomes => "outcomes",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Export, Self::Outcomes].into_iter().find(|k| k.as_str() == s)
    }
}

/// Which manifest list a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Output,
    Error,
    Deleted,
}

impl FileKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Error => "error",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Output, Self::Error, Self::Deleted].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub kind: TaskKind,
    pub resource_type: String,
}

/// A job as planned at kick-off.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub owner: String,
    pub request: ExportRequest,
    pub transaction_time: DateTime<Utc>,
    /// The object-store folder all of the job's files go under.
    pub folder: String,
    pub tasks: Vec<TaskSpec>,
    /// Group export: the member patients at transactionTime.
    pub patients: Vec<ResourceId>,
    /// How long the files are kept once the job completes.
    pub retention: std::time::Duration,
    /// Output files roll over before passing this size. Fixed at kick-off, so every node
    /// working on the job writes the same shape.
    pub max_file_bytes: u64,
    /// `_anonymizationConfig`: the configuration read at kick-off, sealed (`deid::seal`).
    pub anonymization: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: JobId,
    pub owner: String,
    pub request: ExportRequest,
    pub status: JobStatus,
    pub transaction_time: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The OperationOutcome (JSON) of a failed job.
    pub error: Option<String>,
    pub progress: Progress,
}

#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub tasks_total: i64,
    pub tasks_done: i64,
    pub resources_written: i64,
    /// The types being exported right now.
    pub running: Vec<String>,
}

impl Progress {
    /// `X-Progress` text. Never claims 100% before the job is complete.
    pub fn describe(&self, status: JobStatus) -> String {
        let percent = if self.tasks_total == 0 { 0 } else { (self.tasks_done * 100 / self.tasks_total).min(99) };
        match status {
            JobStatus::Queued => "queued".to_owned(),
            _ if self.running.is_empty() => format!("{percent}% ({} resources)", self.resources_written),
            _ => format!("{percent}% ({}; {} resources)", self.running.join(", "), self.resources_written),
        }
    }
}

/// One finished file: where it is and what the manifest says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub kind: FileKind,
    pub resource_type: String,
    /// The file name in URLs: `Patient-1.ndjson`.
    pub name: String,
    /// The object-store key.
    pub key: String,
    pub count: i64,
    pub bytes: i64,
}

/// Why a task failed when its workers kept losing it: the job's OperationOutcome.
pub fn exhausted_outcome(resource_type: &str, attempts: i32) -> String {
    crate::fhir::OperationOutcome::error(
        crate::fhir::IssueCode::Exception,
        format!("exporting {resource_type} stopped {attempts} times without finishing (its workers died, lost their lease or could not reach the database)"),
    )
    .to_json()
}

/// A task a worker holds under a lease.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub task_id: i64,
    pub job_id: JobId,
    pub kind: TaskKind,
    pub resource_type: String,
    /// The fencing token of this claim: every state write checks it.
    pub fence: i64,
    pub request: ExportRequest,
    pub transaction_time: DateTime<Utc>,
    pub folder: String,
    pub max_file_bytes: u64,
    /// The job's sealed de-identification configuration, if any.
    pub anonymization: Option<Vec<u8>>,
}

impl ClaimedTask {
    pub fn resource_type(&self) -> Option<ResourceType> {
        ResourceType::parse(&self.resource_type)
    }
}
