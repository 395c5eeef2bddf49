//! HTTP fuzzing (issue 17): a few thousand generated requests around the real routes, with
//! mangled query strings, headers and bodies, against the real server on each backend. No answer
//! may be a 5xx, every error must be an OperationOutcome, and every export accepted along the way
//! must end once the queue is drained. The generator is seeded: a failure prints the seed, and
//! `FUZZ_SEED=<seed>` replays it (`FUZZ_REQUESTS` sets how many requests).

use std::time::{Duration, Instant};

use bulkfhir::auth::settings::AuthSettings;
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use reqwest::{header, Method, StatusCode, Url};
use serde_json::{json, Value};

use crate::helpers::{backend_tests, spawn_app_with, AppOptions, TestApp};

/// One generated request: method, path and query below the server's root, headers, body.
#[derive(Debug, Clone)]
struct FuzzRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

const NAMES: [&str; 14] = [
    "_type", "_typeFilter", "_since", "_until", "_outputFormat", "_container", "_elements", "patient",
    "includeAssociatedData", "organizeOutputBy", "allowPartialManifests", "_till", "foo", "_count",
];

/// Values near what each parameter takes, and garbage (already as they go in a URL).
fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Patient", "Observation", "Patient,Observation", "Observation%2CCondition", "Bogus", "Organization", "",
            "2020-01-01", "2020-01-01T00:00:00Z", "2020-01-01T00:00:00%2B05:00", "0000-01-01T00:00:00Z", "2999-01-01",
            "2020-01-01T%C3%A912345", "2020-01-01T%E912345", "ndjson", "application%2Ffhir%2Bndjson", "text/csv",
            "my-exports", "..%2Fetc", "Patient/p1", "Patient%2Fp2,Patient/nobody", "Observation/o1", "id,meta",
            "Patient.name", "true", "yes", "LatestProvenanceResources", "RelevantProvenanceResources",
            "Observation%3Fdate%3Dge2000", "Observation%3Fdate%3D2020-01-01T%25C3%25A912345",
            "Observation%3Fcode%3Da%252Cb,Patient%3Fgender%3Dmale", "Observation%3Fpatient.name%3Dx",
            "Observation%3F_lastUpdated%3Dgt0000-01-01", "Observation%3Fcode%3Amissing%3Dmaybe",
            "Observation%3Fvalue-quantity%3Dap5.4%7Chttp%3A%2F%2Funitsofmeasure.org%7Cmmol%2FL",
            "Observation%3Fsubject%3APatient%3Dp1", "Patient%3Fbirthdate%3Dlt1990%26gender%3Dfemale",
            "Observation%3F%3D", "%3F", "Observation%3Fdate", "%00", "a%00b", "%FF", "%", "%G1", "%C3", "+",
            "%E2%80%AE", "\u{1F600}", "Observation%3Fcode%3Da%2500",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9%,:/?=&.+-]{0,24}",
        1 => prop::sample::select(vec![100usize, 5_000, 20_000]).prop_map(|n| "x".repeat(n)),
    ]
}

fn query_string() -> impl Strategy<Value = String> {
    // Valid pairs too, so that many kick-offs pass and their exports run.
    let valid = prop::sample::select(vec![
        "_type=Patient", "_type=Observation,Patient", "_since=2020-01-01T00:00:00Z", "_until=2030-01-01",
        "_typeFilter=Observation%3Fdate%3Dge2000", "_typeFilter=Patient%3Fgender%3Dfemale", "_outputFormat=ndjson",
        "_elements=id,meta", "includeAssociatedData=LatestProvenanceResources", "allowPartialManifests=true",
        "_typeFilter=Observation%3Fvalue-quantity%3Dgt5%26code%3D8302-2", "organizeOutputBy=Patient",
    ]);
    let pair = prop_oneof![
        4 => valid.prop_map(str::to_owned),
        4 => (prop::sample::select(NAMES.to_vec()), query_value()).prop_map(|(n, v)| format!("{n}={v}")),
        1 => "[a-zA-Z0-9%_=&;,+-]{0,16}",
    ];
    prop::collection::vec(pair, 0..5).prop_map(|pairs| if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) })
}

fn kick_off_path() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g1/$export", "/fhir/Group/nobody/$export", "/fhir/Group/a%20b/$export", "/fhir/Group/%FF/$export", "/fhir/$export/"])
        .prop_map(str::to_owned)
}

