//! Property tests of the kick-off parsers (issue 17): query strings and `Parameters` bodies into
//! raw parameters, then into an `ExportRequest`. Whatever a client sends, the answer is a request
//! or an error naming a parameter it sent, never a panic, and nothing accepted can fail later
//! for a reason kick-off could have seen.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::{
    params::{ParamsError, RawParams},
    ExportError,
};
use crate::{
    fhir::{
        props::{any_json, config, messy_text},
        types::ResourceId,
        ResourceType,
    },
    model::request::{ExportLevel, ExportRequest, Handling},
};

const NAMES: [&str; 15] = [
    "_type", "_typeFilter", "_since", "_until", "_outputFormat", "_container", "_elements", "patient",
    "includeAssociatedData", "organizeOutputBy", "allowPartialManifests", "_till", "_count", "foo", "_type%00",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned), 1 => messy_text()]
}

/// Values near what each parameter takes, and garbage.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "Patient", "Observation,Patient", "Bogus", "Organization", "Provenance", "", " ",
            "2020-01-01", "2020-01-01T00:00:00Z", "2020-01-01T00:00:00+05:00", "0000-01-01T00:00:00Z", "2999-01-01",
            "2020-01-01T\u{e9}12345", "ndjson", "application/fhir+ndjson", "text/csv", "my-exports", "../etc",
            "Patient/p1", "Patient/", "Observation/o1", "id,meta", "Patient.name", "Bogus.id", "true", "yes",
            "LatestProvenanceResources", "RelevantProvenanceResources", "_custom",
            "Observation?date=ge2000", "Observation?date=2020-01-01T%C3%A912345", "Observation?code=a%2Cb",
            "Patient?gender=male", "Observation?patient.name=x", "Observation?_lastUpdated=gt0000-01-01",
            "Observation?code:missing=maybe", "Observation?value-quantity=ap5.4|http://unitsofmeasure.org|mmol/L",
            "Organization?name=x", "Observation?=", "?", "Observation?&&", "Observation?date",
        ])
        .prop_map(str::to_owned),
        messy_text(),
    ]
}

fn raw_params() -> impl Strategy<Value = RawParams> {
    prop::collection::vec((name(), value()), 0..6).prop_map(RawParams)
}

fn level() -> impl Strategy<Value = ExportLevel> {
    prop_oneof![
        Just(ExportLevel::System),
        Just(ExportLevel::Patient),
        Just(ExportLevel::Group { id: ResourceId::parse("g1").unwrap() }),
    ]
}

fn handling() -> impl Strategy<Value = Handling> {
    prop_oneof![Just(Handling::Strict), Just(Handling::Lenient)]
}

/// A query string: pairs encoded well or badly, with stray separators and escapes.
fn query_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        (name(), value()).prop_map(|(n, v)| format!("{}={}", utf8_percent_encode(&n, NON_ALPHANUMERIC), utf8_percent_encode(&v, NON_ALPHANUMERIC))),
        (name(), value()).prop_map(|(n, v)| format!("{n}={v}")),
        "[%0-9A-Fa-f=&,+]{0,8}",
        messy_text(),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|pieces| pieces.join("&"))
}

fn parameters_body() -> impl Strategy<Value = Value> {
    let value_key = prop::sample::select(vec!["valueString", "valueInstant", "valueBoolean", "valueReference", "valueCode", "value", "valueInteger"]);
    let entry = prop_oneof![
        4 => (name(), value_key, prop_oneof![value().prop_map(Value::String), any_json()]).prop_map(|(n, k, v)| json!({"name": n, k: v})),
        1 => (name(), value()).prop_map(|(n, v)| json!({"name": n, "valueReference": {"reference": v}})),
        1 => any_json(),
    ];
    prop_oneof![
        4 => prop::collection::vec(entry, 0..5).prop_map(|entries| json!({"resourceType": "Parameters", "parameter": entries})),
        1 => any_json(),
    ]
}

/// The parameters an error may name: those sent, or the merged list's.
fn names_the_sent_parameter(error: &ExportError, raw: &RawParams) -> bool {
    let sent = |n: &str| raw.0.iter().any(|(name, _)| name == n);
    match error {
        ExportError::InvalidParameter { name, .. } => sent(name),
        ExportError::UnknownParameter(name) | ExportError::UnsupportedParameter(name) => sent(name),
        ExportError::UnsupportedSearch(_) => sent("_typeFilter"),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any query string: pairs without control characters or oversized values, or an error.
    #[test]
    fn query_strings_parse_or_say_why(query in query_string()) {
        match RawParams::from_query(&query) {
            Ok(raw) => {
                for (name, value) in &raw.0 {
                    prop_assert!(!name.chars().chain(value.chars()).any(char::is_control));
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Single-valued parameters survive encoding: what a client encodes is what we read.
    #[test]
    fn encoded_single_values_round_trip(value in "[^\\p{Cc}]{0,20}") {
        let query = format!("_container={}&_since={}", utf8_percent_encode(&value, NON_ALPHANUMERIC), utf8_percent_encode(&value, NON_ALPHANUMERIC));
        let raw = RawParams::from_query(&query).unwrap();
        prop_assert_eq!(raw.values("_container").collect::<Vec<_>>(), vec![value.as_str()]);
        prop_assert_eq!(raw.values("_since").collect::<Vec<_>>(), vec![value.as_str()]);
    }

    /// Any POST body, alone and merged with a URL's parameters.
    #[test]
    fn parameters_bodies_parse_or_say_why(body in parameters_body(), query in query_string()) {
        match RawParams::from_parameters(&body) {
            Ok(raw) => {
                prop_assert!(raw.0.iter().all(|(n, v)| !n.chars().chain(v.chars()).any(char::is_control)));
                if let Ok(url) = RawParams::from_query(&query) {
                    match RawParams::merge(url, raw) {
                        Ok(_) | Err(ParamsError::Conflict { .. }) => {}
                        Err(e) => prop_assert!(!e.to_string().is_empty()),
                    }
                }
            }
            Err(ParamsError::NotParameters) => prop_assert!(body.get("resourceType") != Some(&json!("Parameters"))),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Any parameters at any level: a request, or an error naming a parameter that was sent.
    /// An accepted request holds only what kick-off checked: its filters compile, its instants
    /// are in order and not in the future, its types are covered by the level.
    #[test]
    fn kick_off_parameters_give_a_request_or_name_the_parameter(raw in raw_params(), level in level(), handling in handling()) {
        match ExportRequest::parse(level.clone(), "http://x/fhir/$export".into(), &raw, handling) {
            Ok(request) => {
                for t in ResourceType::all() {
                    prop_assert!(request.filters_for(&t).is_ok(), "{:?}", request.type_filters);
                }
                if let (Some(since), Some(until)) = (request.since, request.until) {
                    prop_assert!(since <= until);
                }
                prop_assert!(request.since.is_none_or(|s| s <= chrono::Utc::now()));
                for t in request.types.iter().flatten() {
                    prop_assert!(level.covers(t));
                }
                prop_assert!(serde_json::to_string(&request).is_ok());
            }
            Err(error) => prop_assert!(names_the_sent_parameter(&error, &raw), "{error} / {:?}", raw),
        }
    }
}
