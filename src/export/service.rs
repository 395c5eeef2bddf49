//! The export operations the HTTP edge calls: kick off, status, cancel, and file lookup.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use futures::stream::BoxStream;

use super::{
    group,
    job::{FileRecord, JobId, JobRecord, NewJob, TaskKind, TaskSpec},
    request::{ExportLevel, ExportRequest},
    ExportError, JobStatus,
};
use crate::{
    output::{Output, OutputError, UrlMode},
    store::Stores,
};

#[derive(Clone)]
pub struct Exports {
    stores: Stores,
    output: Output,
    retention: Duration,
    max_file_bytes: u64,
}

/// What the status endpoint reports.
pub enum ExportState {
    InProgress(JobRecord),
    Completed(JobRecord, Vec<FileRecord>),
    Failed(JobRecord),
}

impl Exports {
    pub fn new(stores: Stores, output: Output, retention: Duration, max_file_bytes: u64) -> Self {
        Self { stores, output, retention, max_file_bytes }
    }

    /// Plans and records a job: fixes transactionTime, resolves Group membership at that instant,
    /// and creates one task per type to export (plus one for lenient-handling warnings).
    #[tracing::instrument(skip_all, fields(level = ?request.level))]
    pub async fn kick_off(&self, request: ExportRequest, owner: &str) -> Result<JobId, ExportError> {
        let id = JobId::new();
        let transaction_time = self.stores.resources.snapshot_time().await?;
        let patients = match &request.level {
            ExportLevel::Group { id: group_id } => {
                group::members(self.stores.resources.as_ref(), group_id, transaction_time).await?
            }
            _ => Vec::new(),
        };
        let present = self.stores.resources.types_present().await?;
        let mut tasks: Vec<TaskSpec> = request
            .types_to_export(&present)
            .into_iter()
            .map(|t| TaskSpec { kind: TaskKind::Export, resource_type: t.to_string() })
            .collect();
        if !request.warnings.is_empty() {
            tasks.push(TaskSpec { kind: TaskKind::Outcomes, resource_type: "OperationOutcome".into() });
        }
        let folder = self.output.job_folder(request.container.as_ref().map(|c| c.as_str()), transaction_time, id);
        let job = NewJob {
            id,
            owner: owner.to_owned(),
            request,
            transaction_time,
            folder,
            tasks,
            patients,
            retention: self.retention,
            max_file_bytes: self.max_file_bytes,
        };
        self.stores.jobs.create_job(job).await?;
        tracing::info!(job = %id, "export job created");
        Ok(id)
    }

    pub async fn state(&self, id: JobId) -> Result<ExportState, ExportError> {
        let job = self.live_job(id).await?;
        Ok(match job.status {
            JobStatus::Completed => {
                let files = self.stores.jobs.files(id).await?;
                ExportState::Completed(job, files)
            }
            JobStatus::Failed => ExportState::Failed(job),
            _ => ExportState::InProgress(job),
        })
    }

    /// Cancels a running job or releases a finished one; its files are deleted by the janitor
    /// once no worker writes them.
    pub async fn cancel(&self, id: JobId) -> Result<(), ExportError> {
        if self.stores.jobs.cancel(id).await? {
            tracing::info!(job = %id, "export job cancelled or released");
            Ok(())
        } else {
            Err(ExportError::JobNotFound(id.to_string()))
        }
    }

    /// A completed job's file, by its manifest name.
    pub async fn open_file(
        &self,
        id: JobId,
        name: &str,
    ) -> Result<(FileRecord, u64, BoxStream<'static, Result<Bytes, OutputError>>), ExportError> {
        let not_found = || ExportError::FileNotFound { job: id.to_string(), name: name.to_owned() };
        let ExportState::Completed(_, files) = self.state(id).await? else { return Err(not_found()) };
        let file = files.into_iter().find(|f| f.name == name).ok_or_else(not_found)?;
        let (size, body) = self.output.read(&file.key).await?;
        Ok((file, size, body))
    }

    /// Signed URLs of a completed job's files, by key, valid until the export expires; None
    /// when this server serves the files itself.
    pub async fn signed_urls(&self, job: &JobRecord, files: &[FileRecord]) -> Result<Option<HashMap<String, String>>, ExportError> {
        if self.output.url_mode() != UrlMode::Signed {
            return Ok(None);
        }
        let expires = job.expires_at.unwrap_or_else(|| chrono::Utc::now() + self.retention);
        // At least a minute, so a URL handed out just before expiry can still be used.
        let valid_for = (expires - chrono::Utc::now()).to_std().unwrap_or_default().max(Duration::from_secs(60));
        let mut urls = HashMap::with_capacity(files.len());
        for file in files {
            if let Some(url) = self.output.signed_url(&file.key, valid_for).await? {
                urls.insert(file.key.clone(), url);
            }
        }
        Ok(Some(urls))
    }

    async fn live_job(&self, id: JobId) -> Result<JobRecord, ExportError> {
        match self.stores.jobs.job(id).await? {
            Some(job) if !job.status.is_gone() => Ok(job),
            _ => Err(ExportError::JobNotFound(id.to_string())),
        }
    }
}
