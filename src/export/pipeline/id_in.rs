//! A selection stage: keeps the resources with the given ids (Group export's referenced ones).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Stage, StageError, Verdict};
use crate::fhir::types::ResourceId;

/// Keeps only the resources with these ids (Group export: the referenced ones).
pub struct IdIn(pub BTreeSet<ResourceId>);

impl Stage for IdIn {
    fn apply(&self, resource: &mut Value) -> Result<Verdict, StageError> {
        let id = resource.get("id").and_then(Value::as_str).and_then(ResourceId::parse);
        Ok(if id.is_some_and(|id| self.0.contains(&id)) { Verdict::Keep } else { Verdict::Drop })
    }
}
