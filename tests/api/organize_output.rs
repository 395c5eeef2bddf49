//! `organizeOutputBy=Patient` on the Synthea sample: files of blocks, each a `Parameters` header
//! naming a patient followed by exactly that patient's compartment resources (worked out from
//! the fixture files); blocks split across files only when alone larger than the size limit,
//! with the header repeated; the manifest says `outputOrganizedBy` and has no `type`.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    export_levels::{expected_for_group, SYNTHEA_GROUP},
    helpers::{assert_outcome, backend_tests, fixture_resources, multiset, spawn_app, spawn_app_with, without_server_meta, AppOptions, TestApp},
};

/// A block as read back: the patient its header names (None: the trailing block without a
/// header), its resources, and the files (by position) it was found in.
struct Block {
    patient: Option<String>,
    resources: Vec<Value>,
    files: BTreeSet<usize>,
    /// Header once plus every resource line, in bytes with newlines.
    bytes: usize,
}

fn header_patient(value: &Value) -> Option<String> {
    if value["resourceType"] != "Parameters" {
        return None;
    }
    let parameters = value["parameter"].as_array().unwrap();
    assert_eq!(parameters.len(), 1, "{value}");
    assert_eq!(parameters[0]["name"], "header");
    let reference = parameters[0]["valueReference"]["reference"].as_str().unwrap();
    Some(reference.strip_prefix("Patient/").expect("the header names a Patient").to_owned())
}

