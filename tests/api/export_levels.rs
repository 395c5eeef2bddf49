//! The Synthea sample exported at system, Patient and Group level: each type's exported lines
//! equal, as a multiset, what was loaded (or what the compartment selects): no loss, no
//! duplicate.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::helpers::{backend_tests, fixture_resources, multiset, spawn_app, without_server_meta};

pub(crate) const SYNTHEA_GROUP: &str = "d9f31445-f448-48c0-af57-295c005e07df";

pub(crate) fn exported_multisets(exported: BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Vec<String>> {
    exported
        .into_iter()
        .map(|(t, resources)| (t, multiset(&resources.into_iter().map(without_server_meta).collect::<Vec<_>>())))
        .collect()
}

/// Does any string in the resource reference one of these patients? Worked out from the raw
/// JSON, independently of the server's compartment table.
pub(crate) fn references_patient(value: &Value, patients: &BTreeSet<String>) -> bool {
    match value {
        Value::String(s) => s.strip_prefix("Patient/").is_some_and(|id| patients.contains(id)),
        Value::Array(items) => items.iter().any(|v| references_patient(v, patients)),
        Value::Object(map) => map.values().any(|v| references_patient(v, patients)),
        _ => false,
    }
}

/// Types of the sample that reference patients but that R4's Patient CompartmentDefinition lists
/// with no parameter, so they are in no patient's compartment.
const OUTSIDE_THE_COMPARTMENT: [&str; 1] = ["Device"];

/// The resources in these patients' compartments, by type.
fn in_compartments<'a>(loaded: &'a BTreeMap<String, Vec<Value>>, patients: &BTreeSet<String>) -> BTreeMap<String, Vec<&'a Value>> {
    loaded
        .iter()
        .filter(|(t, _)| !OUTSIDE_THE_COMPARTMENT.contains(&t.as_str()))
        .map(|(t, resources)| {
            let selected: Vec<&Value> = resources
                .iter()
                .filter(|r| {
                    (t == "Patient" && patients.contains(r["id"].as_str().unwrap())) || references_patient(r, patients)
                })
                .collect();
            (t.clone(), selected)
        })
        .filter(|(_, selected)| !selected.is_empty())
        .collect()
}

pub(crate) fn expected_for_patients(loaded: &BTreeMap<String, Vec<Value>>, patients: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    in_compartments(loaded, patients).into_iter().map(|(t, selected)| (t, multiset(selected))).collect()
}

/// Every `reference` string in the value.
fn collect_references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, found)),
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("reference") {
                found.insert(r.clone());
            }
            map.values().for_each(|v| collect_references(v, found));
        }
        _ => {}
    }
}

/// A Group export: the compartments, plus the Organizations and Practitioners (the referenced
/// types the sample holds) that those resources reference, once each.
pub(crate) fn expected_for_group(loaded: &BTreeMap<String, Vec<Value>>, patients: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let selected = in_compartments(loaded, patients);
    let mut references = BTreeSet::new();
    selected.values().flatten().for_each(|r| collect_references(r, &mut references));
    let mut expected = expected_for_patients(loaded, patients);
    for t in ["Organization", "Practitioner"] {
        let referenced: Vec<&Value> =
            loaded[t].iter().filter(|r| references.contains(&format!("{t}/{}", r["id"].as_str().unwrap()))).collect();
        if !referenced.is_empty() {
            expected.insert(t.to_owned(), multiset(referenced));
        }
    }
    expected
}

/// Compares per type, naming the type and the first resource that differs.
pub(crate) fn assert_same(actual: BTreeMap<String, Vec<String>>, expected: &BTreeMap<String, Vec<String>>) {
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "exported types");
    // The first line of `a` not in `b` (quadratic: worked out only for a failure's message).
    let first_not_in = |a: &[String], b: &[String]| a.iter().find(|l| !b.contains(l)).cloned();
    for (t, lines) in expected {
        assert!(
            actual[t] == *lines,
            "{t}: exported {} of {}; first missing {:?}; first extra {:?}",
            actual[t].len(),
            lines.len(),
            first_not_in(lines, &actual[t]),
            first_not_in(&actual[t], lines)
        );
    }
}

