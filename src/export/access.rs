//! Applying a requester's type access to a kick-off request: types outside it are refused.

use super::ExportError;
use crate::model::{
    request::ExportRequest,
    requester::{Requester, TypeAccess},
};

impl Requester {
    /// Applies the requester's type access to a request: explicitly requested types outside it
    /// are refused; "all types" narrows to the allowed ones.
    pub fn restrict(&self, request: &mut ExportRequest) -> Result<(), ExportError> {
        let TypeAccess::Only(allowed) = &self.types else { return Ok(()) };
        if allowed.is_empty() {
            return Err(ExportError::Forbidden("the access token's scopes allow reading no resource type".into()));
        }
        match &request.types {
            Some(wanted) => {
                let refused: Vec<&str> = wanted.iter().filter(|t| !allowed.contains(t)).map(|t| t.as_str()).collect();
                if !refused.is_empty() {
                    return Err(ExportError::Forbidden(format!(
                        "the access token's scopes do not allow exporting {}",
                        refused.join(", ")
                    )));
                }
            }
            None => request.types = Some(allowed.iter().cloned().collect()),
        }
        // includeAssociatedData adds Provenance to whatever `_type` names: it needs its own
        // scope, refused as a `_type` outside the scopes is.
        if request.associated.is_some() && !allowed.iter().any(|t| t.as_str() == "Provenance") {
            return Err(ExportError::Forbidden(
                "the access token's scopes do not allow exporting Provenance, which includeAssociatedData adds".into(),
            ));
        }
        Ok(())
    }
}