/// Downloads every output file of an organized manifest, checking the manifest's shape, and
/// reads the blocks back. A header that repeats the previous block's patient at the top of the
/// next file continues that block.
async fn read_blocks(app: &TestApp, manifest: &Value) -> (Vec<Block>, Vec<usize>) {
    assert_eq!(manifest["outputOrganizedBy"], "Patient");
    let mut blocks: Vec<Block> = Vec::new();
    let mut file_bytes = Vec::new();
    for (n, entry) in manifest["output"].as_array().unwrap().iter().enumerate() {
        assert!(entry.get("type").is_none(), "organized output entries have no type: {entry}");
        assert!(entry["url"].as_str().unwrap().ends_with(&format!("Patient-organized-{}.ndjson", n + 1)));
        let response = app.client.get(entry["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        file_bytes.push(text.len());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(entry["count"].as_u64().unwrap() as usize, lines.len(), "count of {entry}");
        for (i, line) in lines.iter().enumerate() {
            let value: Value = serde_json::from_str(line).unwrap();
            let size = line.len() + 1;
            match header_patient(&value) {
                Some(patient) => {
                    let continues = i == 0 && blocks.last().is_some_and(|b| b.patient.as_deref() == Some(&patient));
                    if continues {
                        blocks.last_mut().unwrap().files.insert(n);
                    } else {
                        assert!(blocks.iter().all(|b| b.patient.as_deref() != Some(&patient)), "one block for Patient/{patient}");
                        blocks.push(Block { patient: Some(patient), resources: Vec::new(), files: BTreeSet::from([n]), bytes: size });
                    }
                }
                None => {
                    // A file that starts without a header holds the headerless block (or more of it).
                    if i == 0 && blocks.last().is_none_or(|b| b.patient.is_some()) {
                        blocks.push(Block { patient: None, resources: Vec::new(), files: BTreeSet::new(), bytes: 0 });
                    }
                    let block = blocks.last_mut().expect("a file starts with a header or the headerless block");
                    block.files.insert(n);
                    block.bytes += size;
                    block.resources.push(without_server_meta(value));
                }
            }
        }
    }
    (blocks, file_bytes)
}

/// Each patient's compartment resources (the Patient itself, and whatever references it), by
/// one pass over the fixture; Device references patients but is in no compartment.
fn per_patient(loaded: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Vec<&Value>> {
    fn patients_in(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::String(s) => {
                if let Some(id) = s.strip_prefix("Patient/") {
                    found.insert(id.to_owned());
                }
            }
            Value::Array(items) => items.iter().for_each(|v| patients_in(v, found)),
            Value::Object(map) => map.values().for_each(|v| patients_in(v, found)),
            _ => {}
        }
    }
    let mut by_patient: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for (t, resources) in loaded.iter().filter(|(t, _)| t.as_str() != "Device") {
        for r in resources {
            let mut patients = BTreeSet::new();
            patients_in(r, &mut patients);
            if t == "Patient" {
                patients.insert(r["id"].as_str().unwrap().to_owned());
            }
            for p in patients {
                by_patient.entry(p).or_default().push(r);
            }
        }
    }
    by_patient
}

/// Every patient has exactly one block holding exactly its resources.
fn assert_patient_blocks(blocks: &[Block], expected: &BTreeMap<String, Vec<&Value>>) {
    let patients: Vec<&str> = blocks.iter().filter_map(|b| b.patient.as_deref()).collect();
    assert_eq!(patients.len(), expected.len(), "a block per patient");
    for block in blocks.iter().filter(|b| b.patient.is_some()) {
        let patient = block.patient.as_ref().unwrap();
        assert_eq!(multiset(&block.resources), multiset(expected[patient].iter().copied()), "the block of Patient/{patient}");
    }
}

backend_tests! {
    async fn patient_level_blocks_hold_each_patients_compartment(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        let manifest = app.wait_for_manifest(&app.kick_off("/Patient/$export?organizeOutputBy=Patient").await).await;
        assert_eq!(manifest["error"], json!([]));
        let (blocks, _) = read_blocks(&app, &manifest).await;
        assert!(blocks.iter().all(|b| b.patient.is_some()), "Patient level has no headerless block");
        let expected = per_patient(&loaded);
        assert_eq!(expected.len(), 100);
        assert_patient_blocks(&blocks, &expected);
        assert!(blocks.iter().all(|b| b.resources[0]["resourceType"] == "Patient"), "each block opens with its Patient");

        // Other parameters apply inside the blocks: `_type` and `_elements`.
        let manifest = app
            .wait_for_manifest(&app.kick_off("/Patient/$export?organizeOutputBy=Patient&_type=Patient,Condition&_elements=Condition.code").await)
            .await;
        let (blocks, _) = read_blocks(&app, &manifest).await;
        assert_eq!(blocks.len(), 100);
        for block in &blocks {
            let patient = block.patient.as_ref().unwrap();
            let types: BTreeSet<&str> = block.resources.iter().map(|r| r["resourceType"].as_str().unwrap()).collect();
            assert!(types.contains("Patient") && types.iter().all(|t| ["Patient", "Condition"].contains(t)), "{types:?}");
            let conditions = block.resources.iter().filter(|r| r["resourceType"] == "Condition");
            let expected = expected[patient].iter().filter(|r| r["resourceType"] == "Condition").count();
            assert_eq!(conditions.clone().count(), expected, "Patient/{patient}");
            for condition in conditions {
                assert!(condition.get("code").is_some() && condition.get("onsetDateTime").is_none(), "{condition}");
                assert_eq!(condition["meta"]["tag"][0]["code"], "SUBSETTED");
            }
        }
    }

    async fn group_blocks_split_only_when_alone_too_big(backend: Backend) {
        const LIMIT: usize = 400_000;
        let app = spawn_app_with(backend, AppOptions { max_file_bytes: LIMIT as u64, ..Default::default() }).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/Group/{SYNTHEA_GROUP}/$export?organizeOutputBy=Patient")).await).await;
        let (blocks, file_bytes) = read_blocks(&app, &manifest).await;
        assert_patient_blocks(&blocks, &per_patient(&loaded));

        // The referenced Organizations and Practitioners, once each, in the last block, without a header.
        let trailing: Vec<&Block> = blocks.iter().filter(|b| b.patient.is_none()).collect();
        assert_eq!(trailing.len(), 1);
        assert!(blocks.last().unwrap().patient.is_none());
        let all_patients: BTreeSet<String> = loaded["Patient"].iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
        let expected = expected_for_group(&loaded, &all_patients);
        let mut referenced = expected["Organization"].clone();
        referenced.extend(expected["Practitioner"].iter().cloned());
        referenced.sort();
        assert_eq!(multiset(&trailing[0].resources), referenced);

        // Files keep to the limit; a block is in two files only when it alone passes the limit.
        assert!(file_bytes.iter().all(|b| *b <= LIMIT), "{file_bytes:?}");
        let split: Vec<&Block> = blocks.iter().filter(|b| b.files.len() > 1).collect();
        for block in &blocks {
            assert_eq!(block.files.len() > 1, block.bytes > LIMIT, "{:?}: {} bytes in files {:?}", block.patient, block.bytes, block.files);
        }
        // Both cases happen here: blocks too big (so headers repeat), and files of several blocks.
        assert!(!split.is_empty(), "some block passes {LIMIT} bytes");
        let mut blocks_per_file: BTreeMap<usize, usize> = BTreeMap::new();
        blocks.iter().flat_map(|b| b.files.iter()).for_each(|f| *blocks_per_file.entry(*f).or_default() += 1);
        assert!(blocks_per_file.values().any(|n| *n > 1), "some file holds several blocks");
    }

    async fn patient_since_and_type_filter_apply_inside_the_blocks(backend: Backend) {
        let app = spawn_app(backend).await;
        for id in ["p1", "p2", "p3"] {
            assert_eq!(app.put(&json!({"resourceType": "Patient", "id": id})).await.status(), 201);
            for (n, status) in [(1, "final"), (2, "preliminary")] {
                let obs = json!({"resourceType": "Observation", "id": format!("{id}-o{n}"), "status": status,
                                 "code": {"text": "x"}, "subject": {"reference": format!("Patient/{id}")}});
                assert_eq!(app.put(&obs).await.status(), 201);
            }
        }
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/p3"}},
            {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
            {"name": "organizeOutputBy", "valueString": "Patient"},
            {"name": "_typeFilter", "valueString": "Observation?status=final"}]});
        let manifest = app.wait_for_manifest(&app.kick_off_post("/Patient/$export", &body, "respond-async").await).await;
        let (blocks, _) = read_blocks(&app, &manifest).await;
        let ids = |b: &Block| b.resources.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        let summary: Vec<(Option<String>, Vec<String>)> = blocks.iter().map(|b| (b.patient.clone(), ids(b))).collect();
        assert_eq!(summary, [(Some("p1".into()), vec!["p1".into(), "p1-o1".into()]), (Some("p3".into()), vec!["p3".into(), "p3-o1".into()])]);

        // `_since`: only what changed, behind its patient's header; deletions in `deleted` files.
        let since = manifest["transactionTime"].as_str().unwrap().replace('+', "%2B");
        let changed = json!({"resourceType": "Observation", "id": "p2-o1", "status": "amended", "code": {"text": "y"},
                             "subject": {"reference": "Patient/p2"}});
        assert_eq!(app.put(&changed).await.status(), 200);
        assert_eq!(app.client.delete(app.url("/Observation/p1-o2")).send().await.unwrap().status(), 204);
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/Patient/$export?organizeOutputBy=Patient&_since={since}")).await).await;
        let (blocks, _) = read_blocks(&app, &manifest).await;
        let summary: Vec<(Option<String>, Vec<String>)> = blocks.iter().map(|b| (b.patient.clone(), ids(b))).collect();
        assert_eq!(summary, [(Some("p2".into()), vec!["p2-o1".into()])], "a patient with nothing changed has no block");
        let deleted = manifest["deleted"].as_array().unwrap();
        assert_eq!(deleted.len(), 1);
        let bundles = app.download(&deleted[0]).await;
        assert_eq!(bundles.len(), 1);
        assert_eq!(bundles[0]["entry"][0]["request"]["url"], "Observation/p1-o2");
    }

    async fn organize_output_by_is_refused_where_it_does_not_apply(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_outcome(app.kick_off_raw("/$export?organizeOutputBy=Patient").await, StatusCode::BAD_REQUEST, "organizeOutputBy").await;
        assert_outcome(app.kick_off_raw("/Patient/$export?organizeOutputBy=Practitioner").await, StatusCode::BAD_REQUEST, "only Patient").await;
    }
}
