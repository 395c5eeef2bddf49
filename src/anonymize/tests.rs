//! The engine end to end on small resources: rule order, lookups, nested resources, labels.

use serde_json::{json, Value};

use super::{Engine, Scope};

fn engine(config: Value) -> Engine {
    Engine::from_json(config.to_string().as_bytes()).unwrap()
}

fn run(engine: &Engine, mut resource: Value) -> Value {
    engine.apply(&mut resource, &Scope::default()).unwrap();
    resource
}

#[test]
fn first_rule_decides_and_complex_redaction_removes() {
    let e = engine(json!({"fhirVersion": "R4", "fhirPathRules": [
        {"path": "nodesByType('HumanName').use", "method": "keep"},
        {"path": "Patient.name", "method": "redact"},
        {"path": "Patient.gender", "method": "keep"},
        {"path": "Resource", "method": "redact"}
    ]}));
    let out = run(&e, json!({"resourceType": "Patient", "id": "p1", "gender": "male",
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter"]}], "active": true}));
    assert_eq!(out, json!({"resourceType": "Patient", "gender": "male", "name": [{"use": "official"}],
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED", "display": "redacted"}]}}));
}

/// The reference engine's sample configuration over the Synthea sample, timed (run in release:
/// `ANONYMIZE_CONFIG=... SYNTHEA_DIR=... cargo test --release --lib anonymize::tests::sample_speed -- --ignored --nocapture`).
#[test]
#[ignore]
fn sample_speed() {
    let config = std::fs::read(std::env::var("ANONYMIZE_CONFIG").expect("ANONYMIZE_CONFIG names configuration-sample.json")).unwrap();
    let dir = std::env::var("SYNTHEA_DIR").unwrap_or_else(|_| "/work/shared/data/synthea-r4-100".into());
    let engine = Engine::from_json(&config).unwrap();
    let mut resources = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        resources.extend(text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    let scope = Scope::default();
    let start = std::time::Instant::now();
    let mut bytes = 0;
    for resource in &resources {
        let mut r = resource.clone();
        engine.apply(&mut r, &scope).unwrap();
        bytes += r.to_string().len();
    }
    let elapsed = start.elapsed();
    // Parse and serialize time alone, to tell the engine's share.
    let start = std::time::Instant::now();
    for resource in &resources {
        let r = resource.clone();
        bytes += r.to_string().len();
    }
    let baseline = start.elapsed();
    println!(
        "{} resources in {:.2?} ({:.0}/s; clone+serialize alone {:.2?}), {bytes} bytes",
        resources.len(),
        elapsed,
        resources.len() as f64 / elapsed.as_secs_f64(),
        baseline
    );
    for t in ["Patient", "Observation", "Claim"] {
        let mut r = resources.iter().find(|r| r["resourceType"] == t).unwrap().clone();
        engine.apply(&mut r, &scope).unwrap();
        println!("{r}");
    }
}
