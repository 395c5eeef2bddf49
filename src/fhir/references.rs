//! Resources outside the Patient compartment that a Group export adds when its resources
//! reference them, and finding those references in stored JSON text without parsing it.

use std::collections::BTreeSet;

use memchr::memmem;

use super::{types::ResourceId, ResourceType};

/// The types a Group export adds when its exported resources reference them (Bulk Data: the
/// "resources the compartment references ... should say so"): who acted, where, for whom, with
/// what medication. Other types outside the compartment are not followed.
pub const REFERENCED_TYPES: [&str; 8] = [
    "Endpoint",
    "HealthcareService",
    "Location",
    "Medication",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Substance",
];

pub fn is_referenced_type(t: &ResourceType) -> bool {
    REFERENCED_TYPES.contains(&t.as_str())
}

/// Adds to `found` the ids of every literal reference to `target` in the NDJSON text: relative
/// (`Type/id`, `Type/id/_history/n`) or absolute (`http://.../Type/id`). Contained (`#x`),
/// `urn:` and conditional references name no stored resource and are skipped. The text must be
/// compact JSON as stored (`"reference":"` with no spaces), which every stored body is.
pub fn collect_ids(text: &[u8], target: &ResourceType, found: &mut BTreeSet<ResourceId>) {
    const KEY: &[u8] = b"\"reference\":\"";
    let wanted = format!("{target}/");
    let wanted = memmem::Finder::new(wanted.as_bytes());
    for at in memmem::find_iter(text, KEY) {
        let value = &text[at + KEY.len()..];
        let Some(end) = memchr::memchr(b'"', value) else { continue };
        // Most references name other types: look closer only at those that mention this one.
        if wanted.find(&value[..end]).is_none() {
            continue;
        }
        if let Some(id) = std::str::from_utf8(&value[..end]).ok().and_then(|r| reference_id(r, target)) {
            found.insert(id);
        }
    }
}

/// The id a literal reference names, when it names a resource of type `target`.
pub fn reference_id(reference: &str, target: &ResourceType) -> Option<ResourceId> {
    if reference.contains(['?', '#', '\\']) {
        return None;
    }
    let segments: Vec<&str> = reference.split('/').collect();
    let at = segments.iter().rposition(|s| *s == target.as_str())?;
    let id = segments.get(at + 1)?;
    let tail = segments.get(at + 2..).unwrap_or_default();
    let is_history = tail.is_empty() || (tail.len() == 2 && tail[0] == "_history");
    if is_history { ResourceId::parse(id) } else { None }
}

/// The type and id a literal reference names (`Type/id`, `Type/id/_history/n`, or an absolute
/// URL ending in those).
pub fn split_reference(reference: &str) -> Option<(ResourceType, ResourceId)> {
    if reference.contains(['?', '#']) {
        return None;
    }
    let mut segments: Vec<&str> = reference.split('/').collect();
    if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        segments.truncate(segments.len() - 2);
    }
    let [.., t, id] = segments.as_slice() else { return None };
    Some((ResourceType::parse(t)?, ResourceId::parse(id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literal_references_of_one_type() {
        let org = ResourceType::parse("Organization").unwrap();
        let text = br##"{"resourceType":"Encounter","serviceProvider":{"reference":"Organization/o1"},"x":[{"reference":"Practitioner/p"}]}
{"managingOrganization":{"reference":"https://h/fhir/Organization/o2/_history/4"},"a":{"reference":"#c"},"b":{"reference":"Organization?identifier=x"},"c":{"reference":"Organization/o1"}}
"##;
        let mut found = BTreeSet::new();
        collect_ids(text, &org, &mut found);
        assert_eq!(found.iter().map(|i| i.as_str()).collect::<Vec<_>>(), ["o1", "o2"]);
        assert!(reference_id("Organization/a/b", &org).is_none());
        assert!(reference_id("Organization", &org).is_none());
        assert_eq!(split_reference("http://h/fhir/Observation/o/_history/2").map(|(t, id)| (t.as_str(), id.to_string())), Some(("Observation", "o".into())));
        assert!(split_reference("Observation?code=x").is_none());
        assert!(split_reference("o1").is_none());
    }
}