/// Paths around the other routes; `{job}` becomes a real job id when one is known.
fn other_path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "/fhir/metadata", "/fhir/_jobs/{job}", "/fhir/_jobs/{job}/files/Patient-1.ndjson", "/fhir/_jobs/{job}/files/..%2F..%2Fetc",
        "/fhir/_jobs/{job}/files/{file}", "/fhir/_jobs/not-a-uuid", "/fhir/_jobs/00000000-0000-0000-0000-000000000000",
        "/fhir/Patient/p1", "/fhir/Patient/p2", "/fhir/Observation/o1", "/fhir/Patient/nobody", "/fhir/Bogus/x",
        "/fhir/Patient/a%20b", "/fhir/Patient", "/fhir/Observation", "/fhir", "/fhir/", "/fhir/auth/token",
        "/fhir/.well-known/smart-configuration", "/.well-known/smart-configuration", "/", "/nothing", "/fhir/Patient/p1/_history/1",
    ])
    .prop_map(str::to_owned)
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let accept = prop_oneof![4 => Just("application/fhir+json"), 1 => prop::sample::select(vec![
        "application/fhir+json", "application/json", "*/*", "text/html", "application/fhir+json;q=0", "application/fhir+json, */*; q=0.1",
        "application/fhir+ndjson", "", "application/fhir+json; q=abc",
    ])];
    let prefer = prop_oneof![4 => prop::sample::select(vec!["respond-async", "respond-async, handling=lenient"]), 1 => prop::sample::select(vec![
        "respond-async", "respond-async, handling=lenient", "handling=lenient", "respond-async, handling=sloppy",
        "respond-async; handling=strict", "return=minimal", "", "respond-async, handling=\"lenient\"",
    ])];
    let content_type = prop::sample::select(vec!["application/fhir+json", "application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]);
    (prop::option::weighted(0.8, accept), prop::option::weighted(0.8, prefer), prop::option::weighted(0.5, content_type)).prop_map(|(a, p, c)| {
        let mut headers = Vec::new();
        headers.extend(a.map(|v| ("accept".to_owned(), v.to_owned())));
        headers.extend(p.map(|v| ("prefer".to_owned(), v.to_owned())));
        headers.extend(c.map(|v| ("content-type".to_owned(), v.to_owned())));
        headers
    })
}

/// Values a resource element or a parameter value may hold.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!("2020-01-01"), json!("2020-01-01T10:00:00Z"), json!("0000-01-01"), json!("9999-12-31T23:59:59Z"),
            // Refused at PUT by validation; once stored, it panicked date filters (issue 17).
            json!("2020-01-01T\u{e9}12345"), json!("2020-13-45"), json!(""), json!("a\u{0}b"), json!("\u{1F600}"), json!(null), json!(true), json!(1e300),
            json!(-0.0), json!(12345678901234567890u64), json!([]), json!({}), json!({"reference": "Patient/p1"}),
            json!({"reference": "urn:uuid:nothing"}), json!([{"system": "http://loinc.org", "code": "8302-2"}]),
        ]),
        "[a-zA-Z0-9 :/.|-]{0,12}".prop_map(Value::String),
    ]
}

fn resource() -> impl Strategy<Value = Value> {
    let t = prop::sample::select(vec!["Patient", "Observation", "Group", "Provenance", "Bogus", ""]);
    let id = prop::sample::select(vec![json!("p1"), json!("p2"), json!("o1"), json!("fz"), json!("a b"), json!(5), json!(null)]);
    let key = prop::sample::select(vec![
        "gender", "birthDate", "status", "code", "subject", "effectiveDateTime", "valueQuantity", "member", "target",
        "meta", "name", "managingOrganization", "recorded", "issued", "_birthDate",
    ]);
    (t, prop::option::of(id), prop::collection::vec((key, odd_value()), 0..5)).prop_map(|(t, id, elements)| {
        let mut map: serde_json::Map<String, Value> = elements.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        map.insert("resourceType".into(), json!(t));
        if let Some(id) = id {
            map.insert("id".into(), id);
        }
        Value::Object(map)
    })
}

fn parameters() -> impl Strategy<Value = Value> {
    let value_key = prop::sample::select(vec!["valueString", "valueInstant", "valueBoolean", "valueReference", "valueCode", "value"]);
    let entry = prop_oneof![
        4 => (prop::sample::select(NAMES.to_vec()), value_key, query_value(), prop::option::weighted(0.3, odd_value())).prop_map(|(n, k, text, odd)| {
            let text = percent_encoding::percent_decode_str(&text).decode_utf8_lossy().into_owned();
            match odd {
                Some(odd) => json!({"name": n, k: odd}),
                None if k == "valueReference" => json!({"name": n, k: {"reference": text}}),
                None => json!({"name": n, k: text}),
            }
        }),
        1 => odd_value().prop_map(|v| json!({"name": v})),
        1 => odd_value(),
    ];
    prop::collection::vec(entry, 0..4).prop_map(|entries| json!({"resourceType": "Parameters", "parameter": entries}))
}

