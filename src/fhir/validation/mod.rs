//! Validation of what is stored: every element of a resource checked against its R4 definition
//! (`element_types`): primitives by the spec's expressions, complex types and backbone elements
//! recursed, choices resolved, arrays against cardinality, `_name` siblings, extensions and
//! nested resources (contained, Bundle entries, Parameters) included, unknown elements refused
//! unless the policy allows them.
//!
//! The walk is a serde visitor, so it runs over a parsed `serde_json::Value` (REST writes) and
//! over JSON text (the loader's fast path, which never builds the whole tree) alike.

mod primitives;
mod walk;

use serde::Deserialize;
use serde_json::{value::RawValue, Map, Value};

use super::{element_types::Graph, ResourceType};

/// How much of a resource is checked before it is stored (setting `validation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Every element must be an R4 element of its type with a valid value.
    #[default]
    Strict,
    /// As strict, but elements R4 does not define are stored unchecked.
    AllowUnknownElements,
    /// Nothing beyond the resource type and id is checked.
    Off,
}

/// What is wrong with a resource, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Invalid {
    /// The element, FHIRPath-like with indexes: `Observation.component[1].valueQuantity.value`.
    pub path: String,
    pub message: String,
    /// A bad shape (unknown element, array where one value goes, ...) rather than a bad value.
    pub structure: bool,
}

impl Validation {
    /// Checks a resource given as a parsed JSON object of type `resource_type`.
    pub fn check_object(self, resource_type: &ResourceType, body: &Map<String, Value>) -> Result<(), Invalid> {
        self.check(resource_type, body.iter().map(|(key, value)| (key.as_str(), value)))
    }

