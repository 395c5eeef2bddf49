//! FHIR R4 knowledge without I/O: resource types, ids and instants, the Patient compartment,
//! resource validation against the R4 element definitions and stamping, Bundles, OperationOutcome, and search for `_typeFilter`.

pub mod bundle;
pub mod compartment;
pub mod element_types;
pub mod elements;
pub mod fhirpath;
pub mod instant;
pub mod outcome;
#[cfg(test)]
pub(crate) mod props;
pub mod references;
pub mod resource;
pub mod search;
pub mod types;
pub mod validation;

pub use outcome::{IssueCode, OperationOutcome};
pub use resource::{Resource, ResourceError};
pub use types::ResourceType;
pub use validation::Validation;
