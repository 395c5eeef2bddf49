//! Who asks for an export and what they may see: the owner of the jobs they start, the resource
//! types their authorization covers, and how many exports they may run at once. (Applying that
//! access to a kick-off request is the export's: `export::access`.)

use std::collections::BTreeSet;

use super::{
    job::{FileKind, FileRecord},
    request::ExportRequest,
};
use crate::fhir::ResourceType;

/// Owner of jobs when the server runs without authorization.
pub const ANONYMOUS: &str = "anonymous";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeAccess {
    All,
    Only(BTreeSet<ResourceType>),
}

impl TypeAccess {
    pub fn allows(&self, resource_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.iter().any(|t| t.as_str() == resource_type),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Requester {
    /// Jobs and their files belong to this owner; anyone else is told they do not exist.
    pub owner: String,
    pub types: TypeAccess,
    /// Queued or running exports this owner may have at once (None: no limit).
    pub max_active_exports: Option<u32>,
}

impl Requester {
    /// The single user of a server running without authorization.
    pub fn anonymous() -> Self {
        Self { owner: ANONYMOUS.into(), types: TypeAccess::All, max_active_exports: None }
    }

    /// A resource type in `file` that the requester may not read, if any. Checked wherever a
    /// file is listed, signed or served: access may have narrowed since kick-off. Error files
    /// hold only the job's own OperationOutcomes.
    pub fn refused_type(&self, request: &ExportRequest, file: &FileRecord) -> Option<String> {
        let TypeAccess::Only(_) = &self.types else { return None };
        match (file.kind, request.organize_by_patient, &request.types) {
            (FileKind::Error, _, _) => None,
            // An organized file holds every type the job exported (fixed at kick-off when
            // access was limited): access must still cover them all.
            (FileKind::Output, true, Some(types)) => types.iter().find(|t| !self.types.allows(t.as_str())).map(|t| t.to_string()),
            (FileKind::Output, true, None) => Some("every resource type".into()),
            _ => (!self.types.allows(&file.resource_type)).then(|| file.resource_type.clone()),
        }
    }
}
