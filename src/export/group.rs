//! Group membership at an instant: active members whose period covers it, nested Groups
//! expanded once each.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ExportError;
use crate::{
    fhir::{instant, types::ResourceId, ResourceType},
    store::ResourceStore,
};

/// The patients who are members of the Group at `as_of`. Members marked `inactive`, or whose
/// `period` does not cover `as_of`, are left out; a member that is a Group is expanded, and a
/// Group already visited is skipped, so cycles end.
pub async fn members(
    store: &dyn ResourceStore,
    group_id: &ResourceId,
    as_of: DateTime<Utc>,
) -> Result<Vec<ResourceId>, ExportError> {
    let group_type = ResourceType::parse("Group").expect("Group is an R4 type");
    let mut patients = BTreeSet::new();
    let mut visited = HashSet::new();
    let mut pending = vec![group_id.clone()];
    while let Some(id) = pending.pop() {
        if !visited.insert(id.clone()) {
            continue;
        }
        let Some(text) = store.read_as_of(&group_type, &id, as_of).await? else {
            if &id == group_id {
                return Err(ExportError::GroupNotFound(id.to_string()));
            }
            tracing::warn!(group = %group_id, nested = %id, "nested Group does not exist; skipped");
            continue;
        };
        let invalid = |reason: String| ExportError::InvalidGroup { id: id.to_string(), reason };
        let group: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("its stored text is not valid JSON ({e})")))?;
        if !group.is_object() {
            return Err(invalid("its stored text is not a JSON object".into()));
        }
        let members = match group.get("member") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(members)) => members.as_slice(),
            Some(_) => return Err(invalid("its 'member' is not a list".into())),
        };
        for member in members {
            if !is_current(member, as_of) {
                continue;
            }
            let Some(reference) = member.pointer("/entity/reference").and_then(Value::as_str) else { continue };
            match reference.split_once('/') {
                Some(("Patient", pid)) => patients.extend(ResourceId::parse(pid)),
                Some(("Group", gid)) => pending.extend(ResourceId::parse(gid)),
                _ => {}
            }
        }
    }
    Ok(patients.into_iter().collect())
}

fn is_current(member: &Value, as_of: DateTime<Utc>) -> bool {
    if member.get("inactive").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    let bound = |name: &str| member.pointer(&format!("/period/{name}")).and_then(Value::as_str).and_then(|v| instant::parse(v).ok());
    bound("start").is_none_or(|start| start <= as_of) && bound("end").is_none_or(|end| as_of <= end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn membership_follows_inactive_and_period() {
        let now = instant::parse("2024-06-01T00:00:00Z").unwrap();
        assert!(is_current(&json!({"entity":{"reference":"Patient/a"}}), now));
        assert!(!is_current(&json!({"entity":{"reference":"Patient/a"},"inactive":true}), now));
        assert!(!is_current(&json!({"period":{"end":"2024-01-01"}}), now));
        assert!(!is_current(&json!({"period":{"start":"2025-01-01T00:00:00Z"}}), now));
        assert!(is_current(&json!({"period":{"start":"2024-01-01","end":"2024-12-31"}}), now));
    }
}
