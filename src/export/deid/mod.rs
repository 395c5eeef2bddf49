//! De-identified export (`_anonymizationConfig`): the configuration is read once at kick-off
//! from the store beside the destination, checked against the requested ETag, validated by the
//! engine, and sealed into the job's row; every task opens that sealed copy, so an edit of the
//! file cannot change a running export and every node applies the same rules. Each resource is
//! then de-identified by a pipeline stage after `_typeFilter` and before `_elements` (the
//! filter judges the stored data; `_elements` picks from what is released).
//!
//! `dateShiftScope`: `folder` is the job id; `file` is the resource type, the stem of the
//! type's output files (`Patient` for `Patient-1.ndjson`, `Patient-2.ndjson`, ...): where a file
//! rolls over depends on the size limit, so a shift must not change there.

pub mod params;
pub mod seal;

use std::sync::Arc;

use serde_json::Value;

use super::{
    pipeline::{Stage, StageError, Verdict},
    ExportError,
};
use crate::{
    anonymize::{Engine, ProcessingError, Scope},
    model::{
        job::{ClaimedTask, JobId},
        request::ExportRequest,
    },
    output::{
        config_store::{etag_matches, ConfigReadError},
        ConfigStore,
    },
};
use seal::ConfigKey;

/// The stage's name in a failed task's error.
const STAGE: &str = "de-identification";

/// The kick-off side: where configurations are read, and the key that seals them.
#[derive(Clone)]
pub struct Configurations {
    pub store: ConfigStore,
    pub key: Arc<ConfigKey>,
}

impl Configurations {
    /// Reads, checks and seals the configuration the request names, for job `job`; records the
    /// ETag that was read in the request (the manifest's). None without `_anonymizationConfig`.
    pub async fn prepare(&self, request: &mut ExportRequest, job: JobId) -> Result<Option<Vec<u8>>, ExportError> {
        let Some(wanted) = request.anonymization.as_mut() else { return Ok(None) };
        let invalid = |name: &str, reason: String| ExportError::InvalidParameter { name: name.to_owned(), reason };
        let stored = match self.store.read(&wanted.config).await {
            Ok(stored) => stored,
            Err(ConfigReadError::Output(e)) => return Err(e.into()),
            Err(e) => return Err(invalid(params::CONFIG, e.to_string())),
        };
        if let Some(etag) = &wanted.etag
            && !etag_matches(etag, &stored.etag)
        {
            return Err(invalid(
                params::ETAG,
                format!("configuration '{}' has ETag '{}', not the '{etag}' asked for", wanted.config, stored.etag),
            ));
        }
        Engine::from_json(&stored.bytes)
            .map_err(|e| invalid(params::CONFIG, format!("configuration '{}' cannot be used: {e}", wanted.config)))?;
        wanted.etag = Some(stored.etag);
        Ok(Some(self.key.seal(job, &stored.bytes)))
    }
}

/// The worker side: a task's engine, opened from the job's sealed configuration.
pub struct Deidentify {
    engine: Arc<Engine>,
    folder: String,
}

impl Deidentify {
    /// The task's engine; None when its job is not de-identified. The error is for the job's
    /// OperationOutcome (a node without the key, a configuration this build no longer takes).
    pub fn open(task: &ClaimedTask, key: Option<&ConfigKey>) -> Result<Option<Arc<Self>>, String> {
        let (Some(sealed), Some(wanted)) = (&task.anonymization, &task.request.anonymization) else {
            return Ok(None);
        };
        let key = key.ok_or("its de-identification configuration cannot be decrypted: this node has no anonymization key")?;
        let plain = key.open(task.job_id, sealed)?;
        let engine = Engine::from_json(&plain).map_err(|e| format!("configuration '{}' cannot be used: {e}", wanted.config))?;
        Ok(Some(Arc::new(Self { engine: Arc::new(engine), folder: task.job_id.to_string() })))
    }

    /// One resource's JSON, de-identified as resources of `file` are (a block header).
    pub fn rewrite(&self, text: &str, file: &str) -> Result<String, StageError> {
        let mut out = Vec::with_capacity(text.len());
        self.stage(file).rewrite_text(text.as_bytes(), &mut out)?;
        // The engine writes JSON text: UTF-8.
        String::from_utf8(out).map_err(|e| StageError::new(STAGE, e))
    }

    /// The stage that de-identifies the resources of one type.
    pub fn stage(&self, resource_type: &str) -> AnonymizeStage {
        AnonymizeStage { engine: self.engine.clone(), scope: Scope { file: resource_type.to_owned(), folder: self.folder.clone() } }
    }
}

/// De-identifies each resource; a processing error (`processingErrors: raise`) fails the task,
/// naming the resource.
pub struct AnonymizeStage {
    engine: Arc<Engine>,
    scope: Scope,
}

impl AnonymizeStage {
    /// One resource's text, de-identified into `out`.
    fn rewrite_text(&self, line: &[u8], out: &mut Vec<u8>) -> Result<(), StageError> {
        self.engine.apply_line(line, &self.scope, out).map_err(|e| self.failed(e))
    }

    /// The task's error: the engine's names the resource (its stored type and id) and the rule.
    fn failed(&self, e: ProcessingError) -> StageError {
        StageError::new(STAGE, format!("de-identifying a stored {} resource failed: {e}", self.scope.file))
    }
}

impl Stage for AnonymizeStage {
    fn apply(&self, resource: &mut Value) -> Result<Verdict, StageError> {
        self.engine.apply(resource, &self.scope).map_err(|e| self.failed(e))?;
        Ok(Verdict::Changed)
    }

    fn rewrite(&self, line: &[u8], out: &mut Vec<u8>) -> Option<Result<(), StageError>> {
        Some(self.rewrite_text(line, out))
    }

    fn heavy(&self) -> bool {
        true
    }
}