    /// Checks a resource given as its top-level elements in JSON text (the loader's fast path).
    /// A repeated element name is refused.
    pub fn check_raw_fields<'a>(
        self,
        resource_type: &ResourceType,
        fields: impl IntoIterator<Item = (&'a str, &'a RawValue)>,
    ) -> Result<(), Invalid> {
        self.check(resource_type, fields)
    }

    fn check<'a, V: walk::Input>(self, resource_type: &ResourceType, fields: impl IntoIterator<Item = (&'a str, V)>) -> Result<(), Invalid> {
        if self == Self::Off {
            return Ok(());
        }
        let graph = Graph::get();
        let root = graph.root(resource_type.as_str()).expect("every resource type has a definition");
        walk::check_resource(graph, root, self == Self::AllowUnknownElements, fields)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check_with(policy: Validation, value: Value) -> Result<(), String> {
        let Value::Object(body) = value else { panic!("an object") };
        let t = ResourceType::parse(body["resourceType"].as_str().unwrap()).unwrap();
        let by_value = policy.check_object(&t, &body).map_err(|e| e.to_string());
        // The same verdict from JSON text, as the loader checks it.
        let text: Vec<(String, String)> = body.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let raws: Vec<(&str, Box<serde_json::value::RawValue>)> =
            text.iter().map(|(k, v)| (k.as_str(), serde_json::value::RawValue::from_string(v.clone()).unwrap())).collect();
        let by_text = policy.check_raw_fields(&t, raws.iter().map(|(k, v)| (*k, v.as_ref()))).map_err(|e| e.to_string());
        assert_eq!(by_value, by_text, "value and text walks differ");
        by_value
    }

    fn check(value: Value) -> Result<(), String> {
        check_with(Validation::Strict, value)
    }

    #[test]
    fn a_bad_primitive_is_named_by_its_path() {
        assert_eq!(
            check(json!({"resourceType":"Observation","id":"x","status":"final","code":{"text":"t"},
                "effectiveDateTime":"2020-01-01Té12345"})),
            Err("Observation.effectiveDateTime: '2020-01-01Té12345' is not a valid dateTime".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","name":[{"given":["a"]},{"given":["b","c\u{0}"]}]})),
            Err(r"Patient.name[1].given[1]: 'c\0' is not a valid string".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Observation","component":[{"code":{},"valueQuantity":{"value":"1"}}]})),
            Err("Observation.component[0].valueQuantity.value: decimal must be a JSON number, found a string".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","birthDate":"1970-01-01","_birthDate":{"extension":[{"url":"u","valueBoolean":1}]}})),
            Err("Patient._birthDate.extension[0].valueBoolean: boolean must be a JSON boolean, found a number".into())
        );
    }

    #[test]
    fn shapes_follow_the_cardinality() {
        assert_eq!(
            check(json!({"resourceType":"Patient","name":{"family":"x"}})),
            Err("Patient.name: must be an array (HumanName, max *)".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","gender":["male"]})),
            Err("Patient.gender: must be a single value, not an array (code, max 1)".into())
        );
        assert_eq!(check(json!({"resourceType":"Patient","name":[[{"family":"x"}]]})), Err("Patient.name[0]: an array inside an array".into()));
        assert_eq!(
            check(json!({"resourceType":"Patient","gender":null})),
            Err("Patient.gender: null is not a value".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","name":[{"family":{"x":1}}]})),
            Err("Patient.name[0].family: string must be a JSON string, found an object".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","maritalStatus":"M"})),
            Err("Patient.maritalStatus: CodeableConcept must be a JSON object, found a string".into())
        );
        // Nulls line primitive arrays up with their `_name` siblings.
        assert_eq!(check(json!({"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"id":"b"}]}]})), Ok(()));
    }

    #[test]
    fn unknown_elements_are_refused_unless_allowed() {
        let body = json!({"resourceType":"Patient","name":[{"family":"x","nickname":"y"}]});
        assert_eq!(check(body.clone()), Err("Patient.name[0].nickname: unknown element (not in the R4 definition of HumanName)".into()));
        assert_eq!(check_with(Validation::AllowUnknownElements, body.clone()), Ok(()));
        assert_eq!(check_with(Validation::Off, body), Ok(()));
        // Known elements are still checked when unknown ones are allowed.
        let body = json!({"resourceType":"Patient","extra":1,"birthDate":"1970-13-01"});
        assert_eq!(check_with(Validation::AllowUnknownElements, body), Err("Patient.birthDate: '1970-13-01' is not a valid date".into()));
        assert_eq!(
            check(json!({"resourceType":"Observation","valueBogus":"x"})),
            Err("Observation.valueBogus: unknown element (not in the R4 definition of Observation)".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Observation","_status":{"id":"a","foo":1}})),
            Err("Observation._status.foo: unknown element (not in the R4 definition of Element)".into())
        );
    }

    #[test]
    fn a_choice_takes_one_type() {
        assert_eq!(
            check(json!({"resourceType":"Observation","valueString":"a","valueBoolean":true})),
            Err("Observation.valueBoolean: Observation.value[x] takes one value of one type".into())
        );
        assert_eq!(check(json!({"resourceType":"Observation","valueString":"a","_valueString":{"id":"i"}})), Ok(()));
    }

    #[test]
    fn nested_resources_are_checked_as_their_own_type() {
        let contained = json!({"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o","name":"n"},
            {"id":"p","resourceType":"Practitioner","birthDate":"x"}]});
        assert_eq!(check(contained), Err("Patient.contained[1].birthDate: 'x' is not a valid date".into()));
        assert_eq!(
            check(json!({"resourceType":"Patient","contained":[{"resourceType":"Nope"}]})),
            Err("Patient.contained[0].resourceType: 'Nope' is not an R4 resource type".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","contained":[{"id":"x"}]})),
            Err("Patient.contained[0]: a resource needs a resourceType".into())
        );
        let bundle = json!({"resourceType":"Bundle","type":"collection","entry":[{"resource":
            {"resourceType":"Parameters","parameter":[{"name":"p","resource":{"resourceType":"Patient","active":"yes"}}]}}]});
        assert_eq!(
            check(bundle),
            Err("Bundle.entry[0].resource.parameter[0].resource.active: boolean must be a JSON boolean, found a string".into())
        );
        assert_eq!(
            check(json!({"resourceType":"Patient","resourceType2":"x"})),
            Err("Patient.resourceType2: unknown element (not in the R4 definition of Patient)".into())
        );
    }

    #[test]
    fn a_repeated_element_in_json_text_is_refused() {
        let t = ResourceType::parse("Patient").unwrap();
        let name = serde_json::value::RawValue::from_string(r#"[{"family":"a","family":"b"}]"#.into()).unwrap();
        let err = Validation::Strict.check_raw_fields(&t, [("name", name.as_ref())]).unwrap_err();
        assert_eq!(err.to_string(), "Patient.name[0].family: is given twice");
    }

    #[test]
    fn the_synthea_sample_is_valid() {
        use std::io::{BufRead, BufReader};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthea-r4-100");
        let mut checked = 0;
        for path in std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()) {
            if !path.to_string_lossy().ends_with(".ndjson.gz") {
                continue;
            }
            let file = std::fs::File::open(&path).unwrap();
            for line in BufReader::new(flate2::read::MultiGzDecoder::new(file)).lines() {
                let value: Value = serde_json::from_str(&line.unwrap()).unwrap();
                check(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked += 1;
            }
        }
        assert!(checked > 30_000, "{checked} resources");
    }
}
