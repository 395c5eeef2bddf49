//! Why an export task failed: what the job's OperationOutcome tells the client (in its terms,
//! never a server path or SQL), what the log keeps (the whole cause), and whether another
//! attempt may succeed.

use std::any::Any;

use super::pipeline::PipelineError;
use crate::{fhir::IssueCode, output::OutputError, store::StoreError, telemetry::error_chain};

#[derive(Debug)]
pub struct TaskFailure {
    /// For the client: what failed, in the terms of its request and data.
    pub client: String,
    /// For the log: the whole cause chain.
    pub detail: String,
    pub code: IssueCode,
    /// Another attempt may succeed (the database was out of reach, the task panicked).
    pub retry: bool,
}

impl TaskFailure {
    /// A problem with the request or the stored data, in words fit for the client.
    pub fn data(message: impl Into<String>) -> Self {
        let message = message.into();
        Self { client: message.clone(), detail: message, code: IssueCode::Processing, retry: false }
    }

    pub fn store(error: &StoreError) -> Self {
        let detail = error_chain(error);
        if error.is_transient() {
            let client = "the database could not be reached".to_owned();
            Self { client, detail, code: IssueCode::Transient, retry: true }
        } else {
            let client = "reading the stored resources failed (the server log has the details)".to_owned();
            Self { client, detail, code: IssueCode::Exception, retry: false }
        }
    }

    pub fn output(error: &OutputError) -> Self {
        // Storage errors are written for clients (destination and the service's answer, never a
        // URL or key); a local directory's name is the server's own and stays in the log.
        let client = match error {
            OutputError::NotFound { .. } | OutputError::Storage { .. } => format!("writing the export files failed: {error}"),
            OutputError::Directory { .. } | OutputError::Config(_) => {
                "writing the export files failed (the server log has the details)".to_owned()
            }
        };
        Self { client, detail: error_chain(error), code: IssueCode::Exception, retry: false }
    }

    /// A panic inside the task: a bug, reported without its text (which may quote internals).
    pub fn panic(payload: &(dyn Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        let client = "an internal error stopped it (the server log has the details)".to_owned();
        Self { client, detail: format!("panicked: {message}"), code: IssueCode::Exception, retry: true }
    }
}

impl From<StoreError> for TaskFailure {
    fn from(e: StoreError) -> Self {
        Self::store(&e)
    }
}

impl From<OutputError> for TaskFailure {
    fn from(e: OutputError) -> Self {
        Self::output(&e)
    }
}

impl From<PipelineError> for TaskFailure {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Store(e) => Self::store(&e),
            PipelineError::Stage(message) => Self::data(message),
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
        assert!(!failure.client.contains("/var/lib") && failure.detail.contains("/var/lib"));
        assert!(!failure.retry);

        let store = StoreError::Database(sqlx::Error::Protocol("SELECT body FROM resources WHERE ...".into()));
        let failure = TaskFailure::from(store);
        assert!(!failure.client.contains("SELECT") && failure.detail.contains("SELECT"));

        let failure = TaskFailure::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert!(failure.retry && failure.code == IssueCode::Transient);
    }
}