backend_tests! {
    async fn the_synthea_sample_exports_exactly_at_system_patient_and_group_level(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        let system = app.wait_for_manifest(&app.kick_off("/$export").await).await;
        assert_eq!(system["error"], json!([]));
        assert_eq!(system["requiresAccessToken"], json!(false), "an open server serves its files without a token");
        let expected: BTreeMap<String, Vec<String>> = loaded.iter().map(|(t, r)| (t.clone(), multiset(r))).collect();
        assert_same(exported_multisets(app.download_all(&system).await), &expected);

        let all_patients: BTreeSet<String> =
            loaded["Patient"].iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
        let expected = expected_for_patients(&loaded, &all_patients);
        assert!(!expected.contains_key("Organization") && !expected.contains_key("Practitioner"));

        let patient = app.wait_for_manifest(&app.kick_off("/Patient/$export").await).await;
        assert_same(exported_multisets(app.download_all(&patient).await), &expected);

        let group = app.wait_for_manifest(&app.kick_off(&format!("/Group/{SYNTHEA_GROUP}/$export")).await).await;
        let expected = expected_for_group(&loaded, &all_patients);
        assert!(expected["Organization"].len() > 10 && expected["Practitioner"].len() > 10);
        assert_same(exported_multisets(app.download_all(&group).await), &expected);
    }

    async fn type_and_since_narrow_the_export(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=Patient,Device&_outputFormat=application/fhir%2Bndjson").await).await;
        let exported = exported_multisets(app.download_all(&manifest).await);
        assert_eq!(exported.keys().collect::<Vec<_>>(), ["Device", "Patient"]);
        assert_eq!(exported["Device"], multiset(&loaded["Device"]));

        let since = manifest["transactionTime"].as_str().unwrap().to_owned();
        let changed = json!({"resourceType": "Device", "id": loaded["Device"][0]["id"], "status": "inactive"});
        assert!(app.put(&changed).await.status().is_success());
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/$export?_since={}", since.replace('+', "%2B"))).await).await;
        let exported = exported_multisets(app.download_all(&manifest).await);
        assert_eq!(exported, BTreeMap::from([("Device".to_owned(), multiset([&changed]))]));
    }

    async fn group_export_follows_membership_rules_and_exports_each_resource_once(backend: Backend) {
        let app = spawn_app(backend).await;
        for id in ["p1", "p2", "p3", "p4", "p5", "p6"] {
            assert!(app.put(&json!({"resourceType": "Patient", "id": id})).await.status().is_success());
            let obs = json!({"resourceType": "Observation", "id": format!("obs-{id}"), "status": "final",
                             "code": {"text": "x"}, "subject": {"reference": format!("Patient/{id}")}});
            assert!(app.put(&obs).await.status().is_success());
        }
        // In the compartments of p1 (subject) and p2 (performer): exported once.
        let shared = json!({"resourceType": "Observation", "id": "shared", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": "Patient/p1"}, "performer": [{"reference": "Patient/p2"}]});
        assert!(app.put(&shared).await.status().is_success());
        let outer = json!({"resourceType": "Group", "id": "outer", "type": "person", "actual": true, "member": [
            {"entity": {"reference": "Patient/p1"}},
            {"entity": {"reference": "Patient/p2"}, "period": {"start": "2000-01-01"}},
            {"entity": {"reference": "Patient/p3"}, "inactive": true},
            {"entity": {"reference": "Patient/p4"}, "period": {"end": "2001-01-01T00:00:00Z"}},
            {"entity": {"reference": "Group/inner"}}]});
        let inner = json!({"resourceType": "Group", "id": "inner", "type": "person", "actual": true, "member": [
            {"entity": {"reference": "Patient/p5"}},
            {"entity": {"reference": "Group/outer"}}]});
        assert!(app.put(&outer).await.status().is_success());
        assert!(app.put(&inner).await.status().is_success());

        let manifest = app.wait_for_manifest(&app.kick_off("/Group/outer/$export?_type=Patient,Observation").await).await;
        let exported = app.download_all(&manifest).await;
        let ids = |t: &str| -> Vec<String> {
            let mut ids: Vec<String> = exported[t].iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids("Patient"), ["p1", "p2", "p5"]);
        assert_eq!(ids("Observation"), ["obs-p1", "obs-p2", "obs-p5", "shared"]);

        let manifest = app.wait_for_manifest(&app.kick_off("/Patient/$export?_type=Observation").await).await;
        let exported = app.download_all(&manifest).await;
        assert_eq!(exported["Observation"].len(), 7, "six own observations plus the shared one, once");
    }

    async fn patient_export_holds_the_compartments_of_patients_that_exist(backend: Backend) {
        let app = spawn_app(backend).await;
        for id in ["p1", "p2"] {
            assert!(app.put(&json!({"resourceType": "Patient", "id": id})).await.status().is_success());
            let obs = json!({"resourceType": "Observation", "id": format!("obs-{id}"), "status": "final",
                             "code": {"text": "x"}, "subject": {"reference": format!("Patient/{id}")}});
            assert!(app.put(&obs).await.status().is_success());
        }
        // In two compartments, each patient first in one of the pair.
        for (id, subject, performer) in [("shared-12", "p1", "p2"), ("shared-21", "p2", "p1")] {
            let obs = json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
                             "subject": {"reference": format!("Patient/{subject}")},
                             "performer": [{"reference": format!("Patient/{performer}")}]});
            assert!(app.put(&obs).await.status().is_success());
        }
        let orphan = json!({"resourceType": "Observation", "id": "no-patient", "status": "final", "code": {"text": "x"}});
        assert!(app.put(&orphan).await.status().is_success());

        let observations = async || -> Vec<String> {
            let manifest = app.wait_for_manifest(&app.kick_off("/Patient/$export?_type=Observation").await).await;
            let exported = app.download_all(&manifest).await;
            let mut ids: Vec<String> =
                exported.get("Observation").into_iter().flatten().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
            ids.sort();
            ids
        };
        assert_eq!(observations().await, ["obs-p1", "obs-p2", "shared-12", "shared-21"]);
        assert_eq!(app.client.delete(app.url("/Patient/p1")).send().await.unwrap().status(), 204);
        assert_eq!(observations().await, ["obs-p2", "shared-12", "shared-21"], "still in p2's compartment");
        assert_eq!(app.client.delete(app.url("/Patient/p2")).send().await.unwrap().status(), 204);
        assert_eq!(observations().await, Vec::<String>::new());
    }
}

backend_tests! {
    async fn group_export_adds_the_referenced_types_that_type_allows(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        let path = format!("/Group/{SYNTHEA_GROUP}/$export?_type=Encounter,Organization");
        let manifest = app.wait_for_manifest(&app.kick_off(&path).await).await;
        let mut references = BTreeSet::new();
        loaded["Encounter"].iter().for_each(|e| collect_references(e, &mut references));
        let organizations: Vec<&Value> =
            loaded["Organization"].iter().filter(|o| references.contains(&format!("Organization/{}", o["id"].as_str().unwrap()))).collect();
        assert!(!organizations.is_empty() && organizations.len() < loaded["Organization"].len(), "a real subset");
        let expected = BTreeMap::from([
            ("Encounter".to_owned(), multiset(&loaded["Encounter"])),
            ("Organization".to_owned(), multiset(organizations)),
        ]);
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);
    }
}
