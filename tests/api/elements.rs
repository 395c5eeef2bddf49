//! `_elements` on the Synthea sample. What each type keeps is worked out here from the fixture
//! files and the R4 specification's required elements (written out below by hand, from the
//! resource pages), not from the server's table.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::{
    export_levels::{assert_same, exported_multisets},
    helpers::{backend_tests, fixture_resources, multiset, spawn_app},
};

/// The fixture resource as `_elements` should leave it: only these properties (choices by
/// their stem), then tagged SUBSETTED.
fn subset(resource: &Value, keep: &[&str], choices: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for (key, value) in resource.as_object().unwrap() {
        let base = key.strip_prefix('_').unwrap_or(key);
        let chosen = ["resourceType", "id", "meta"].contains(&base)
            || keep.contains(&base)
            || choices.iter().any(|c| base.strip_prefix(c).is_some_and(|rest| rest.starts_with(|ch: char| ch.is_ascii_uppercase())));
        if chosen {
            out.insert(key.clone(), value.clone());
        }
    }
    let meta = out.entry("meta").or_insert_with(|| json!({}));
    let tags = meta.as_object_mut().unwrap().entry("tag").or_insert_with(|| json!([]));
    tags.as_array_mut().unwrap().push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
    Value::Object(out)
}

backend_tests! {
    async fn elements_keep_the_listed_and_required_elements_and_tag_subsetted(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        let manifest = app
            .wait_for_manifest(&app.kick_off("/$export?_type=Patient,Observation,MedicationRequest,Organization&_elements=Patient.birthDate,status,Observation.code").await)
            .await;
        // R4 required (min 1) top-level elements: Observation status, code; MedicationRequest
        // status, intent, medication[x], subject; Patient and Organization none.
        let rules: [(&str, &[&str], &[&str]); 4] = [
            ("Patient", &["birthDate", "status"], &[]),
            ("Observation", &["status", "code"], &[]),
            ("MedicationRequest", &["status", "intent", "subject"], &["medication"]),
            ("Organization", &["status"], &[]),
        ];
        let expected: BTreeMap<String, Vec<String>> = rules
            .iter()
            .map(|(t, keep, choices)| {
                let subsets: Vec<Value> = loaded[*t].iter().map(|r| subset(r, keep, choices)).collect();
                (t.to_string(), multiset(&subsets))
            })
            .collect();
        assert!(loaded["MedicationRequest"].iter().all(|m| m.get("medicationCodeableConcept").is_some() || m.get("medicationReference").is_some()));
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);

        // Items for one type only leave the other types whole.
        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=Patient,Device&_elements=Patient.gender").await).await;
        let patients: Vec<Value> = loaded["Patient"].iter().map(|p| subset(p, &["gender"], &[])).collect();
        let expected = BTreeMap::from([("Device".to_owned(), multiset(&loaded["Device"])), ("Patient".to_owned(), multiset(&patients))]);
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);

        // Lenient: a malformed item is left out and reported; the others still apply.
        let manifest = app.export_lenient("/$export?_type=Patient,Device&_elements=Patient.gender,name.given").await;
        let outcomes = app.download(&manifest["error"][0]).await;
        assert!(serde_json::to_string(&outcomes).unwrap().contains("name.given"));
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);
    }
}
