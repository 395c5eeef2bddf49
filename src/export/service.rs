//! The export operations the HTTP edge calls: kick off, status, cancel, and file lookup.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use super::{
    group,
    job::{FileRecord, JobId, JobRecord, NewJob, TaskKind, TaskSpec},
    request::{ExportLevel, ExportRequest, Handling},
    ExportError, JobStatus,
};
use crate::{
    fhir::{types::ResourceId, ResourceType},
    output::{Output, OutputError},
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
    /// With the files already complete when the request allowed partial manifests (else none).
    InProgress(JobRecord, Vec<FileRecord>),
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
    pub async fn kick_off(&self, mut request: ExportRequest, owner: &str) -> Result<JobId, ExportError> {
        let id = JobId::new();
        let transaction_time = self.stores.resources.snapshot_time().await?;
        let mut patients = match &request.level {
            ExportLevel::Group { id: group_id } => {
                group::members(self.stores.resources.as_ref(), group_id, transaction_time).await?
            }
            _ => Vec::new(),
        };
        if let Some(requested) = request.patients.take() {
            let chosen = self.requested_patients(&mut request, requested, &patients, transaction_time).await?;
            request.patients = Some(chosen.clone());
            patients = chosen;
        }
        let present = self.stores.resources.types_present().await?;
        let mut tasks: Vec<TaskSpec> = request
            .types_to_export(&present)
            .into_iter()
            .map(|t| TaskSpec { kind: TaskKind::Export, resource_type: t.to_string() })
            .collect();
        if !request.warnings.is_empty() {
            tasks.push(TaskSpec { kind: TaskKind::Outcomes, resource_type: "OperationOutcome".into() });
        }
        let folder = Output::job_folder(request.container.as_ref().map(|c| c.as_str()), transaction_time, id);
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

    /// The `patient` parameter's patients that exist at transactionTime and, at Group level,
    /// are members. Any other is a 400 naming it, or (lenient) left out with a warning.
    async fn requested_patients(
        &self,
        request: &mut ExportRequest,
        requested: Vec<ResourceId>,
        members: &[ResourceId],
        as_of: DateTime<Utc>,
    ) -> Result<Vec<ResourceId>, ExportError> {
        let patient_type = ResourceType::parse("Patient").expect("Patient is an R4 type");
        let mut chosen = Vec::with_capacity(requested.len());
        for id in requested {
            let problem = if let ExportLevel::Group { id: group } = &request.level {
                (!members.contains(&id)).then(|| format!("Patient/{id} is not a member of Group/{group}"))
            } else {
                None
            };
            let problem = match problem {
                Some(p) => Some(p),
                None => self.stores.resources.read_as_of(&patient_type, &id, as_of).await?.is_none().then(|| format!("Patient/{id} does not exist")),
            };
            match (problem, request.handling) {
                (None, _) => chosen.push(id),
                (Some(reason), Handling::Strict) => {
                    return Err(ExportError::InvalidParameter { name: "patient".into(), reason });
                }
                (Some(reason), Handling::Lenient) => {
                    request.warnings.push(format!("parameter 'patient': {reason}; left out under Prefer: handling=lenient"));
                }
            }
        }
        Ok(chosen)
    }

    pub async fn state(&self, id: JobId) -> Result<ExportState, ExportError> {
        let job = self.live_job(id).await?;
        Ok(match job.status {
            JobStatus::Completed => {
                let files = self.stores.jobs.files(id).await?;
                ExportState::Completed(job, files)
            }
            JobStatus::Failed => ExportState::Failed(job),
            _ if job.request.allow_partial_manifests => {
                // Files are recorded only when their task completes, and never change after.
                let files = self.stores.jobs.files(id).await?;
                ExportState::InProgress(job, files)
            }
            _ => ExportState::InProgress(job, Vec::new()),
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

    /// A file of a completed job, or one listed in a partial manifest, by its manifest name.
    pub async fn open_file(
        &self,
        id: JobId,
        name: &str,
    ) -> Result<(FileRecord, u64, BoxStream<'static, Result<Bytes, OutputError>>), ExportError> {
        let not_found = || ExportError::FileNotFound { job: id.to_string(), name: name.to_owned() };
        let (ExportState::Completed(_, files) | ExportState::InProgress(_, files)) = self.state(id).await? else {
            return Err(not_found());
        };
        let file = files.into_iter().find(|f| f.name == name).ok_or_else(not_found)?;
        let (size, body) = self.output.read(&file.key).await?;
        Ok((file, size, body))
    }

    async fn live_job(&self, id: JobId) -> Result<JobRecord, ExportError> {
        match self.stores.jobs.job(id).await? {
            Some(job) if !job.status.is_gone() => Ok(job),
            _ => Err(ExportError::JobNotFound(id.to_string())),
        }
    }
}
