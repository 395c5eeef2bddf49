//! The export operations the HTTP edge calls: kick off, status, cancel, and file lookup.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use super::{deid::Configurations, group, status_cache::StatusCache, ExportError};
use crate::{
    fhir::{types::ResourceId, ResourceType},
    model::{
        job::{FileRecord, JobId, JobRecord, JobStatus, NewJob, TaskKind, TaskSpec},
        request::{ContainerName, ExportLevel, ExportRequest, Handling},
        requester::Requester,
    },
    output::{Output, OutputError, UrlMode},
    store::{Created, Stores},
};

#[derive(Clone)]
pub struct Exports {
    stores: Stores,
    output: Output,
    retention: Duration,
    max_file_bytes: u64,
    status: Arc<StatusCache>,
    /// Where `_anonymizationConfig` configurations come from, and the key that seals them.
    configurations: Option<Configurations>,
}

/// What the status endpoint reports.
pub enum ExportState {
    /// With the files already complete when the request allowed partial manifests (else none).
    InProgress(JobRecord, Vec<FileRecord>),
    Completed(JobRecord, Vec<FileRecord>),
    Failed(JobRecord),
}

impl Exports {
    /// Status answers are served from `status`, this node's cache (shared with its workers).
    pub fn new(stores: Stores, output: Output, retention: Duration, max_file_bytes: u64, status: Arc<StatusCache>) -> Self {
        Self { stores, output, retention, max_file_bytes, status, configurations: None }
    }

    /// Takes de-identified exports (`_anonymizationConfig`), with configurations from `configurations`.
    pub fn with_configurations(mut self, configurations: Configurations) -> Self {
        self.configurations = Some(configurations);
        self
    }

