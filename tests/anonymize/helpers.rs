//! Loading the fixtures, running the engine on one resource, and comparing with a diff that names
//! the paths that differ (a whole-resource `assert_eq!` is unreadable past a few fields).

use std::path::PathBuf;

use bulkfhir::anonymize::{ConfigError, Engine, ProcessingError, Scope};
use serde_json::{Value, json};

pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anonymize").join(relative)
}

pub fn read_json(relative: &str) -> Value {
    let path = fixture_path(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference engine's R4 sample configuration, unchanged but for the keys it leaves empty
/// (empty keys mean random ones, and the expected outputs were made with "123").
pub fn sample_config_with_keys() -> Value {
    let mut config = read_json("configuration-sample.json");
    config["parameters"]["dateShiftKey"] = json!("123");
    config["parameters"]["cryptoHashKey"] = json!("123");
    config
}

pub fn config(name: &str) -> Value {
    if name == "sample" {
        return sample_config_with_keys();
    }
    read_json(&format!("configs/{name}.json"))
}

pub fn engine(config: &Value) -> Engine {
    match Engine::from_json(config.to_string().as_bytes()) {
        Ok(engine) => engine,
        Err(e) => panic!("the configuration is refused: {e}\n{}", serde_json::to_string_pretty(config).unwrap()),
    }
}

pub fn config_error(config: &Value) -> ConfigError {
    config_error_of_bytes(config.to_string().as_bytes())
}

pub fn config_error_of_bytes(bytes: &[u8]) -> ConfigError {
    match Engine::from_json(bytes) {
        Ok(_) => panic!("the configuration is accepted:\n{}", String::from_utf8_lossy(bytes)),
        Err(e) => e,
    }
}

/// De-identifies `resource` with resource scope (the dates' key prefix is the resource id).
pub fn anonymize(engine: &Engine, mut resource: Value) -> Result<Value, ProcessingError> {
    engine.apply(&mut resource, &Scope::default())?;
    Ok(resource)
}

pub fn anonymized(engine: &Engine, resource: Value) -> Value {
    anonymize(engine, resource).unwrap_or_else(|e| panic!("the resource is refused: {e}"))
}

/// One reference case: `inputs/INPUT.json` under `configs/CONFIG.json` gives exactly
/// `expected/INPUT--CONFIG.json`.
pub fn assert_case(input: &str, config_name: &str) {
    let engine = engine(&config(config_name));
    let actual = anonymized(&engine, read_json(&format!("inputs/{input}.json")));
    let expected = read_json(&format!("expected/{input}--{config_name}.json"));
    assert_same(&actual, &expected);
}

/// Exact JSON equality (object key order aside), reported as the list of differing paths.
pub fn assert_same(actual: &Value, expected: &Value) {
    if actual == expected {
        return;
    }
    let mut differences = Vec::new();
    diff("$", actual, expected, &mut differences);
    panic!(
        "the output differs from the reference's:\n{}\n--- actual:\n{}",
        differences.join("\n"),
        serde_json::to_string_pretty(actual).unwrap()
    );
}

fn diff(path: &str, actual: &Value, expected: &Value, out: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (key, value) in e {
                match a.get(key) {
                    Some(found) => diff(&format!("{path}.{key}"), found, value, out),
                    None => out.push(format!("  {path}.{key}: missing, expected {value}")),
                }
            }
            for (key, value) in a {
                if !e.contains_key(key) {
                    out.push(format!("  {path}.{key}: unexpected {value}"));
                }
            }
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => {
            for (i, (found, value)) in a.iter().zip(e).enumerate() {
                diff(&format!("{path}[{i}]"), found, value, out);
            }
        }
        _ if actual != expected => out.push(format!("  {path}: {actual}, expected {expected}")),
        _ => {}
    }
}

/// A one-resource configuration: these rules, these parameters.
pub fn rules(rules: Value, parameters: Value) -> Engine {
    engine(&json!({ "fhirVersion": "R4", "fhirPathRules": rules, "parameters": parameters }))
}

/// The security labels the reference engine adds to `meta.security`, in its order.
pub mod label {
    use serde_json::{Value, json};

    const V3: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

    pub fn redacted() -> Value {
        json!({ "system": V3, "code": "REDACTED", "display": "redacted" })
    }
    pub fn abstracted() -> Value {
        json!({ "system": V3, "code": "ABSTRED", "display": "abstracted" })
    }
    pub fn hashed() -> Value {
        json!({ "system": V3, "code": "CRYTOHASH", "display": "cryptographic hash function" })
    }
    pub fn masked() -> Value {
        json!({ "system": V3, "code": "MASKED", "display": "masked" })
    }
    pub fn perturbed() -> Value {
        json!({ "code": "PERTURBED", "display": "exact value is replaced with another exact value" })
    }
    pub fn substituted() -> Value {
        json!({ "code": "SUBSTITUTED", "display": "exact value is replaced with a predefined value" })
    }
    pub fn generalized() -> Value {
        json!({ "code": "GENERALIZED", "display": "exact value is replaced with a general value" })
    }

    pub fn meta(labels: &[Value]) -> Value {
        json!({ "security": labels })
    }
}

/// The error for a rule that cannot apply to `input`: whether the engine sees it in the
/// configuration or only on the resource is its choice (the reference finds it on the resource).
pub fn refusal(config: &Value, input: Value) -> String {
    match Engine::from_json(config.to_string().as_bytes()) {
        Err(e) => e.to_string(),
        Ok(engine) => match anonymize(&engine, input.clone()) {
            Err(e) => e.to_string(),
            Ok(output) => panic!("{config}\naccepted {input}\ngiving {output}"),
        },
    }
}
