//! The security labels the reference engine adds to `meta.security` of each resource it changed
//! (not of contained ones), one per kind of change.

use serde_json::{json, Map, Value};

pub const REDACT: u8 = 1;
pub const ABSTRACT: u8 = 2;
pub const CRYPTOHASH: u8 = 4;
pub const ENCRYPT: u8 = 8;
pub const PERTURB: u8 = 16;
pub const SUBSTITUTE: u8 = 32;
pub const GENERALIZE: u8 = 64;

const OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// (operation, system, code, display) in the order the reference engine adds them.
const LABELS: [(u8, Option<&str>, &str, &str); 7] = [
    (REDACT, Some(OBSERVATION_VALUE), "REDACTED", "redacted"),
    (ABSTRACT, Some(OBSERVATION_VALUE), "ABSTRED", "abstracted"),
    (CRYPTOHASH, Some(OBSERVATION_VALUE), "CRYTOHASH", "cryptographic hash function"),
    (ENCRYPT, Some(OBSERVATION_VALUE), "MASKED", "masked"),
    (PERTURB, None, "PERTURBED", "exact value is replaced with another exact value"),
    (SUBSTITUTE, None, "SUBSTITUTED", "exact value is replaced with a predefined value"),
    (GENERALIZE, None, "GENERALIZED", "exact value is replaced with a general value"),
];

fn coding(system: Option<&str>, code: &str, display: &str) -> Value {
    match system {
        Some(system) => json!({"system": system, "code": code, "display": display}),
        None => json!({"code": code, "display": display}),
    }
}

/// Writes the labels of `operations` as the JSON array `tag` gives a meta that has no
/// `security` yet: most resources, written without building a `Value`.
pub fn write_labels(out: &mut Vec<u8>, operations: u8) {
    out.push(b'[');
    let mut first = true;
    for (operation, system, code, display) in LABELS {
        if operations & operation == 0 {
            continue;
        }
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.push(b'{');
        if let Some(system) = system {
            out.extend_from_slice(b"\"system\":");
            write_str(out, system);
            out.push(b',');
        }
        out.extend_from_slice(b"\"code\":");
        write_str(out, code);
        out.extend_from_slice(b",\"display\":");
        write_str(out, display);
        out.push(b'}');
    }
    out.push(b']');
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Adds the labels of `operations` a resource's meta does not carry yet (compared by code).
pub fn tag(resource: &mut Map<String, Value>, operations: u8) {
    if operations == 0 {
        return;
    }
    let meta = resource.entry("meta").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(meta) = meta else { return };
    let security = meta.entry("security").or_insert_with(|| Value::Array(Vec::new()));
    if !security.is_array() {
        *security = Value::Array(Vec::new());
    }
    let Value::Array(security) = security else { return };
    for (operation, system, code, display) in LABELS {
        if operations & operation != 0
            && !security.iter().any(|c| c.get("code").and_then(Value::as_str).is_some_and(|c| c.eq_ignore_ascii_case(code)))
        {
            security.push(coding(system, code, display));
        }
    }
}

/// The resource the reference engine writes in place of one it failed on under
/// `processingErrors: skip`.
pub fn empty_resource(resource_type: &str) -> Value {
    json!({"resourceType": resource_type, "meta": {"security": [coding(Some(OBSERVATION_VALUE), "REDACTED", "redacted")]}})
}
