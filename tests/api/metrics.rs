//! `/metrics` after an export, from a server process of its own (metrics are per process, and
//! the other tests of this binary export at the same time), with its log: the kick-off's log
//! line carries the request id and the job id.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{backend_tests, TestDb};

/// The server process, killed when the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

/// One sample line: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().unwrap())
        })
        .collect()
}

/// The value of the sample with this name whose labels include all of `labels` (0 if none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

backend_tests! {
    async fn a_scrape_after_an_export_counts_what_it_wrote(backend: Backend) {
        let db = TestDb::create(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let mut lines: Vec<String> = (0..3).map(|i| json!({"resourceType": "Patient", "id": format!("p{i}")}).to_string()).collect();
        lines.extend((0..5).map(|i| {
            json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/p0"}}).to_string()
        }));
        let data = dir.path().join("data.ndjson");
        std::fs::write(&data, lines.join("\n")).unwrap();
        let loaded = Command::new(env!("CARGO_BIN_EXE_bulkfhir")).arg("load").arg(&data).env("DATABASE_URL", &db.url).output().unwrap();
        assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.path().join("server.log");
        let _server = Server(
            Command::new(env!("CARGO_BIN_EXE_bulkfhir"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--output-dir"])
                .arg(dir.path().join("exports"))
                .env("DATABASE_URL", &db.url)
                .env("BULKFHIR_LOG_FORMAT", "json")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .unwrap(),
        );
        let (client, root) = (Client::new(), format!("http://127.0.0.1:{port}"));
        let started = Instant::now();
        while client.get(format!("{root}/readyz")).send().await.map(|r| r.status()).ok() != Some(StatusCode::OK) {
            assert!(started.elapsed() < Duration::from_secs(60), "the server did not get ready: {}", std::fs::read_to_string(&log).unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let kick_off = client.get(format!("{root}/fhir/$export?_type=Patient,Observation"))
            .header("accept", "application/fhir+json").header("prefer", "respond-async").header("x-request-id", "req-7f3a").send().await.unwrap();
        assert_eq!(kick_off.status(), StatusCode::ACCEPTED);
        let status_url = kick_off.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned();
        let manifest: Value = loop {
            let response = client.get(&status_url).send().await.unwrap();
            if response.status() == StatusCode::OK {
                break response.json().await.unwrap();
            }
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            assert!(started.elapsed() < Duration::from_secs(120), "the export did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut expected: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for file in manifest["output"].as_array().unwrap() {
            let bytes = client.get(file["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap().len();
            let entry = expected.entry(file["type"].as_str().unwrap().to_owned()).or_default();
            entry.0 += file["count"].as_f64().unwrap();
            entry.1 += bytes as f64;
        }
        assert_eq!(expected.keys().collect::<Vec<_>>(), ["Observation", "Patient"]);
        assert_eq!(expected["Patient"].0, 3.0);

        let scrape = client.get(format!("{root}/metrics")).send().await.unwrap();
        assert_eq!(scrape.status(), StatusCode::OK);
        assert!(scrape.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
        let samples = parse(&scrape.text().await.unwrap());
        for (resource_type, (count, bytes)) in &expected {
            assert_eq!(value(&samples, "bulkfhir_export_resources_written_total", &[("type", resource_type)]), *count, "{resource_type}");
            assert_eq!(value(&samples, "bulkfhir_export_bytes_written_total", &[("type", resource_type)]), *bytes, "{resource_type}");
        }
        assert_eq!(value(&samples, "bulkfhir_exports_started_total", &[("level", "system")]), 1.0);
        assert_eq!(value(&samples, "bulkfhir_export_jobs", &[("level", "system"), ("status", "completed")]), 1.0);
        assert_eq!(value(&samples, "bulkfhir_export_task_seconds_count", &[("outcome", "done")]), 2.0, "one task per type");
        let polls = value(&samples, "bulkfhir_http_requests_total", &[("method", "GET"), ("route", "/fhir/_jobs/{id}"), ("status", "200")]);
        assert_eq!(polls, 1.0, "the route is the pattern, not the URL");
        assert_eq!(value(&samples, "bulkfhir_http_requests_total", &[("route", "/fhir/_jobs/{id}/files/{name}")]), 2.0);
        assert!(value(&samples, "bulkfhir_http_request_duration_seconds_count", &[("route", "/fhir/$export")]) == 1.0);
        assert!(samples.iter().any(|(n, l, _)| n == "bulkfhir_http_request_duration_seconds_bucket" && l.get("le").is_some()));

        // The kick-off's log line carries the request id and the job id.
        let job = status_url.rsplit('/').next().unwrap().to_owned();
        let text = std::fs::read_to_string(&log).unwrap();
        let created = text.lines().find(|l| l.contains("export job created")).unwrap_or_else(|| panic!("no kick-off line in {text}"));
        assert!(created.contains("req-7f3a") && created.contains(&job), "{created}");
    }
}
