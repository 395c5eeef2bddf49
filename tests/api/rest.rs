//! FHIR REST writes: versions, history, deletes, and batch/transaction Bundles.

use reqwest::{header, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_outcome, backend_tests, spawn_app};

backend_tests! {
    async fn writes_set_versions_and_deletes_are_gone(backend: Backend) {
        let app = spawn_app(backend).await;
        let first = app.put(&json!({"resourceType": "Patient", "id": "p1", "gender": "female"})).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        assert_eq!(first.headers()[header::ETAG], "W/\"1\"");
        let second = app.put(&json!({"resourceType": "Patient", "id": "p1", "gender": "male"})).await;
        assert_eq!(second.status(), StatusCode::OK);
        let body: Value = app.client.get(app.url("/Patient/p1")).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["gender"], "male");
        assert_eq!(body["meta"]["versionId"], "2");
        assert!(body["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));

        let created = app.client.post(app.url("/Observation")).json(&json!({"resourceType": "Observation", "id": "ignored", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}})).send().await.unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let location = created.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with(&app.url("/Observation/")) && location.ends_with("/_history/1"), "{location}");
        let created: Value = created.json().await.unwrap();
        assert_ne!(created["id"], "ignored", "POST assigns the id");

        assert_eq!(app.client.delete(app.url("/Patient/p1")).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_outcome(app.client.get(app.url("/Patient/p1")).send().await.unwrap(), StatusCode::GONE, "deleted").await;
        let recreated = app.put(&json!({"resourceType": "Patient", "id": "p1"})).await;
        assert_eq!(recreated.status(), StatusCode::CREATED);
        assert_eq!(recreated.headers()[header::ETAG], "W/\"4\"");
    }

    async fn a_transaction_resolves_urn_uuids_and_a_batch_answers_per_entry(backend: Backend) {
        let app = spawn_app(backend).await;
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}},
             "request": {"method": "POST", "url": "Observation"}}]});
        let response = app.client.post(app.url("/")).json(&transaction).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let result: Value = response.json().await.unwrap();
        assert_eq!(result["type"], "transaction-response");
        let patient_location = result["entry"][0]["response"]["location"].as_str().unwrap();
        assert!(result["entry"][0]["response"]["status"].as_str().unwrap().starts_with("201"));
        let patient_ref = patient_location.split("/_history").next().unwrap();
        let obs_location = result["entry"][1]["response"]["location"].as_str().unwrap();
        let obs_url = app.url(&format!("/{}", obs_location.split("/_history").next().unwrap()));
        let obs: Value = app.client.get(obs_url).send().await.unwrap().json().await.unwrap();
        assert_eq!(obs["subject"]["reference"], patient_ref);

        // The Observation is in the new patient's compartment.
        let manifest = app.wait_for_manifest(&app.kick_off("/Patient/$export?_type=Observation").await).await;
        assert_eq!(manifest["output"][0]["count"], 1);

        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok"}, "request": {"method": "PUT", "url": "Patient/ok"}},
            {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "PUT", "url": "Patient/y"}}]});
        let result: Value = app.client.post(app.url("/")).json(&batch).send().await.unwrap().json().await.unwrap();
        assert!(result["entry"][0]["response"]["status"].as_str().unwrap().starts_with("201"));
        assert!(result["entry"][1]["response"]["status"].as_str().unwrap().starts_with("400"));
        assert_eq!(result["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
        assert_eq!(app.client.get(app.url("/Patient/ok")).send().await.unwrap().status(), StatusCode::OK);
    }

    async fn the_capability_statement_declares_bulk_export(backend: Backend) {
        let app = spawn_app(backend).await;
        let response = app.client.get(app.url("/metadata")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let cs: Value = response.json().await.unwrap();
        assert_eq!(cs["instantiates"][0], "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data");
        assert_eq!(cs["rest"][0]["operation"][0]["definition"], "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export");
        let resources = cs["rest"][0]["resource"].as_array().unwrap();
        for (t, names) in [("Patient", ["export", "patient-export"]), ("Group", ["export", "group-export"])] {
            let entry = resources.iter().find(|r| r["type"] == t).unwrap();
            let listed: Vec<&str> = entry["operation"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
            assert_eq!(listed, names);
        }
        assert!(resources.len() > 140);
        let documentation = cs["rest"][0]["documentation"].as_str().unwrap();
        assert!(!documentation.contains("Not supported yet"), "every Bulk Data parameter is supported");
        let supported = documentation;
        for parameter in ["_since (with deleted files)", "_until", "patient", "_elements", "allowPartialManifests", "includeAssociatedData", "_typeFilter", "organizeOutputBy=Patient"] {
            assert!(supported.contains(parameter), "{parameter} listed as supported");
        }
        assert!(supported.contains("Group exports also export") && supported.contains("Practitioner"));
    }
}
