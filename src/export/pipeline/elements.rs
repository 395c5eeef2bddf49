//! The `_elements` stage: keeps the chosen elements of each resource.

use serde_json::Value;

use super::{Stage, StageError, Verdict};
use crate::fhir::elements::Subset;

/// `_elements`: keeps the chosen elements and tags the resource SUBSETTED.
pub struct ElementsStage(pub Subset);

impl Stage for ElementsStage {
    fn apply(&self, resource: &mut Value) -> Result<Verdict, StageError> {
        self.0.apply(resource);
        Ok(Verdict::Changed)
    }
}
