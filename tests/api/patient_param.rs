//! The `patient` parameter (POST, Patient and Group level) on the Synthea sample: the expected
//! compartments are worked out from the fixture files.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    export_levels::{assert_same, expected_for_group, expected_for_patients, exported_multisets, SYNTHEA_GROUP},
    helpers::{assert_outcome, backend_tests, fixture_resources, spawn_app, LENIENT},
};

fn patients_body(ids: &[&str]) -> Value {
    let parameter: Vec<Value> =
        ids.iter().map(|id| json!({"name": "patient", "valueReference": {"reference": format!("Patient/{id}")}})).collect();
    json!({"resourceType": "Parameters", "parameter": parameter})
}

backend_tests! {
    async fn the_patient_parameter_limits_export_to_those_patients(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        let (p1, p2) = (loaded["Patient"][0]["id"].as_str().unwrap(), loaded["Patient"][1]["id"].as_str().unwrap());
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "outsider"})).await.status(), 201);

        let manifest = app.wait_for_manifest(&app.kick_off_post("/Patient/$export", &patients_body(&[p1, p2]), "respond-async").await).await;
        let expected = expected_for_patients(&loaded, &BTreeSet::from([p1.to_owned(), p2.to_owned()]));
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);

        let group_path = format!("/Group/{SYNTHEA_GROUP}/$export");
        let manifest = app.wait_for_manifest(&app.kick_off_post(&group_path, &patients_body(&[p2]), "respond-async").await).await;
        let expected = expected_for_group(&loaded, &BTreeSet::from([p2.to_owned()]));
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);

        // Strict: a patient that does not exist, or is not a member, is a 400 naming it.
        let cases = [
            ("/Patient/$export", patients_body(&[p1, "nobody"]), "Patient/nobody"),
            (group_path.as_str(), patients_body(&["outsider"]), "Patient/outsider is not a member"),
            ("/$export", patients_body(&[p1]), "patient"),
        ];
        for (path, body, needle) in cases {
            assert_outcome(app.kick_off_post_raw(path, &body, "respond-async").await, StatusCode::BAD_REQUEST, needle).await;
        }

        // Lenient: the unknown patient is left out and reported in `error`.
        let manifest = app.wait_for_manifest(&app.kick_off_post("/Patient/$export", &patients_body(&[p1, "nobody"]), LENIENT).await).await;
        let outcomes = app.download(&manifest["error"][0]).await;
        assert!(serde_json::to_string(&outcomes).unwrap().contains("Patient/nobody"));
        let expected = expected_for_patients(&loaded, &BTreeSet::from([p1.to_owned()]));
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);
    }
}
