//! The HTTP edge refuses as FHIR does, with OperationOutcomes, and gives up on slow or oversized
//! requests early: raw TCP where a client library would not misbehave on purpose.

use std::time::{Duration, Instant};

use reqwest::{header, StatusCode};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_with, AppOptions, TestApp};

/// The server's address, from its base URL.
fn address(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").trim_end_matches("/fhir").to_owned()
}

/// Writes `request` and reads what the server says until it closes or `wait` passes.
async fn raw(app: &TestApp, request: &str, wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address(app)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = started + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buffer[..n]);
                // A whole response with a body is enough.
                let text = String::from_utf8_lossy(&answer);
                if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                    break;
                }
            }
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}

backend_tests! {
    async fn framework_errors_are_operation_outcomes(backend: Backend) {
        let app = spawn_app(backend).await;
        let job = uuid::Uuid::new_v4();
        let wrong_method = app.client.patch(app.url(&format!("/_jobs/{job}"))).send().await.unwrap();
        assert!(wrong_method.headers()[header::ALLOW].to_str().unwrap().contains("GET"));
        assert_outcome(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "PATCH is not allowed").await;
        assert_outcome(app.client.get(app.url("/no/such/route/here")).send().await.unwrap(), StatusCode::NOT_FOUND, "no such").await;
        let long = format!("/Patient/$export?_type={}", "Patient,".repeat(2000));
        assert_outcome(app.client.get(app.url(&long)).send().await.unwrap(), StatusCode::URI_TOO_LONG, "URL is longer").await;
        let bad_path = app.client.get(app.url("/_jobs/%FF")).send().await.unwrap();
        let status = bad_path.status();
        assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND, "{status}");
        assert_outcome(bad_path, status, "").await;
    }

    async fn a_download_refusing_every_coding_gets_a_406_outcome(backend: Backend) {
        let app = spawn_app(backend).await;
        assert!(app.put(&json!({"resourceType": "Patient", "id": "p1"})).await.status().is_success());
        let status_url = app.kick_off("/$export?_type=Patient").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        let file = manifest["output"][0]["url"].as_str().unwrap().to_owned();
        let refused = app.client.get(&file).header(header::ACCEPT_ENCODING, "identity;q=0").send().await.unwrap();
        assert_outcome(refused, StatusCode::NOT_ACCEPTABLE, "Accept-Encoding").await;
        // With gzip offered, gzip it is.
        let gzip = app.client.get(&file).header(header::ACCEPT_ENCODING, "gzip, identity;q=0").send().await.unwrap();
        assert_eq!(gzip.status(), StatusCode::OK);
        assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
    }

    async fn a_declared_body_over_the_limit_is_refused_at_once(backend: Backend) {
        let app = spawn_app(backend).await;
        let request = "PUT /fhir/Patient/x HTTP/1.1\r\nHost: test\r\nContent-Type: application/fhir+json\r\nContent-Length: 99999999\r\n\r\n";
        let (answer, took) = raw(&app, request, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("application/fhir+json") && answer.contains("\"OperationOutcome\""), "{answer}");
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
    }

    async fn half_sent_headers_are_dropped_after_the_header_timeout(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { header_read_timeout_seconds: 1, ..Default::default() }).await;
        let (_, took) = raw(&app, "GET /fhir/metadata HTTP/1.1\r\nHost: test\r\n", Duration::from_secs(20)).await;
        assert!(took < Duration::from_secs(5), "the connection was held {took:?}");
        // A whole request on a fresh connection is still served.
        let (answer, _) = raw(&app, "GET /livez HTTP/1.1\r\nHost: test\r\n\r\n", Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
