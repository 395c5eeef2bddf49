//! `_elements`: keeping only the listed top-level elements of a resource, plus what every
//! resource needs (`resourceType`, `id`, `meta`) and what its type requires (min 1), and tagging
//! it SUBSETTED (Bulk Data; FHIR search `_elements`).

use std::{collections::HashMap, sync::LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ResourceType;

/// Type -> top-level elements with min >= 1 (choices as `name[x]`), derived from the R4
/// StructureDefinitions by `scripts/derive-fhir-tables.py`.
const REQUIRED: &str = include_str!("data/required-elements.json");

static REQUIRED_BY_TYPE: LazyLock<HashMap<String, Vec<String>>> =
    LazyLock::new(|| serde_json::from_str(REQUIRED).expect("required-elements.json is valid"));

const ALWAYS: [&str; 3] = ["resourceType", "id", "meta"];
const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// One `_elements` item: `name` (every type) or `Type.name` (that type only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementSpec {
    pub resource_type: Option<String>,
    pub name: String,
}

/// An `_elements` item this server cannot apply, naming the item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementSpecError {
    #[error("'{item}': {resource_type} is not a known FHIR R4 resource type")]
    UnknownType { item: String, resource_type: String },
    #[error("'{0}' is not an element name (use element or Type.element, top-level elements only)")]
    NotAnElement(String),
}

impl ElementSpec {
    pub fn parse(item: &str) -> Result<Self, ElementSpecError> {
        let item = item.trim();
        let (resource_type, name) = match item.split_once('.') {
            Some((t, name)) => {
                if ResourceType::parse(t).is_none() {
                    return Err(ElementSpecError::UnknownType { item: item.to_owned(), resource_type: t.to_owned() });
                }
                (Some(t.to_owned()), name)
            }
            None => (None, item),
        };
        let plain = name.strip_suffix("[x]").unwrap_or(name);
        let valid = plain.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && plain.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(ElementSpecError::NotAnElement(item.to_owned()));
        }
        Ok(Self { resource_type, name: name.to_owned() })
    }
}

/// The elements kept for one type.
#[derive(Debug, Clone)]
pub struct Subset {
    /// Exact JSON property names.
    names: Vec<String>,
    /// Choice elements (`value[x]`): any property `value` + a type name (`valueQuantity`).
    choices: Vec<String>,
}

impl Subset {
    /// What `_elements` keeps of this type; None when no item names it (neither bare nor
    /// `Type.`-prefixed with this type): the type is then exported whole.
    pub fn for_type(specs: &[ElementSpec], resource_type: &str) -> Option<Self> {
        let listed: Vec<&str> = specs
            .iter()
            .filter(|s| s.resource_type.as_deref().is_none_or(|t| t == resource_type))
            .map(|s| s.name.as_str())
            .collect();
        if listed.is_empty() {
            return None;
        }
        let required = REQUIRED_BY_TYPE.get(resource_type).map(Vec::as_slice).unwrap_or_default();
        let mut subset = Self { names: Vec::new(), choices: Vec::new() };
        for name in ALWAYS.into_iter().chain(listed).chain(required.iter().map(String::as_str)) {
            match name.strip_suffix("[x]") {
                Some(stem) => subset.choices.push(stem.to_owned()),
                None => subset.names.push(name.to_owned()),
            }
        }
        Some(subset)
    }

    fn keeps(&self, key: &str) -> bool {
        // `_name` holds the extensions of the primitive `name`: kept with it.
        let key = key.strip_prefix('_').unwrap_or(key);
        self.names.iter().any(|n| n == key)
            || self.choices.iter().any(|stem| {
                key.strip_prefix(stem.as_str()).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
            })
    }

    /// Drops the other top-level elements and adds the SUBSETTED tag.
    pub fn apply(&self, resource: &mut Value) {
        let Some(map) = resource.as_object_mut() else { return };
        map.retain(|key, _| self.keeps(key));
        let meta = map.entry("meta").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let tags = meta.as_object_mut().expect("meta is an object").entry("tag").or_insert_with(|| json!([]));
        if !tags.is_array() {
            *tags = json!([]);
        }
        let tags = tags.as_array_mut().expect("tag is an array");
        if !tags.iter().any(|t| t["system"] == SUBSETTED_SYSTEM && t["code"] == "SUBSETTED") {
            tags.push(json!({"system": SUBSETTED_SYSTEM, "code": "SUBSETTED"}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(items: &[&str]) -> Vec<ElementSpec> {
        items.iter().map(|i| ElementSpec::parse(i).unwrap()).collect()
    }

    #[test]
    fn parses_items_and_refuses_paths_and_unknown_types() {
        assert_eq!(ElementSpec::parse("Patient.name").unwrap().resource_type.as_deref(), Some("Patient"));
        assert_eq!(ElementSpec::parse("status").unwrap().resource_type, None);
        for bad in ["Bogus.name", "name.given", "", "Name", "a-b"] {
            assert!(ElementSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keeps_listed_required_and_mandatory_elements_and_tags() {
        let s = specs(&["Patient.gender", "MedicationRequest.subject"]);
        assert!(Subset::for_type(&s, "Organization").is_none(), "no item names Organization");
        assert!(Subset::for_type(&specs(&["status"]), "Organization").is_some(), "a bare item names every type");
        let mut med = json!({"resourceType": "MedicationRequest", "id": "m", "meta": {"versionId": "1"},
            "status": "active", "intent": "order", "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/p"}, "note": [{"text": "n"}], "statusReason": {"text": "r"}});
        Subset::for_type(&s, "MedicationRequest").unwrap().apply(&mut med);
        assert_eq!(med, json!({"resourceType": "MedicationRequest", "id": "m",
            "meta": {"versionId": "1", "tag": [{"system": SUBSETTED_SYSTEM, "code": "SUBSETTED"}]},
            "status": "active", "intent": "order", "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/p"}}));
        let mut patient = json!({"resourceType": "Patient", "id": "p", "gender": "male", "_gender": {"extension": []}, "name": []});
        Subset::for_type(&s, "Patient").unwrap().apply(&mut patient);
        let mut keys: Vec<&String> = patient.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["_gender", "gender", "id", "meta", "resourceType"]);
    }
}