fn bundle() -> impl Strategy<Value = Value> {
    let entry = (resource(), prop::sample::select(vec!["PUT", "POST", "DELETE", "GET", "PATCH"]), prop::sample::select(vec!["Patient/p1", "Patient", "Observation/fz", "Bogus/1", "Patient/a/b", ""]), prop::option::of(Just("urn:uuid:11111111-1111-1111-1111-111111111111")))
        .prop_map(|(resource, method, url, full_url)| json!({"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}}));
    (prop::sample::select(vec!["transaction", "batch", "collection", ""]), prop::collection::vec(entry, 0..4))
        .prop_map(|(kind, entries)| json!({"resourceType": "Bundle", "type": kind, "entry": entries}))
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        2 => parameters().prop_map(|v| Some(v.to_string().into_bytes())),
        2 => resource().prop_map(|v| Some(v.to_string().into_bytes())),
        1 => bundle().prop_map(|v| Some(v.to_string().into_bytes())),
        1 => prop::sample::select(vec!["", "   ", "{", "[1,2]", "null", "\"x\"", "{\"resourceType\":\"Parameters\",\"parameter\":{}}", "\u{0}", "{\"a\":1e999}"])
            .prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
    ]
}

fn request() -> impl Strategy<Value = FuzzRequest> {
    // Mostly the methods each route takes, so most requests get past routing.
    let kick_off = (prop_oneof![Just("GET"), Just("POST")], (kick_off_path(), query_string()).prop_map(|(p, q)| format!("{p}{q}")));
    let other_method = prop_oneof![12 => Just("GET"), 1 => Just("POST"), 1 => Just("PUT"), 1 => Just("DELETE"), 1 => Just("HEAD")];
    let other = (other_method, prop_oneof![3 => other_path(), 1 => (other_path(), query_string()).prop_map(|(p, q)| format!("{p}{q}"))]);
    // Methods a route does not take: 405 OperationOutcomes.
    let unsupported = (prop::sample::select(vec!["PATCH", "OPTIONS", "PUT"]), kick_off_path());
    let target = prop_oneof![6 => kick_off, 5 => other, 1 => unsupported].prop_map(|(m, p)| (m, p, None));
    // Writes whose body fits the URL, so odd values are stored for the exports to read.
    // `2020-01-01T\u{e9}12345`, stored, once panicked the export of any date _typeFilter and
    // the job stayed running: this test found it in one run of 2000 requests.
    let dates = prop::sample::select(vec!["2020-01-01T\u{e9}12345", "2020-01-01T10:00:00Z", "2020-13-45", "0000-01-01", "2020", "2020-01-01T25:00:00Z"]);
    let write = (prop::sample::select(vec!["Patient", "Observation"]), prop::sample::select(vec!["p1", "o1", "fz"]), resource(), prop::option::of(dates))
        .prop_map(|(t, id, mut body, date)| {
            body["resourceType"] = json!(t);
            body["id"] = json!(id);
            if let Some(date) = date {
                body[if t == "Patient" { "birthDate" } else { "effectiveDateTime" }] = json!(date);
            }
            ("PUT", format!("/fhir/{t}/{id}"), Some(body.to_string().into_bytes()))
        });
    (prop_oneof![8 => target, 1 => write], headers(), body()).prop_map(|((method, path, fitting), headers, body)| FuzzRequest {
        method: method.to_owned(),
        path,
        headers,
        body: fitting.or(body),
    })
}

/// The requests of one run, from its seed.
fn generate(seed: u64, count: usize) -> Vec<FuzzRequest> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = request();
    (0..count).map(|_| strategy.new_tree(&mut runner).expect("a request").current()).collect()
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(17, |d| d.as_nanos() as u64)
    })
}

/// A few resources for the exports to read, Group g1 among them.
async fn load(app: &TestApp) {
    for resource in [
        json!({"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-02-03"}),
        json!({"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1999"}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-01-01T10:00:00+01:00", "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}),
        json!({"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p2"},
            "effectivePeriod": {"start": "2019-12-30", "end": "2020-01-02"}}),
        json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true, "member": [{"entity": {"reference": "Patient/p1"}}]}),
        json!({"resourceType": "Provenance", "id": "v1", "target": [{"reference": "Patient/p1"}], "recorded": "2020-01-01T00:00:00Z"}),
    ] {
        assert!(app.put(&resource).await.status().is_success());
    }
}

