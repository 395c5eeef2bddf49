//! Why an export task failed: what the job's OperationOutcome tells the client (in its terms,
//! never a server path or SQL), what the log keeps (the error itself, sources and all, rendered
//! only when logged), and whether another attempt may succeed.

use std::{any::Any, error::Error};

use super::pipeline::PipelineError;
use crate::{fhir::IssueCode, output::OutputError, store::StoreError, telemetry::error_chain};

#[derive(Debug)]
pub struct TaskFailure {
    /// For the client: what failed, in the terms of its request and data.
    pub client: String,
    /// For the log: the error that stopped the task, with its sources (None: `client` says all).
    pub source: Option<Box<dyn Error + Send + Sync>>,
    pub code: IssueCode,
    /// Another attempt may succeed (the database was out of reach, the task panicked).
    pub retry: bool,
}

/// A panic's text, kept for the log only (it may quote internals).
#[derive(Debug, thiserror::Error)]
#[error("panicked: {0}")]
struct Panicked(String);

impl TaskFailure {
    /// A problem with the request or the stored data, in words fit for the client.
    pub fn data(message: impl Into<String>) -> Self {
        Self { client: message.into(), source: None, code: IssueCode::Processing, retry: false }
    }

    /// A problem with the request or the stored data that an error describes: the client reads
    /// the error and its sources (in its terms), the log keeps the error itself.
    pub fn data_error(error: impl Error + Send + Sync + 'static) -> Self {
        Self { client: error_chain(&error), source: Some(Box::new(error)), code: IssueCode::Processing, retry: false }
    }

    pub fn store(error: StoreError) -> Self {
        let (client, code, retry) = if error.is_transient() {
            ("the database could not be reached", IssueCode::Transient, true)
        } else {
            ("reading the stored resources failed (the server log has the details)", IssueCode::Exception, false)
        };
        Self { client: client.to_owned(), source: Some(Box::new(error)), code, retry }
    }

    pub fn output(error: OutputError) -> Self {
        // Storage errors are written for clients (destination and the service's answer, never a
        // URL or key); a local directory's name is the server's own and stays in the log.
        let client = match &error {
            OutputError::NotFound { .. } | OutputError::Storage { .. } => format!("writing the export files failed: {error}"),
            OutputError::Directory { .. } | OutputError::Config(_) | OutputError::Settings(_) => {
                "writing the export files failed (the server log has the details)".to_owned()
            }
        };
        Self { client, source: Some(Box::new(error)), code: IssueCode::Exception, retry: false }
    }

    /// What the log says: the error and each of its sources, or the client's words when the
    /// failure has no error behind it.
    pub fn detail(&self) -> String {
        match &self.source {
            Some(error) => error_chain(error.as_ref()),
            None => self.client.clone(),
        }
    }

    /// A panic inside the task: a bug, reported without its text (which may quote internals).
    pub fn panic(payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        let client = "an internal error stopped it (the server log has the details)".to_owned();
        Self { client, source: Some(Box::new(Panicked(message))), code: IssueCode::Exception, retry: true }
    }
}

impl From<StoreError> for TaskFailure {
    fn from(e: StoreError) -> Self {
        Self::store(e)
    }
}

impl From<OutputError> for TaskFailure {
    fn from(e: OutputError) -> Self {
        Self::output(e)
    }
}

impl From<PipelineError> for TaskFailure {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(e) => Self::store(e),
            PipelineError::NotJson(e) => Self::data_error(e),
            PipelineError::Stage(e) => Self::data_error(e),
            PipelineError::Write(e) => {
                let client = "an internal error stopped it (the server log has the details)".to_owned();
                Self { client, source: Some(Box::new(e)), code: IssueCode::Exception, retry: false }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_words_leave_out_paths_and_sql() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "/var/lib/bulkfhir/exports/x: denied");
        let output = OutputError::Directory { path: "/var/lib/bulkfhir/exports".into(), source: io };
        let failure = TaskFailure::from(output);
        assert!(!failure.client.contains("/var/lib") && failure.detail().contains("/var/lib"));
        assert!(!failure.retry);

        let store = StoreError::Database(sqlx::Error::Protocol("SELECT body FROM resources WHERE ...".into()));
        let failure = TaskFailure::from(store);
        assert!(!failure.client.contains("SELECT") && failure.detail().contains("SELECT"));

        let failure = TaskFailure::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert!(failure.retry && failure.code == IssueCode::Transient);
    }

    #[test]
    fn the_failure_keeps_the_error_and_its_sources_until_it_is_logged() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device");
        let failure = TaskFailure::from(OutputError::Directory { path: "/data/exports".into(), source: io });
        let error = failure.source.as_deref().expect("the output error is kept");
        assert!(matches!(error.downcast_ref::<OutputError>(), Some(OutputError::Directory { .. })));
        assert_eq!(error.source().map(ToString::to_string).as_deref(), Some("no space left on device"));
        assert!(failure.detail().ends_with(": no space left on device"), "{}", failure.detail());

        let failure = TaskFailure::data("Group/g has no members");
        assert!(failure.source.is_none() && failure.detail() == failure.client);
    }
}
