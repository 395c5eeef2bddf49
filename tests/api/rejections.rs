//! Every rejection answers with its status and an OperationOutcome that names the problem.

use reqwest::{header, Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_with, AppOptions};

backend_tests! {
    async fn kick_off_rejections_name_the_problem(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.put(&json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true})).await.status(), 201);
        let cases: &[(&str, StatusCode, &str)] = &[
            ("/$export?_type=Bogus", StatusCode::BAD_REQUEST, "_type"),
            ("/$export?_since=yesterday", StatusCode::BAD_REQUEST, "_since"),
            ("/$export?_outputFormat=text/csv", StatusCode::BAD_REQUEST, "_outputFormat"),
            ("/$export?_container=..%2F..%2Fetc", StatusCode::BAD_REQUEST, "_container"),
            ("/$export?_container=Bad_Name", StatusCode::BAD_REQUEST, "_container"),
            ("/$export?_typeFilter=Observation%3Fcode-value-quantity%3Dx", StatusCode::BAD_REQUEST, "code-value-quantity"),
            ("/$export?_elements=name.given", StatusCode::BAD_REQUEST, "_elements"),
            ("/$export?_until=tomorrow", StatusCode::BAD_REQUEST, "_until"),
            ("/$export?_since=2024-02-01&_until=2024-01-01", StatusCode::BAD_REQUEST, "_until"),
            ("/$export?organizeOutputBy=Patient", StatusCode::BAD_REQUEST, "organizeOutputBy"),
            ("/$export?allowPartialManifests=yes", StatusCode::BAD_REQUEST, "allowPartialManifests"),
            ("/$export?includeAssociatedData=_custom", StatusCode::BAD_REQUEST, "includeAssociatedData"),
            ("/$export?colour=blue", StatusCode::BAD_REQUEST, "colour"),
            ("/Patient/$export?_type=Organization", StatusCode::BAD_REQUEST, "Patient compartment"),
            ("/Group/g/$export?_type=Device", StatusCode::BAD_REQUEST, "the types their resources reference"),
            ("/Group/g/$export?organizeOutputBy=Practitioner", StatusCode::BAD_REQUEST, "organizeOutputBy"),
            ("/Group/g/$export?_till=2024-01-01", StatusCode::BAD_REQUEST, "not supported yet"),
            ("/Group/nope/$export", StatusCode::NOT_FOUND, "Group/nope"),
            ("/Group/bad%20id/$export", StatusCode::BAD_REQUEST, "Group id"),
            ("/Observation/$export", StatusCode::BAD_REQUEST, "$export"),
        ];
        for (path, status, needle) in cases {
            assert_outcome(app.kick_off_raw(path).await, *status, needle).await;
        }

        let html = app.client.get(app.url("/$export")).header(header::ACCEPT, "text/html").send().await.unwrap();
        assert_outcome(html, StatusCode::NOT_ACCEPTABLE, "application/fhir+json").await;
        let bad_prefer = app
            .client
            .get(app.url("/$export"))
            .header(header::ACCEPT, "application/fhir+json")
            .header("prefer", "respond-async, handling=sloppy")
            .send()
            .await
            .unwrap();
        assert_outcome(bad_prefer, StatusCode::BAD_REQUEST, "handling").await;
        let not_parameters = app
            .client
            .post(app.url("/$export"))
            .header(header::ACCEPT, "application/fhir+json")
            .header("prefer", "respond-async")
            .json(&json!({"resourceType": "Patient"}))
            .send()
            .await
            .unwrap();
        assert_outcome(not_parameters, StatusCode::BAD_REQUEST, "Parameters").await;
    }

    async fn real_client_headers_and_post_kick_off_are_accepted(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
        for accept in ["application/fhir+json, */*; q=0.1", "application/fhir+json"] {
            let response = app.client.get(app.url("/$export")).header(header::ACCEPT, accept).header("prefer", "respond-async").send().await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED, "Accept: {accept}");
        }
        let parameters = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"}]});
        let manifest = app.wait_for_manifest(&app.kick_off_post("/Patient/$export", &parameters, "respond-async").await).await;
        assert_eq!(manifest["request"], app.url("/Patient/$export"));
        assert_eq!(manifest["output"].as_array().unwrap().len(), 1);
    }

    async fn lenient_handling_reports_ignored_parameters_in_error_files(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
        let manifest = app.export_lenient("/$export?_typeFilter=Patient%3F_has%3AObservation%3Apatient%3Acode%3Dx&organizeOutputBy=Patient").await;
        let errors = manifest["error"].as_array().unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["type"], "OperationOutcome");
        let outcomes = app.download(&errors[0]).await;
        let text = serde_json::to_string(&outcomes).unwrap();
        assert!(text.contains("_typeFilter") && text.contains("organizeOutputBy"), "{text}");
        assert_eq!(manifest["output"][0]["type"], "Patient");
    }

    async fn status_and_file_urls_reject_unknown_jobs_and_traversal(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "p"})).await.status(), 201);
        let status_url = app.kick_off("/$export").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        assert_eq!(manifest["output"][0]["type"], "Patient");

        let unknown = app.client.get(app.url(&format!("/_jobs/{}", uuid::Uuid::new_v4()))).send().await.unwrap();
        assert_outcome(unknown, StatusCode::NOT_FOUND, "no export job").await;
        let malformed = app.client.get(app.url("/_jobs/not-a-job")).send().await.unwrap();
        assert_outcome(malformed, StatusCode::NOT_FOUND, "no export job").await;
        for name in ["Nope-1.ndjson", "..%2F..%2F..%2Fetc%2Fpasswd", "..%5C..%5Cetc%5Cpasswd", "Patient-1.ndjson%00"] {
            let response = app.client.get(format!("{status_url}/files/{name}")).send().await.unwrap();
            assert_outcome(response, StatusCode::NOT_FOUND, "").await;
        }
        let delete_unknown = app.client.request(Method::DELETE, app.url(&format!("/_jobs/{}", uuid::Uuid::new_v4()))).send().await.unwrap();
        assert_outcome(delete_unknown, StatusCode::NOT_FOUND, "no export job").await;
    }

    async fn resource_write_rejections_leave_nothing_written(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { max_body_bytes: 64 * 1024, ..Default::default() }).await;
        let put = |path: &str, body: String| app.client.put(app.url(path)).header(header::CONTENT_TYPE, "application/fhir+json").body(body).send();
        let cases: Vec<(&str, String, StatusCode, &str)> = vec![
            ("/Patient/p1", "{not json".into(), StatusCode::BAD_REQUEST, "not valid JSON"),
            ("/Patient/p1", "[1,2]".into(), StatusCode::BAD_REQUEST, "JSON object"),
            ("/Patient/p1", json!({"id": "p1"}).to_string(), StatusCode::BAD_REQUEST, "resourceType"),
            ("/Patient/p1", json!({"resourceType": "Observation", "id": "p1"}).to_string(), StatusCode::BAD_REQUEST, "does not match the type"),
            ("/Patient/p1", json!({"resourceType": "Patient", "id": "p2"}).to_string(), StatusCode::BAD_REQUEST, "does not match the id"),
            ("/Patient/bad_id", json!({"resourceType": "Patient"}).to_string(), StatusCode::BAD_REQUEST, "not a valid id"),
            ("/Bogus/p1", json!({"resourceType": "Bogus", "id": "p1"}).to_string(), StatusCode::BAD_REQUEST, "Bogus"),
            ("/Patient/p1", json!({"resourceType": "Patient", "id": "p1", "meta": 3}).to_string(), StatusCode::BAD_REQUEST, "meta"),
            ("/Patient/p1", format!("{{\"resourceType\":\"Patient\",\"id\":\"p1\",\"text\":\"{}\"}}", "x".repeat(100_000)), StatusCode::PAYLOAD_TOO_LARGE, "larger"),
        ];
        for (path, body, status, needle) in cases {
            assert_outcome(put(path, body).await.unwrap(), status, needle).await;
        }
        let posted_unknown = app.client.post(app.url("/Bogus")).json(&json!({"resourceType": "Bogus"})).send().await.unwrap();
        assert_outcome(posted_unknown, StatusCode::BAD_REQUEST, "Bogus").await;

        // A transaction with one bad entry writes nothing.
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ok"}, "request": {"method": "PUT", "url": "Patient/ok"}},
            {"resource": {"resourceType": "Patient", "id": "x y"}, "request": {"method": "PUT", "url": "Patient/x y"}}]});
        let response = app.client.post(app.url("/")).json(&transaction).send().await.unwrap();
        assert_outcome(response, StatusCode::BAD_REQUEST, "entry 1").await;
        for id in ["p1", "ok"] {
            let read = app.client.get(app.url(&format!("/Patient/{id}"))).send().await.unwrap();
            assert_outcome(read, StatusCode::NOT_FOUND, "does not exist").await;
        }
        let not_bundle = app.client.post(app.url("/")).json(&json!({"resourceType": "Bundle", "type": "collection"})).send().await.unwrap();
        assert_outcome(not_bundle, StatusCode::BAD_REQUEST, "batch").await;
    }
}
