//! The R4 Patient compartment: which references make a resource part of a patient's record.

use std::{collections::{BTreeSet, HashMap}, sync::LazyLock};

use serde_json::{Map, Value};

use super::{types::ResourceId, ResourceType};

/// Type -> element paths, derived from the official CompartmentDefinition and search
/// parameters by `scripts/derive-fhir-tables.py`.
const TABLE: &str = include_str!("data/patient-compartment.json");

static PATHS: LazyLock<HashMap<String, Vec<Vec<String>>>> = LazyLock::new(|| {
    let raw: HashMap<String, Vec<String>> =
        serde_json::from_str(TABLE).expect("patient-compartment.json is valid");
    raw.into_iter()
        .map(|(t, paths)| (t, paths.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect()))
        .collect()
});

/// The types that can sit in a Patient compartment, Patient included: the types a Patient or
/// Group level export covers.
pub fn compartment_types() -> Vec<ResourceType> {
    let mut types: BTreeSet<ResourceType> = PATHS.keys().filter_map(|t| ResourceType::parse(t)).collect();
    types.insert(ResourceType::parse("Patient").expect("Patient is an R4 type"));
    types.into_iter().collect()
}

pub fn is_compartment_type(t: &ResourceType) -> bool {
    t.as_str() == "Patient" || PATHS.contains_key(t.as_str())
}

/// Whether a Patient reference at this element path (`subject`, `performer`) puts a resource
/// of type `t` in that patient's compartment.
pub fn is_compartment_path(t: &ResourceType, path: &[String]) -> bool {
    PATHS.get(t.as_str()).is_some_and(|paths| paths.iter().any(|p| p == path))
}

/// Whether a top-level element of a resource of type `t` can put it in a patient's compartment
/// (the first step of one of the type's compartment paths).
pub fn is_root(t: &ResourceType, element: &str) -> bool {
    PATHS.get(t.as_str()).is_some_and(|paths| paths.iter().any(|p| p.first().is_some_and(|first| first == element)))
}

/// The ids of the patients whose compartment holds this resource. A Patient belongs to its own.
pub fn patients_of(t: &ResourceType, id: &ResourceId, body: &Map<String, Value>) -> Vec<ResourceId> {
    let mut found = BTreeSet::new();
    if t.as_str() == "Patient" {
        found.insert(id.clone());
    }
    if let Some(paths) = PATHS.get(t.as_str()) {
        for path in paths {
            collect_in(body, path, &mut found);
        }
    }
    found.into_iter().collect()
}

fn collect(value: &Value, path: &[String], found: &mut BTreeSet<ResourceId>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect(item, path, found)),
        Value::Object(map) => collect_in(map, path, found),
        _ => {}
    }
}

fn collect_in(map: &Map<String, Value>, path: &[String], found: &mut BTreeSet<ResourceId>) {
    match path.split_first() {
        Some((head, rest)) => {
            if let Some(child) = map.get(head) {
                collect(child, rest, found);
            }
        }
        None => {
            if let Some(id) = map.get("reference").and_then(Value::as_str).and_then(patient_id) {
                found.insert(id);
            }
        }
    }
}

/// The patient id of a literal reference: `Patient/1`, `Patient/1/_history/2`, or an absolute
/// URL ending in those. Contained (`#x`) and `urn:` references name no stored patient.
pub fn patient_id(reference: &str) -> Option<ResourceId> {
    let path = reference.split(['?', '#']).next()?;
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments.iter().rposition(|s| *s == "Patient")?;
    let id = segments.get(at + 1)?;
    let tail = &segments[at + 2..];
    let is_history = tail.is_empty() || (tail.len() == 2 && tail[0] == "_history");
    if is_history { ResourceId::parse(id) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patients(value: Value) -> Vec<String> {
        let r = crate::fhir::Resource::from_value(value, crate::fhir::Validation::Strict).unwrap();
        r.compartment_patients().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn finds_patients_through_the_compartment_paths() {
        assert_eq!(
            patients(json!({"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p1"},
                "performer":[{"reference":"Practitioner/x"},{"reference":"http://h/fhir/Patient/p2/_history/3"}]})),
            vec!["p1", "p2"]
        );
        assert_eq!(patients(json!({"resourceType":"Patient","id":"me"})), vec!["me"]);
        assert!(patients(json!({"resourceType":"Organization","id":"o"})).is_empty());
        assert!(patients(json!({"resourceType":"Observation","id":"o","subject":{"reference":"Group/g"}})).is_empty());
    }

    #[test]
    fn reads_patient_ids_from_reference_forms() {
        assert_eq!(patient_id("Patient/a").unwrap().as_str(), "a");
        assert_eq!(patient_id("https://x/fhir/Patient/a").unwrap().as_str(), "a");
        assert!(patient_id("Patient/a/b").is_none());
        assert!(patient_id("#p").is_none());
        assert!(patient_id("urn:uuid:1234").is_none());
    }

    #[test]
    fn patient_and_group_exports_cover_the_compartment_types() {
        let types: Vec<String> = compartment_types().into_iter().map(String::from).collect();
        for t in ["Patient", "Observation", "Encounter", "Claim", "ExplanationOfBenefit"] {
            assert!(types.iter().any(|x| x == t), "{t} missing");
        }
        assert!(!types.iter().any(|x| x == "Organization"));
    }
}
