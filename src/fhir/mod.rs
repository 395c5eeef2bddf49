//! FHIR R4 knowledge without I/O: resource types, ids and instants, the Patient compartment,
//! resource validation and stamping, Bundles, OperationOutcome, and search for `_typeFilter`.

pub mod bundle;
pub mod compartment;
pub mod elements;
pub mod instant;
pub mod outcome;
#[cfg(test)]
pub(crate) mod props;
pub mod references;
pub mod resource;
pub mod search;
pub mod types;

pub use outcome::{IssueCode, OperationOutcome};
pub use resource::{Resource, ResourceError};
pub use types::ResourceType;
