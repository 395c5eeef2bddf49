//! The kick-off accepts what real Bulk Data clients send (issue 16): `%2C` in list parameters
//! (smart-fetch, `URLSearchParams`), an empty-body POST with the parameters in the URL (Medplum
//! CLI), out-of-scope types beside in-scope ones, unknown search parameters under lenient
//! handling, the seed system's Accept and Prefer rules; and it refuses what would otherwise
//! fail later in SQL (issue 17): control characters, instants outside years 0001-9999.

use std::collections::BTreeMap;

use reqwest::{header, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_with, AppOptions, TestApp, LENIENT};
use bulkfhir::config::KickoffHeaders;

/// Three patients and a few resources around them, Device outside the Patient compartment.
async fn seed(app: &TestApp) {
    let resources = [
        json!({"resourceType": "Patient", "id": "p1", "gender": "female", "name": [{"family": "One"}]}),
        json!({"resourceType": "Patient", "id": "p2", "gender": "male", "name": [{"family": "Two"}]}),
        json!({"resourceType": "Patient", "id": "p3", "gender": "female", "name": [{"family": "Three"}]}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
        json!({"resourceType": "Observation", "id": "o2", "status": "preliminary", "code": {"text": "x"}, "subject": {"reference": "Patient/p2"}}),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}),
        json!({"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}}),
        json!({"resourceType": "Device", "id": "d1", "patient": {"reference": "Patient/p1"}}),
        json!({"resourceType": "Provenance", "id": "pv1", "target": [{"reference": "Patient/p1"}], "recorded": "2024-01-01T00:00:00Z",
            "agent": [{"who": {"reference": "Patient/p1"}}]}),
        json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true, "member": [{"entity": {"reference": "Patient/p1"}}]}),
    ];
    for resource in &resources {
        assert_eq!(app.put(resource).await.status(), StatusCode::CREATED, "{resource}");
    }
}

/// The ids of every output resource of a manifest, by type.
async fn ids_by_type(app: &TestApp, manifest: &Value) -> BTreeMap<String, Vec<String>> {
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (t, resources) in app.download_all(manifest).await {
        let mut list: Vec<String> = resources.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        list.sort();
        ids.insert(t, list);
    }
    ids
}

fn expect(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs.iter().map(|(t, ids)| (t.to_string(), ids.iter().map(|s| s.to_string()).collect())).collect()
}

/// The text of every OperationOutcome in a manifest's `error` files.
async fn error_text(app: &TestApp, manifest: &Value) -> String {
    let mut text = String::new();
    for entry in manifest["error"].as_array().unwrap() {
        assert_eq!(entry["type"], "OperationOutcome");
        text.push_str(&serde_json::to_string(&app.download(entry).await).unwrap());
    }
    text
}

