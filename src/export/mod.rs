//! The export domain: requests and their validation, jobs and tasks, the planner (kick-off),
//! the worker pool, the NDJSON roller, the manifest and the janitor. Knows neither axum nor SQL.

mod access;
pub mod block_roller;
pub mod deid;
pub mod drain;
pub mod failure;
pub mod file_sequence;
pub mod group;
pub mod janitor;
pub mod manifest;
pub mod organized;
pub mod pacer;
pub mod params;
pub mod pipeline;
#[cfg(test)]
mod props;
pub mod request;
pub mod roller;
pub mod service;
pub mod status_cache;
pub mod type_lines;
pub mod worker;

pub use service::Exports;

use crate::{output::OutputError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("parameter '{name}': {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error("parameter '{0}' is not supported yet")]
    UnsupportedParameter(String),
    /// A `_typeFilter` condition outside what this server evaluates (the text names it).
    #[error("_typeFilter {0}")]
    UnsupportedSearch(String),
    #[error("parameter '{0}' is not a Bulk Data export parameter")]
    UnknownParameter(String),
    #[error("Group/{0} does not exist")]
    GroupNotFound(String),
    /// A stored Group whose members cannot be read: exporting it as empty would hide that.
    #[error("Group/{id} cannot be exported: {reason}")]
    InvalidGroup { id: String, reason: String },
    #[error("no export job {0}")]
    JobNotFound(String),
    #[error("no file '{name}' in export job {job}")]
    FileNotFound { job: String, name: String },
    /// The requester's authorization does not cover what was asked.
    #[error("{0}")]
    Forbidden(String),
    #[error("{active} exports of this client are already queued or running (the limit is {limit}); retry when one has finished")]
    TooManyExports { active: i64, limit: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Output(#[from] OutputError),
}
