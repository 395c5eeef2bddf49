//! Properties of the reference's R4 sample configuration (HIPAA Safe Harbor) over the Synthea
//! sample (tests/fixtures/synthea-r4-100, 38,473 resources), de-identified once and shared by the
//! tests: no identifying value or original id survives, references still resolve, and every date
//! of a resource moves by the one amount its (hashed) id and the key give.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use chrono::NaiveDate;
use serde_json::Value;

use crate::helpers::{engine, sample_config_with_keys};

const KEY: &str = "123";

struct Run {
    inputs: Vec<Value>,
    outputs: Vec<Value>,
}

fn synthea() -> Vec<Value> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthea-r4-100");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.retain(|p| p.to_string_lossy().ends_with(".ndjson.gz"));
    paths.sort();
    let mut resources = Vec::new();
    for path in paths {
        let reader = BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()));
        for line in reader.lines() {
            resources.push(serde_json::from_str(&line.unwrap()).unwrap());
        }
    }
    assert_eq!(resources.len(), 38_473, "the Synthea fixture");
    resources
}

/// The whole sample de-identified once, on all cores.
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let engine = engine(&sample_config_with_keys());
        let inputs = synthea();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = inputs.len().div_ceil(threads);
        let outputs = std::thread::scope(|scope| {
            let handles: Vec<_> = inputs
                .chunks(chunk)
                .map(|part| {
                    let engine = &engine;
                    scope.spawn(move || {
                        part.iter()
                            .map(|r| {
                                crate::helpers::anonymize(engine, r.clone())
                                    .unwrap_or_else(|e| panic!("{}/{} is refused: {e}", r["resourceType"], r["id"]))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        Run { inputs, outputs }
    })
}

fn hash(text: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, KEY.as_bytes());
    hmac::sign(&key, text.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The reference's DateTimeUtility offset: prefix and key folded base 131 modulo 101, less 50.
fn reference_offset(prefix: &str) -> i64 {
    let folded = format!("{prefix}{KEY}").bytes().fold(0i64, |acc, b| (acc * 131 + i64::from(b)) % 101);
    folded - 50
}

fn strings_in<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings_in(v, out)),
        _ => {}
    }
}

/// Every value found under `field` anywhere in `value` (resources contained or not).
fn under<'a>(value: &'a Value, field: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| under(v, field, out)),
        Value::Object(map) => {
            for (key, child) in map {
                if key == field {
                    out.push(child);
                }
                under(child, field, out);
            }
        }
        _ => {}
    }
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// What the sample configuration keeps: an Organization's identifiers, telecom and address by its
/// rules, its name by having none (Synthea gives each Organization its own id as identifier
/// value, and names like "VA Boston Healthcare System").
fn kept_by_the_configuration(inputs: &[Value]) -> HashSet<String> {
    let mut kept = HashSet::new();
    for resource in inputs.iter().filter(|r| r["resourceType"] == "Organization") {
        for field in ["identifier", "telecom", "address", "name"] {
            let mut strings = Vec::new();
            strings_in(&resource[field], &mut strings);
            kept.extend(strings.into_iter().map(str::to_owned));
        }
    }
    kept
}

/// The identifying strings of the input, by kind: identifier values, human names, addresses but
/// their state and country (kept by the configuration), telecom values, resource ids.
fn identifying(inputs: &[Value]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut found: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for resource in inputs {
        let mut values = Vec::new();
        under(resource, "identifier", &mut values);
        for identifier in values.iter().flat_map(|v| as_list(v)) {
            if let Some(value) = identifier["value"].as_str() {
                found.entry("identifier").or_default().insert(value.to_owned());
            }
        }
        if matches!(resource["resourceType"].as_str(), Some("Patient" | "Practitioner" | "RelatedPerson" | "Person")) {
            let mut names = Vec::new();
            under(resource, "name", &mut names);
            for name in names.iter().flat_map(|v| as_list(v)) {
                let mut parts = Vec::new();
                strings_in(&name["family"], &mut parts);
                strings_in(&name["given"], &mut parts);
                strings_in(&name["text"], &mut parts);
                found.entry("name").or_default().extend(parts.into_iter().map(str::to_owned));
            }
        }
        let mut addresses = Vec::new();
        under(resource, "address", &mut addresses);
        for address in addresses.iter().flat_map(|v| as_list(v)) {
            let mut parts = Vec::new();
            for field in ["line", "city", "district", "postalCode", "text"] {
                strings_in(&address[field], &mut parts);
            }
            found.entry("address").or_default().extend(parts.into_iter().map(str::to_owned));
        }
        let mut telecoms = Vec::new();
        under(resource, "telecom", &mut telecoms);
        for telecom in telecoms.iter().flat_map(|v| as_list(v)) {
            if let Some(value) = telecom["value"].as_str() {
                found.entry("telecom").or_default().insert(value.to_owned());
            }
        }
        if let Some(id) = resource["id"].as_str() {
            found.entry("id").or_default().insert(id.to_owned());
        }
    }
    found
}

/// The output's strings, hashes masked: 64 hex digits hold any short run of digits by chance.
fn searchable_text(outputs: &[Value]) -> String {
    let hashes = regex::Regex::new("[0-9a-f]{64}").unwrap();
    let mut strings = Vec::new();
    outputs.iter().for_each(|r| strings_in(r, &mut strings));
    strings.iter().map(|s| hashes.replace_all(s, "#")).collect::<Vec<_>>().join("\n")
}

#[test]
fn no_identifier_name_address_telecom_or_original_id_survives_the_sample_configuration() {
    let run = run();
    let kept = kept_by_the_configuration(&run.inputs);
    let text = searchable_text(&run.outputs);
    // Very short values (a one-digit house number) occur by chance in any text.
    let mut originals: Vec<(&'static str, String)> = Vec::new();
    let identifying = identifying(&run.inputs);
    for kind in ["identifier", "name", "address", "telecom", "id"] {
        assert!(identifying.get(kind).is_some_and(|v| v.len() >= 50), "the sample has {kind} values");
    }
    for (kind, values) in identifying {
        originals.extend(values.into_iter().filter(|v| v.chars().count() >= 4 && !kept.contains(v)).map(|v| (kind, v)));
    }
    let searcher = aho_corasick::AhoCorasick::new(originals.iter().map(|(_, v)| v)).unwrap();
    let mut found: BTreeSet<usize> = BTreeSet::new();
    for hit in searcher.find_overlapping_iter(&text) {
        found.insert(hit.pattern().as_usize());
    }
    // A patient's postal code may be part of an Organization's ZIP+4, which the configuration keeps.
    let kept_text = kept.iter().map(String::as_str).collect::<Vec<_>>().join("\n");
    for hit in searcher.find_overlapping_iter(&kept_text) {
        found.remove(&hit.pattern().as_usize());
    }
    let survivors: Vec<String> = found.iter().map(|&i| format!("{}: {:?}", originals[i].0, originals[i].1)).collect();
    assert!(survivors.is_empty(), "{} identifying values survive, e.g.:\n{}", survivors.len(), survivors[..survivors.len().min(20)].join("\n"));
}

#[test]
fn every_resource_id_becomes_its_keyed_hash() {
    let run = run();
    for (input, output) in run.inputs.iter().zip(&run.outputs) {
        let id = input["id"].as_str().unwrap();
        assert_eq!(output["id"].as_str(), Some(hash(id).as_str()), "{}/{id}", input["resourceType"]);
    }
}

fn ids_by_type(resources: &[Value]) -> HashSet<(String, String)> {
    resources
        .iter()
        .filter_map(|r| Some((r["resourceType"].as_str()?.to_owned(), r["id"].as_str()?.to_owned())))
        .collect()
}

fn type_and_id(reference: &str) -> Option<(String, String)> {
    let (kind, id) = reference.split_once('/')?;
    (kind.starts_with(|c: char| c.is_ascii_uppercase()) && !id.contains('/')).then(|| (kind.to_owned(), id.to_owned()))
}

fn references(resources: &[Value]) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for resource in resources {
        let mut found = Vec::new();
        under(resource, "reference", &mut found);
        all.extend(found.iter().filter_map(|r| r.as_str()).filter_map(type_and_id));
    }
    all
}

#[test]
fn every_type_and_id_reference_points_at_a_resource_with_that_hashed_id() {
    // Some references go with what holds them (`Claim.supportingInfo.value` is redacted); those
    // that stay must resolve, unless they pointed outside the sample in the first place.
    let run = run();
    let input_ids = ids_by_type(&run.inputs);
    let outside: HashSet<(String, String)> =
        references(&run.inputs).into_iter().filter(|r| !input_ids.contains(r)).map(|(kind, id)| (kind, hash(&id))).collect();
    let output_ids = ids_by_type(&run.outputs);
    let output_references = references(&run.outputs);
    let broken: Vec<_> = output_references.iter().filter(|r| !output_ids.contains(*r) && !outside.contains(*r)).collect();
    assert!(broken.is_empty(), "{} references resolve to nothing, e.g. {:?}", broken.len(), &broken[..broken.len().min(10)]);
    let resolved = output_references.iter().filter(|r| output_ids.contains(*r)).count();
    assert!(resolved > 100_000, "the sample keeps its references: {resolved} resolve");
}

#[test]
fn local_references_still_point_at_their_contained_resources() {
    let run = run();
    let mut checked = 0;
    for output in &run.outputs {
        let contained: HashSet<&str> =
            output["contained"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect();
        let mut references = Vec::new();
        under(output, "reference", &mut references);
        for local in references.iter().filter_map(|r| r.as_str()).filter_map(|r| r.strip_prefix('#')) {
            assert!(contained.contains(local), "#{local} in {}/{} has no contained resource", output["resourceType"], output["id"]);
            checked += 1;
        }
    }
    assert!(checked > 1000, "the sample's claims have local references: {checked}");
}

/// The day moves between each full date of `input` and the one at the same place in `output`;
/// places are only compared where every array on the way kept its length.
fn date_moves(input: &Value, output: &Value, path: &str, out: &mut Vec<(String, i64)>) {
    match (input, output) {
        (Value::String(before), Value::String(after)) => {
            if let (Some(b), Some(a)) = (full_date(before), full_date(after)) {
                out.push((format!("{path}: {before} -> {after}"), (a - b).num_days()));
            }
        }
        (Value::Array(before), Value::Array(after)) if before.len() == after.len() => {
            for (i, (b, a)) in before.iter().zip(after).enumerate() {
                date_moves(b, a, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Object(before), Value::Object(after)) => {
            for (key, b) in before {
                if let Some(a) = after.get(key) {
                    date_moves(b, a, &format!("{path}.{key}"), out);
                }
            }
        }
        _ => {}
    }
}

fn full_date(text: &str) -> Option<NaiveDate> {
    let date = text.get(..10)?;
    if text.len() > 10 && !text[10..].starts_with('T') {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

#[test]
fn every_date_of_a_resource_moves_by_the_same_number_of_days() {
    let run = run();
    let mut resources_with_dates = 0;
    for (input, output) in run.inputs.iter().zip(&run.outputs) {
        let mut moves = Vec::new();
        date_moves(input, output, "", &mut moves);
        let Some((_, first)) = moves.first() else { continue };
        resources_with_dates += 1;
        let odd: Vec<_> = moves.iter().filter(|(_, days)| days != first).collect();
        assert!(odd.is_empty(), "{}/{}: moves {first} days but {odd:?}", input["resourceType"], input["id"]);
        assert!((-50..=50).contains(first), "{}/{}: {first} days", input["resourceType"], input["id"]);
    }
    assert!(resources_with_dates > 30_000, "{resources_with_dates} resources with shifted dates");
}

#[test]
fn the_shift_is_the_one_the_reference_derives_from_the_hashed_id_and_the_key() {
    // The sample hashes `Resource.id` before its date rules, so the shift is keyed by the hash.
    let run = run();
    for (input, output) in run.inputs.iter().zip(&run.outputs) {
        let mut moves = Vec::new();
        date_moves(input, output, "", &mut moves);
        let expected = reference_offset(&hash(input["id"].as_str().unwrap()));
        if let Some((place, days)) = moves.iter().find(|(_, days)| *days != expected) {
            panic!("{}/{}: {place} moves {days} days, the reference {expected}", input["resourceType"], input["id"]);
        }
    }
}

#[test]
fn the_reference_offset_is_reproduced_by_the_test() {
    // Figures from the reference's own tests: "example" + "123" is +41 days, "dummy" alone -21.
    assert_eq!(reference_offset("example"), 41);
    let dummy = "dummy".bytes().fold(0i64, |acc, b| (acc * 131 + i64::from(b)) % 101) - 50;
    assert_eq!(dummy, -21);
}
