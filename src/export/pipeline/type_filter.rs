//! The `_typeFilter` stage: keeps a resource when any of its type's queries matches it.

use serde_json::Value;

use super::{Stage, StageError, Verdict};
use crate::fhir::search::CompiledFilter;

pub struct TypeFilterStage {
    /// OR-ed; never empty (a type without queries gets no stage).
    pub filters: Vec<CompiledFilter>,
}

impl Stage for TypeFilterStage {
    fn apply(&self, resource: &mut Value) -> Result<Verdict, StageError> {
        Ok(if self.filters.iter().any(|f| f.matches(resource)) { Verdict::Keep } else { Verdict::Drop })
    }
}