/// A kick-off with exactly these headers (name, value) and no others.
async fn kick_off_with(app: &TestApp, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app.client.request(method, app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A kick-off over a bare HTTP/1.1 connection with exactly these headers (HTTP clients add
/// `Accept: */*` of their own, and a missing Accept is one of the cases). Returns the status
/// and, for an error, asserts an OperationOutcome whose diagnostics mention `needle`.
async fn bare_kick_off(app: &TestApp, method: &str, path: &str, headers: &[(&str, &str)], needle: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(&app.url(path)).unwrap();
    let address = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let target = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 202 {
        assert!(head.to_ascii_lowercase().contains("content-type: application/fhir+json"), "{head}");
        let outcome: Value = serde_json::from_str(body).unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(text.contains(needle), "{method} {headers:?}: '{text}' should mention '{needle}'");
    }
    status
}

/// Request headers, name and value.
type Headers<'a> = &'a [(&'a str, &'a str)];

const ACCEPT_FHIR: (&str, &str) = ("Accept", "application/fhir+json");
const RESPOND_ASYNC: (&str, &str) = ("Prefer", "respond-async");

backend_tests! {
    async fn encoded_commas_split_every_list_parameter(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        // smart-fetch's `_type`, as Python's urlencode writes it.
        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=AllergyIntolerance%2CCondition%2CPatient").await).await;
        assert_eq!(
            ids_by_type(&app, &manifest).await,
            expect(&[("AllergyIntolerance", &["a1"]), ("Condition", &["c1"]), ("Patient", &["p1", "p2", "p3"])])
        );

        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=Patient&_elements=id%2Cgender").await).await;
        let patients = app.download(&manifest["output"][0]).await;
        assert!(patients.iter().all(|p| p.get("gender").is_some() && p.get("name").is_none()), "{patients:?}");

        let manifest = app
            .wait_for_manifest(&app.kick_off("/$export?_type=Patient&includeAssociatedData=LatestProvenanceResources%2CRelevantProvenanceResources").await)
            .await;
        assert_eq!(ids_by_type(&app, &manifest).await["Provenance"], ["pv1"]);

        let manifest = app.wait_for_manifest(&app.kick_off("/Patient/$export?_type=Patient&patient=Patient%2Fp1%2CPatient%2Fp3").await).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Patient", &["p1", "p3"])]));

        // `%2C` between whole `_typeFilter` queries separates them; inside one, it ORs values.
        let path = "/$export?_type=Patient%2CObservation&_typeFilter=Patient%3Fgender%3Dfemale%2CObservation%3Fstatus%3Dfinal";
        let manifest = app.wait_for_manifest(&app.kick_off(path).await).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Observation", &["o1"]), ("Patient", &["p1", "p3"])]));
        let path = "/$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal%2Cpreliminary";
        let manifest = app.wait_for_manifest(&app.kick_off(path).await).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Observation", &["o1", "o2"])]));
    }

    async fn an_empty_post_takes_its_parameters_from_the_url(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        // Medplum's CLI: POST, Content-Length: 0, the parameters in the URL.
        for content_type in [Some("application/fhir+json"), Some("application/x-www-form-urlencoded"), None] {
            let mut request = app
                .client
                .post(app.url("/$export?_type=Condition%2CAllergyIntolerance"))
                .header(header::ACCEPT, "application/fhir+json, */*; q=0.1")
                .header("prefer", "respond-async")
                .header(header::CONTENT_LENGTH, "0");
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED, "{content_type:?}: {}", response.text().await.unwrap());
            let status_url = response.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned();
            let manifest = app.wait_for_manifest(&status_url).await;
            assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("AllergyIntolerance", &["a1"]), ("Condition", &["c1"])]));
        }
        let group = kick_off_with(&app, Method::POST, "/Group/g/$export?_type=Patient", &[ACCEPT_FHIR, RESPOND_ASYNC]).await;
        assert_eq!(group.status(), StatusCode::ACCEPTED);
        let manifest = app.wait_for_manifest(group.headers()[header::CONTENT_LOCATION].to_str().unwrap()).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Patient", &["p1"])]));

        // URL and body together: merged; one parameter with two values is refused by name.
        let body = json!({"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Condition"}]});
        let manifest = app.wait_for_manifest(&app.kick_off_post("/$export?_type=Device", &body, "respond-async").await).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Condition", &["c1"]), ("Device", &["d1"])]));
        let body = json!({"resourceType": "Parameters", "parameter": [{"name": "_outputFormat", "valueString": "application/fhir+ndjson"}]});
        let conflict = app.kick_off_post_raw("/$export?_outputFormat=ndjson", &body, "respond-async").await;
        assert_outcome(conflict, StatusCode::BAD_REQUEST, "_outputFormat").await;
    }

    async fn types_outside_the_level_are_left_out_and_reported(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        for (path, prefer) in [
            ("/Patient/$export?_type=Patient,Device", "respond-async"),
            ("/Patient/$export?_type=Patient%2CDevice", LENIENT),
            ("/Group/g/$export?_type=Device&_type=Patient", "respond-async"),
        ] {
            let manifest = app.wait_for_manifest(&accepted_status_url(app.kick_off_prefer_raw(path, prefer).await).await).await;
            let expected = if path.starts_with("/Group") { &["p1"][..] } else { &["p1", "p2", "p3"][..] };
            assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Patient", expected)]), "{path}");
            let errors = error_text(&app, &manifest).await;
            assert!(errors.contains("Device is not in the Patient compartment"), "{path}: {errors}");
        }
        assert_outcome(app.kick_off_raw("/Patient/$export?_type=Device").await, StatusCode::BAD_REQUEST, "Device").await;
        assert_outcome(app.kick_off_prefer_raw("/Group/g/$export?_type=Device", LENIENT).await, StatusCode::BAD_REQUEST, "_type").await;
    }

    async fn unknown_search_parameters_are_dropped_under_lenient_handling(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        let path = "/$export?_type=Patient&_typeFilter=Patient%3Fstatus%3Dactive%26gender%3Dfemale";
        assert_outcome(app.kick_off_raw(path).await, StatusCode::BAD_REQUEST, "'status'").await;
        let manifest = app.export_lenient(path).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Patient", &["p1", "p3"])]), "gender still applies");
        let errors = error_text(&app, &manifest).await;
        assert!(errors.contains("status") && errors.contains("lenient"), "{errors}");
        // A query that cannot be parsed at all is refused either way.
        let unparsable = "/$export?_typeFilter=Bogus%3Fx%3D1";
        assert_outcome(app.kick_off_prefer_raw(unparsable, LENIENT).await, StatusCode::BAD_REQUEST, "Bogus").await;
    }

    async fn kick_off_headers_are_checked_as_the_seed_system_does(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        let path = "/$export?_type=Patient";
        let accepted = [
            vec![ACCEPT_FHIR, RESPOND_ASYNC],
            // Medplum's Accept.
            vec![("Accept", "application/fhir+json, */*; q=0.1"), RESPOND_ASYNC],
            vec![("Accept", "text/plain;q=0.5, application/fhir+json;q=0.9"), ("Prefer", "handling=lenient, respond-async")],
        ];
        for headers in accepted {
            for method in ["GET", "POST"] {
                assert_eq!(bare_kick_off(&app, method, path, &headers, "").await, 202, "{method} {headers:?}");
            }
        }
        let refused: [(Headers, u16, &str); 7] = [
            (&[RESPOND_ASYNC], 400, "the Accept header is missing; a kick-off must send Accept: application/fhir+json"),
            (&[], 400, "Accept: application/fhir+json"),
            (&[("Accept", "text/html"), RESPOND_ASYNC], 406, "send Accept: application/fhir+json"),
            (&[("Accept", "application/json"), RESPOND_ASYNC], 406, "send Accept: application/fhir+json"),
            (&[("Accept", "*/*"), RESPOND_ASYNC], 406, "send Accept: application/fhir+json"),
            (&[ACCEPT_FHIR], 400, "the Prefer header is missing; a kick-off must send Prefer: respond-async"),
            (&[ACCEPT_FHIR, ("Prefer", "return=representation")], 400, "must send Prefer: respond-async"),
        ];
        for (headers, status, needle) in refused {
            for method in ["GET", "POST"] {
                assert_eq!(bare_kick_off(&app, method, path, headers, needle).await, status, "{method} {headers:?}");
            }
        }
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs").await, 6, "one job per accepted kick-off");

        // kickoff_headers = "lenient": today's tolerant behaviour.
        let app = spawn_app_with(backend, AppOptions { kickoff_headers: KickoffHeaders::Lenient, ..Default::default() }).await;
        seed(&app).await;
        for headers in [vec![], vec![("Accept", "application/json")], vec![("Accept", "*/*"), ("Prefer", "handling=lenient")]] {
            assert_eq!(bare_kick_off(&app, "GET", path, &headers, "").await, 202, "{headers:?}");
        }
        assert_eq!(bare_kick_off(&app, "GET", path, &[("Accept", "text/html")], "application/fhir+json").await, 406);
        // reqwest's own default Accept (*/*) is fine here, and its manifest arrives.
        let response = kick_off_with(&app, Method::GET, path, &[]).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let manifest = app.wait_for_manifest(response.headers()[header::CONTENT_LOCATION].to_str().unwrap()).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Patient", &["p1", "p2", "p3"])]));
    }

    async fn since_in_the_future_is_refused(backend: Backend) {
        let app = spawn_app(backend).await;
        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        for path in [format!("/$export?_since={future}"), "/Patient/$export?_since=2999-01-01".to_owned()] {
            assert_outcome(app.kick_off_raw(&path).await, StatusCode::BAD_REQUEST, "_since").await;
        }
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        assert_eq!(app.kick_off_raw(&format!("/$export?_since={past}")).await.status(), StatusCode::ACCEPTED);
    }

    async fn control_characters_and_out_of_range_instants_are_refused_before_they_reach_sql(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        let cases: &[(&str, &str, &str)] = &[
            ("/$export?_type=Patient&_typeFilter=Patient%3Fname%3Dx%00y", "respond-async", "_typeFilter"),
            ("/$export?_type=Patient&_typeFilter=Patient%3Fname%3Dx%2500y", LENIENT, "control character"),
            ("/$export?_type=Patient&_typeFilter=Patient%3Fna%2500me%3Dx", LENIENT, "control character"),
            ("/$export?_type=Pat%00ient", "respond-async", "_type"),
            ("/$export?fo%00o=bar", LENIENT, "fo\\0o"),
            ("/$export?_since=0000-01-01T00:00:00Z", "respond-async", "_since"),
            ("/$export?_until=0000-12-31", LENIENT, "_until"),
            ("/$export?_type=Patient&_typeFilter=Patient%3F_lastUpdated%3Dgt0000-01-01", LENIENT, "0001 to 9999"),
            ("/$export?_type=Observation&_typeFilter=Observation%3Fdate%3D2020-01-01T%C3%A912345", LENIENT, "not a FHIR date"),
            ("/$export?_type=Observation&_typeFilter=Observation%3Fdate%3D2020-01-01T%25C3%25A912345", "respond-async", "not a FHIR date"),
        ];
        for (path, prefer, needle) in cases {
            assert_outcome(app.kick_off_prefer_raw(path, prefer).await, StatusCode::BAD_REQUEST, needle).await;
        }
        let body = json!({"resourceType": "Parameters", "parameter": [{"name": "_since", "valueInstant": "2020-01-01T00:00:00Z\u{0}"}]});
        assert_outcome(app.kick_off_post_raw("/$export", &body, "respond-async").await, StatusCode::BAD_REQUEST, "_since").await;
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs").await, 0, "no job was created");

        // The ends of the range are fine, on Postgres too (its bounds are widened by a margin).
        let path = "/$export?_type=Patient&_since=0001-01-01T00:00:00Z&_typeFilter=Patient%3F_lastUpdated%3Dge0001-01-01%26_lastUpdated%3Dle9999-12-31";
        let manifest = app.wait_for_manifest(&app.kick_off(path).await).await;
        assert_eq!(ids_by_type(&app, &manifest).await, expect(&[("Patient", &["p1", "p2", "p3"])]));
    }

    async fn an_open_server_says_its_files_need_no_access_token(backend: Backend) {
        let app = spawn_app(backend).await;
        seed(&app).await;
        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=Patient").await).await;
        assert_eq!(manifest["requiresAccessToken"], json!(false));
        let response = app.client.get(manifest["output"][0]["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "and indeed serves them without one");
    }
}

/// The status URL of a 202 kick-off.
async fn accepted_status_url(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap());
    response.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned()
}