    /// Plans and records a job: fixes transactionTime, resolves Group membership at that instant,
    /// and creates one task per type to export (plus one for lenient-handling warnings). The
    /// requester owns the job; the export covers only the types its authorization allows.
    #[tracing::instrument(skip_all, fields(level = ?request.level, owner = %requester.owner))]
    pub async fn kick_off(&self, mut request: ExportRequest, requester: &Requester) -> Result<JobId, ExportError> {
        requester.restrict(&mut request)?;
        let owner = requester.owner.as_str();
        let id = JobId::new();
        let anonymization = match (&self.configurations, &request.anonymization) {
            (_, None) => None,
            (Some(configurations), Some(_)) => configurations.prepare(&mut request, id).await?,
            (None, Some(_)) => return Err(ExportError::UnsupportedParameter(super::deid::params::CONFIG.into())),
        };
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
        let mut tasks: Vec<TaskSpec> = if request.organize_by_patient {
            // One task writes every type, patient by patient (no task kind of its own: the
            // schema's task kinds stay as they are).
            vec![TaskSpec { kind: TaskKind::Export, resource_type: super::organized::ORGANIZED_BY.into() }]
        } else {
            request
                .types_to_export(&present)
                .into_iter()
                .map(|t| TaskSpec { kind: TaskKind::Export, resource_type: t.to_string() })
                .collect()
        };
        if !request.warnings.is_empty() {
            tasks.push(TaskSpec { kind: TaskKind::Outcomes, resource_type: "OperationOutcome".into() });
        }
        // As in the seed system: `{yyyyMMddTHHmmss}-{jobId}`, under `_container` when given.
        let name = format!("{}-{id}", transaction_time.format("%Y%m%dT%H%M%S"));
        let folder = self.output.folder_key(request.container.as_ref().map(ContainerName::as_str), &name);
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
            anonymization,
        };
        let level = job.request.level.name();
        let limit = requester.max_active_exports;
        if let Created::OverLimit { active } = self.stores.jobs.create_job(job, limit).await? {
            return Err(ExportError::TooManyExports { active, limit: limit.unwrap_or_default() });
        }
        metrics::counter!(crate::telemetry::names::EXPORTS_STARTED, "level" => level).increment(1);
        tracing::info!(job = %id, "export job created");
        Ok(id)
    }

    /// Removes a job whose kick-off failed after recording it: the client never learned its
    /// status URL, so nothing else would ever cancel it.
    pub async fn discard(&self, id: JobId) {
        match self.stores.jobs.delete_job(id).await {
            Ok(()) => tracing::info!(job = %id, "export job removed: its kick-off failed"),
            Err(e) => tracing::error!(job = %id, error = %e, "could not remove the job of a failed kick-off"),
        }
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

    /// The state of one of the owner's jobs.
    pub async fn state(&self, id: JobId, owner: &str) -> Result<ExportState, ExportError> {
        let (job, files) = match self.status.get(id) {
            Some(cached) => cached,
            None => {
                let job = self.stores.jobs.job(id).await?.ok_or_else(|| ExportError::JobNotFound(id.to_string()))?;
                // Files are recorded only when their task completes, and never change after.
                let listed = job.status == JobStatus::Completed || (job.status != JobStatus::Failed && job.request.allow_partial_manifests);
                let files = if listed { self.stores.jobs.files(id).await? } else { Vec::new() };
                self.status.put(job.clone(), files.clone());
                (job, files)
            }
        };
        if job.status.is_gone() || job.owner != owner {
            return Err(ExportError::JobNotFound(id.to_string()));
        }
        Ok(match job.status {
            JobStatus::Completed => ExportState::Completed(job, files),
            JobStatus::Failed => ExportState::Failed(job),
            _ => ExportState::InProgress(job, files),
        })
    }

    /// The state of one of the requester's jobs as its manifest may show it: only the files
    /// whose types the requester's access covers now.
    pub async fn status(&self, id: JobId, requester: &Requester) -> Result<ExportState, ExportError> {
        let covered = |job: &JobRecord, files: Vec<FileRecord>| -> Vec<FileRecord> {
            files.into_iter().filter(|f| requester.refused_type(&job.request, f).is_none()).collect()
        };
        Ok(match self.state(id, &requester.owner).await? {
            ExportState::InProgress(job, files) => {
                let files = covered(&job, files);
                ExportState::InProgress(job, files)
            }
            ExportState::Completed(job, files) => {
                let files = covered(&job, files);
                ExportState::Completed(job, files)
            }
            failed => failed,
        })
    }

    /// Cancels a running job or releases a finished one; its files are deleted by the janitor
    /// once no worker writes them.
    pub async fn cancel(&self, id: JobId, owner: &str) -> Result<(), ExportError> {
        self.live_job(id, owner).await?;
        if self.stores.jobs.cancel(id).await? {
            self.status.forget(id);
            tracing::info!(job = %id, "export job cancelled or released");
            Ok(())
        } else {
            Err(ExportError::JobNotFound(id.to_string()))
        }
    }

    /// A file of one of the requester's jobs, completed or listed in a partial manifest, by its manifest name. Resource files
    /// also need the requester's access to cover their type (access may have narrowed since
    /// kick-off); error files hold only the job's own OperationOutcomes.
    pub async fn open_file(
        &self,
        id: JobId,
        name: &str,
        requester: &Requester,
    ) -> Result<(FileRecord, u64, BoxStream<'static, Result<Bytes, OutputError>>), ExportError> {
        let not_found = || ExportError::FileNotFound { job: id.to_string(), name: name.to_owned() };
        let (ExportState::Completed(job, files) | ExportState::InProgress(job, files)) = self.state(id, &requester.owner).await? else {
            return Err(not_found());
        };
        let file = files.into_iter().find(|f| f.name == name).ok_or_else(not_found)?;
        if let Some(refused) = requester.refused_type(&job.request, &file) {
            return Err(ExportError::Forbidden(format!("the access token's scopes do not allow reading {refused}")));
        }
        let (size, body) = self.output.read(&file.key).await?;
        Ok((file, size, body))
    }

    /// Signed URLs of a completed job's files, by key, valid until the export expires; None
    /// when this server serves the files itself. A signed URL needs no token, so one is minted
    /// only for a file the requester may read now.
    pub async fn signed_urls(
        &self,
        job: &JobRecord,
        files: &[FileRecord],
        requester: &Requester,
    ) -> Result<Option<HashMap<String, String>>, ExportError> {
        if self.output.url_mode() != UrlMode::Signed {
            return Ok(None);
        }
        let expires = job.expires_at.unwrap_or_else(|| chrono::Utc::now() + self.retention);
        // At least a minute, so a URL handed out just before expiry can still be used.
        let valid_for = (expires - chrono::Utc::now()).to_std().unwrap_or_default().max(Duration::from_secs(60));
        let mut urls = HashMap::with_capacity(files.len());
        for file in files.iter().filter(|f| requester.refused_type(&job.request, f).is_none()) {
            if let Some(url) = self.output.signed_url(&file.key, valid_for).await? {
                urls.insert(file.key.clone(), url);
            }
        }
        Ok(Some(urls))
    }

    /// A job that still exists and belongs to `owner`: another owner's job answers exactly as
    /// an unknown one, so job ids reveal nothing.
    async fn live_job(&self, id: JobId, owner: &str) -> Result<JobRecord, ExportError> {
        match self.stores.jobs.job(id).await? {
            Some(job) if !job.status.is_gone() && job.owner == owner => Ok(job),
            _ => Err(ExportError::JobNotFound(id.to_string())),
        }
    }
}
