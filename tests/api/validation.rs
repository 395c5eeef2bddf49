//! Validation of what is stored: REST writes and loads checked against the R4 definitions,
//! the `validation` setting, and transaction Bundles (unresolved `urn:uuid:` references,
//! DELETE entries in loaded files).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_with, AppOptions};
use bulkfhir::fhir::Validation;

backend_tests! {
    async fn a_write_with_a_bad_value_is_a_400_naming_the_element_and_nothing_is_stored(backend: Backend) {
        let app = spawn_app(backend).await;
        let observation = json!({"resourceType": "Observation", "id": "x", "status": "final", "code": {"text": "t"},
            "effectiveDateTime": "2020-01-01Té12345"});
        let response = app.put(&observation).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let outcome: Value = response.json().await.unwrap();
        assert_eq!(outcome["issue"][0]["diagnostics"], "Observation.effectiveDateTime: '2020-01-01Té12345' is not a valid dateTime");
        assert_eq!(outcome["issue"][0]["expression"], json!(["Observation.effectiveDateTime"]));
        assert_eq!(outcome["issue"][0]["code"], "value");
        assert_eq!(app.client.get(app.url("/Observation/x")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

        let unknown = json!({"resourceType": "Patient", "name": [{"family": "F", "nickname": "N"}]});
        let response = app.client.post(app.url("/Patient")).json(&unknown).send().await.unwrap();
        assert_outcome(response, StatusCode::BAD_REQUEST, "Patient.name[0].nickname: unknown element").await;

        // One bad entry refuses the whole transaction.
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok"}, "request": {"method": "PUT", "url": "Patient/ok"}},
            {"resource": {"resourceType": "Patient", "id": "bad", "birthDate": "1970-02-30"}, "request": {"method": "PUT", "url": "Patient/bad"}}]});
        let response = app.client.post(app.url("/")).json(&transaction).send().await.unwrap();
        assert_outcome(response, StatusCode::BAD_REQUEST, "entry 1: Patient.birthDate: '1970-02-30' is not a valid date").await;
        assert_eq!(app.client.get(app.url("/Patient/ok")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

        // A good resource with nested resources, extensions and primitive extensions passes.
        let good = json!({"resourceType": "Patient", "id": "good", "birthDate": "1970-01-01",
            "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-01-01T08:30:00+01:00"}]},
            "contained": [{"resourceType": "Organization", "id": "o", "name": "Org"}],
            "managingOrganization": {"reference": "#o"}});
        assert_eq!(app.put(&good).await.status(), StatusCode::CREATED);
    }

    async fn unknown_elements_are_stored_when_the_setting_allows_them(backend: Backend) {
        let options = AppOptions { validation: Validation::AllowUnknownElements, ..Default::default() };
        let app = spawn_app_with(backend, options).await;
        let patient = json!({"resourceType": "Patient", "id": "p", "name": [{"family": "F", "nickname": "N"}]});
        assert_eq!(app.put(&patient).await.status(), StatusCode::CREATED);
        let stored: Value = app.client.get(app.url("/Patient/p")).send().await.unwrap().json().await.unwrap();
        assert_eq!(stored["name"][0]["nickname"], "N");
        // Values of known elements are still checked.
        let bad = json!({"resourceType": "Patient", "id": "q", "nickname": "N", "active": "yes"});
        assert_outcome(app.put(&bad).await, StatusCode::BAD_REQUEST, "Patient.active: boolean must be a JSON boolean").await;
    }

    async fn a_transaction_referencing_a_urn_uuid_of_no_entry_is_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:99999999-9999-4999-8999-999999999999"}},
             "request": {"method": "POST", "url": "Observation"}}]});
        let response = app.client.post(app.url("/")).json(&transaction).send().await.unwrap();
        assert_outcome(response, StatusCode::BAD_REQUEST, "'urn:uuid:99999999-9999-4999-8999-999999999999' matches no entry").await;
        assert_eq!(app.db.count("SELECT count(*) FROM resources").await, 0, "nothing of the transaction is written");
    }

    async fn the_loader_reports_a_bad_line_with_its_place_and_loads_the_rest(backend: Backend) {
        let app = spawn_app(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Observation.ndjson");
        let lines = [
            json!({"resourceType": "Observation", "id": "a", "status": "final", "code": {"text": "t"}, "effectiveDateTime": "2020-01-01"}),
            json!({"resourceType": "Observation", "id": "b", "status": "final", "code": {"text": "t"}, "effectiveDateTime": "2020-01-01Té12345"}),
            json!({"resourceType": "Observation", "id": "c", "status": "final", "code": {"text": "t"}, "valueQuantity": {"value": 1.5, "unit": "mg"}}),
            json!({"resourceType": "Observation", "id": "d", "status": "final", "code": {"text": "t"}, "valueQuantity": [{"value": 1}]}),
        ];
        std::fs::write(&path, lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")).unwrap();
        let report = bulkfhir::load::load(app.stores.resources.as_ref(), std::slice::from_ref(&path)).await.unwrap();
        assert_eq!(report.total(), 2);
        let failures: Vec<(String, String)> = report.failures.iter().map(|f| (f.location.clone(), f.reason.clone())).collect();
        assert_eq!(failures, [
            ("line 2".to_owned(), "Observation.effectiveDateTime: '2020-01-01Té12345' is not a valid dateTime".to_owned()),
            ("line 4".to_owned(), "Observation.valueQuantity: must be a single value, not an array (Quantity, max 1)".to_owned()),
        ]);
        assert!(report.failures.iter().all(|f| f.file == path));
        for (id, status) in [("a", StatusCode::OK), ("b", StatusCode::NOT_FOUND), ("c", StatusCode::OK), ("d", StatusCode::NOT_FOUND)] {
            assert_eq!(app.client.get(app.url(&format!("/Observation/{id}"))).send().await.unwrap().status(), status, "{id}");
        }

        // With validation off, the loader stores what it is given.
        let report = bulkfhir::load::load_with(app.stores.resources.as_ref(), &[path], Validation::Off).await.unwrap();
        assert_eq!((report.total(), report.failures.len()), (4, 0));
    }

    async fn the_loader_applies_the_deletes_of_a_transaction_bundle(backend: Backend) {
        let app = spawn_app(backend).await;
        for id in ["p1", "p2"] {
            assert_eq!(app.put(&json!({"resourceType": "Patient", "id": id})).await.status(), StatusCode::CREATED);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changes.json");
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/p1"}},
            {"resource": {"resourceType": "Patient", "id": "p3"}, "request": {"method": "PUT", "url": "Patient/p3"}}]});
        std::fs::write(&path, transaction.to_string()).unwrap();
        let report = bulkfhir::load::load(app.stores.resources.as_ref(), &[path]).await.unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!((report.loaded.get("Patient"), report.deleted.get("Patient")), (Some(&1), Some(&1)));
        assert_outcome(app.client.get(app.url("/Patient/p1")).send().await.unwrap(), StatusCode::GONE, "deleted").await;
        for id in ["p2", "p3"] {
            assert_eq!(app.client.get(app.url(&format!("/Patient/{id}"))).send().await.unwrap().status(), StatusCode::OK, "{id}");
        }
    }
}