/// What is wrong with one response, if anything.
async fn check(request: &FuzzRequest, response: reqwest::Response) -> Result<Option<String>, String> {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let location = response.headers().get(header::CONTENT_LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.bytes().await.map_err(|e| format!("the body could not be read: {e}"))?;
    if status.is_server_error() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    // The token endpoint answers in OAuth's error format (RFC 6749 §5.2), not FHIR's.
    if status.is_client_error() && !request.path.starts_with("/fhir/auth/token") {
        if content_type != "application/fhir+json" {
            return Err(format!("{status} with content type '{content_type}': {}", String::from_utf8_lossy(&body)));
        }
        if request.method == "HEAD" {
            return Ok(None);
        }
        let outcome: Value = serde_json::from_slice(&body).map_err(|e| format!("{status} body is not JSON ({e})"))?;
        if outcome["resourceType"] != "OperationOutcome" || outcome["issue"][0]["diagnostics"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{status} body is not an OperationOutcome with diagnostics: {outcome}"));
        }
    }
    Ok(if status == StatusCode::ACCEPTED { location } else { None })
}

backend_tests! {
    async fn fuzzed_requests_get_no_5xx_only_operation_outcomes_and_every_export_ends(backend: Backend) {
        // Limits high enough that kick-offs reach the exports instead of stopping at 429.
        let auth = AuthSettings { max_concurrent_exports: 10_000, status_polls_per_second: 100_000, ..AuthSettings::default() };
        let app = spawn_app_with(backend, AppOptions { auth, ..AppOptions::default() }).await;
        load(&app).await;
        let seed = seed();
        let count = std::env::var("FUZZ_REQUESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
        println!("fuzz seed {seed} ({count} requests; FUZZ_SEED={seed} replays them)");
        let started = Instant::now();
        let (mut failures, mut jobs, mut statuses) = (Vec::new(), Vec::<String>::new(), std::collections::BTreeMap::<u16, usize>::new());
        for (i, request) in generate(seed, count).into_iter().enumerate() {
            // Real job ids and file names where the path asks for them.
            let job = jobs.get(i % jobs.len().max(1)).and_then(|url| url.rsplit('/').next()).unwrap_or("00000000-0000-0000-0000-000000000001");
            let path = request.path.replace("{job}", job).replace("{file}", "Patient-1.ndjson");
            let Ok(url) = Url::parse(&format!("{}{path}", app.base_url.trim_end_matches("/fhir"))) else { continue };
            let mut builder = app.client.request(Method::from_bytes(request.method.as_bytes()).unwrap(), url).timeout(Duration::from_secs(30));
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.unwrap_or_else(|e| panic!("seed {seed}, request {i} {request:?}: no response: {e}"));
            *statuses.entry(response.status().as_u16()).or_default() += 1;
            match check(&request, response).await {
                Ok(Some(status_url)) if status_url.contains("/_jobs/") => jobs.push(status_url),
                Ok(_) => {}
                Err(problem) => {
                    let body = request.body.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    let line = format!("request {i}: {} {path} {:?} body {body:?}: {problem}", request.method, request.headers);
                    failures.push(line.chars().take(600).collect::<String>());
                }
            }
        }
        println!("{count} requests in {:?}: statuses {statuses:?}; {} exports accepted", started.elapsed(), jobs.len());
        assert!(failures.is_empty(), "seed {seed}: {} bad responses:\n{}", failures.len(), failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n"));

        // Every accepted export ends, completed or cancelled (by a fuzzed DELETE), never failed
        // or left running; the test's worker drains beside the app's two (on Postgres they once
        // deadlocked claiming against completing, issue 17).
        app.drain().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while app.db.count("SELECT count(*) FROM export_jobs WHERE status IN ('queued', 'running')").await > 0 {
            assert!(Instant::now() < deadline, "seed {seed}: exports still queued or running a minute on");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for status_url in &jobs {
            let response = app.client.get(status_url).send().await.unwrap();
            let status = response.status();
            assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "seed {seed}: {status_url}: {status} {}", response.text().await.unwrap());
        }
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE status = 'failed'").await, 0, "seed {seed}: failed exports");
        println!("all {} exports ended {:?} after the start", jobs.len(), started.elapsed());
    }
}
