//! Races of several workers, nodes and clients on one database (issue 17): claims against
//! completions, a burst of kick-offs against the per-client limit, scopes on every path that
//! lists a file, a kick-off that fails after recording its job, and a database migrated with an
//! earlier text of a migration.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use bulkfhir::{startup::Application, store::Stores};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::{
    moto::Moto,
    helpers::{assert_outcome, backend_tests, settings, spawn_app_with, AppOptions, Backend, TestDb},
    smart::{access_token, client, export_as, kick_off_as, spawn_secured, TestKey},
};

/// Deadlocks Postgres detected in the test's database so far (0 on SQLite, which has none).
async fn deadlocks(db: &TestDb) -> i64 {
    if db.backend != Backend::Postgres {
        return 0;
    }
    // A backend hands its counts to the shared statistics when idle, within 10 s.
    tokio::time::sleep(Duration::from_secs(11)).await;
    db.count("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").await
}

fn types_of(manifest: &Value) -> BTreeSet<String> {
    manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap().to_owned()).collect()
}

backend_tests! {
    /// Three nodes with 12 workers run 100 small eight-type exports at once: every task runs
    /// once (a completion that lost a deadlock used to run again only after its lease, 30 s
    /// later), and Postgres saw no deadlock.
    async fn many_small_exports_on_three_nodes_finish_without_a_rerun_or_a_deadlock(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 4, lease_seconds: 30, ..Default::default() }).await;
        let _b = app.spawn_node(4).await;
        let _c = app.spawn_node(4).await;
        let types = ["Patient", "Observation", "Condition", "Encounter", "Procedure", "Immunization", "AllergyIntolerance", "CarePlan"];
        for n in 0..3 {
            for t in types {
                let id = if t == "Patient" { format!("p{n}") } else { format!("{}{n}", t.to_lowercase()) };
                let mut resource = json!({"resourceType": t, "id": id});
                // Each type's own element that ties it to its patient.
                match t {
                    "Patient" => {}
                    "Immunization" | "AllergyIntolerance" => resource["patient"] = json!({"reference": format!("Patient/p{n}")}),
                    _ => resource["subject"] = json!({"reference": format!("Patient/p{n}")}),
                }
                assert_eq!(app.put(&resource).await.status(), StatusCode::CREATED, "{resource}");
            }
        }
        let exports = 100;
        let started = Instant::now();
        let path = format!("/$export?_type={}", types.join(","));
        let status_urls = futures::future::join_all((0..exports).map(|_| app.kick_off(&path))).await;
        let manifests = futures::future::join_all(status_urls.iter().map(|url| app.wait_for_manifest(url))).await;
        let took = started.elapsed();

        for manifest in &manifests {
            assert_eq!(types_of(manifest).len(), types.len(), "{manifest}");
        }
        assert_eq!(app.db.count("SELECT count(*) FROM export_tasks").await, exports * types.len() as i64);
        let reruns = app.db.count("SELECT count(*) FROM export_tasks WHERE attempts <> 1").await;
        assert_eq!(reruns, 0, "{reruns} tasks ran more than once; the exports took {took:?}");
        assert_eq!(deadlocks(&app.db).await, 0, "Postgres detected deadlocks");
    }

    /// 50 simultaneous kick-offs with one token against a limit of 4: exactly 4 accepted, the
    /// rest 429 with Retry-After, and exactly 4 jobs recorded.
    async fn a_burst_of_kick_offs_never_passes_the_concurrent_export_limit(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("burst", &[&key], &["system/*.*"])], |o| {
            o.workers = 0; // jobs stay queued
            o.auth.max_concurrent_exports = 4;
        })
        .await;
        let token = access_token(&app, &key, "burst", "system/*.*").await;
        let write = app.client.put(app.url("/Patient/p")).bearer_auth(&token).json(&json!({"resourceType": "Patient", "id": "p"})).send().await.unwrap();
        assert_eq!(write.status(), StatusCode::CREATED);

        let responses = futures::future::join_all((0..50).map(|_| kick_off_as(&app, &token, "/$export"))).await;
        let accepted = responses.iter().filter(|r| r.status() == StatusCode::ACCEPTED).count();
        let refused: Vec<_> = responses.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).collect();
        assert_eq!((accepted, refused.len()), (4, 46), "{:?}", responses.iter().map(|r| r.status()).collect::<Vec<_>>());
        assert!(refused.iter().all(|r| r.headers().contains_key(header::RETRY_AFTER)));
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs").await, 4);
    }

    /// `includeAssociatedData` adds Provenance: a token without Provenance's scope is refused
    /// (as a `_type` outside its scopes is), and a manifest lists only the files the polling
    /// token may read now.
    async fn associated_data_and_manifests_need_the_scopes_of_every_listed_type(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("scoped", &[&key], &["system/*.*"])], |_| {}).await;
        let writer = access_token(&app, &key, "scoped", "system/*.*").await;
        for resource in [
            json!({"resourceType": "Patient", "id": "p"}),
            json!({"resourceType": "Provenance", "id": "prov", "recorded": "2020-01-01T00:00:00Z", "target": [{"reference": "Patient/p"}],
                   "agent": [{"who": {"reference": "Patient/p"}}]}),
        ] {
            let url = app.url(&format!("/{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap()));
            assert_eq!(app.client.put(url).bearer_auth(&writer).json(&resource).send().await.unwrap().status(), StatusCode::CREATED);
        }

        let patients_only = access_token(&app, &key, "scoped", "system/Patient.read").await;
        for path in [
            "/$export?_type=Patient&includeAssociatedData=RelevantProvenanceResources",
            "/Patient/$export?includeAssociatedData=LatestProvenanceResources",
        ] {
            assert_outcome(kick_off_as(&app, &patients_only, path).await, StatusCode::FORBIDDEN, "Provenance").await;
        }
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs").await, 0);

        let both = access_token(&app, &key, "scoped", "system/Patient.read system/Provenance.read").await;
        let (status_url, manifest) = export_as(&app, &both, "/$export?_type=Patient&includeAssociatedData=RelevantProvenanceResources").await;
        assert_eq!(types_of(&manifest), ["Patient", "Provenance"].map(String::from).into());
        // The same job polled with the narrower token lists only what that token may read.
        let narrowed: Value = app.client.get(&status_url).bearer_auth(&patients_only).send().await.unwrap().json().await.unwrap();
        assert_eq!(types_of(&narrowed), ["Patient"].map(String::from).into());
        let provenance_url = manifest["output"].as_array().unwrap().iter().find(|o| o["type"] == "Provenance").unwrap()["url"].as_str().unwrap();
        let refused = app.client.get(provenance_url).bearer_auth(&patients_only).send().await.unwrap();
        assert_outcome(refused, StatusCode::FORBIDDEN, "Provenance").await;
    }

    /// On S3, where the manifest hands out presigned URLs that need no token, a URL is minted
    /// only for the files the polling token may read.
    async fn presigned_urls_are_minted_only_for_types_the_token_may_read(backend: Backend) {
        let moto = Moto::start().await;
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("scoped", &[&key], &["system/*.*"])], |o| o.output = moto.settings()).await;
        let writer = access_token(&app, &key, "scoped", "system/*.*").await;
        for resource in [json!({"resourceType": "Patient", "id": "p"}), json!({"resourceType": "Observation", "id": "o", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p"}})] {
            let url = app.url(&format!("/{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap()));
            assert_eq!(app.client.put(url).bearer_auth(&writer).json(&resource).send().await.unwrap().status(), StatusCode::CREATED);
        }
        let both = access_token(&app, &key, "scoped", "system/Patient.read system/Observation.read").await;
        let (status_url, manifest) = export_as(&app, &both, "/$export?_type=Patient,Observation").await;
        assert_eq!(types_of(&manifest), ["Observation", "Patient"].map(String::from).into());

        let patients_only = access_token(&app, &key, "scoped", "system/Patient.read").await;
        let narrowed: Value = app.client.get(&status_url).bearer_auth(&patients_only).send().await.unwrap().json().await.unwrap();
        assert_eq!(types_of(&narrowed), ["Patient"].map(String::from).into());
        let text = narrowed.to_string();
        assert!(text.contains("X-Amz-Signature=") && !text.contains("Observation-"), "{narrowed}");
    }

    /// A kick-off that fails after its job is recorded (here: a base URL with a control
    /// character, which cannot be sent in a header) answers with an OperationOutcome and leaves
    /// no job behind.
    async fn a_kick_off_that_fails_after_recording_its_job_leaves_no_job(backend: Backend) {
        let db = TestDb::create(backend).await;
        let output = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = settings(&db.url, output.path(), &AppOptions { workers: 0, ..Default::default() });
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        config.base_url = format!("http://127.0.0.1:{port}/fhir/bulk\u{7f}");
        let server = Application::build(config).await.unwrap();
        let stop = server.shutdown_token().drop_guard();
        tokio::spawn(server.run_until_stopped());
        // An empty database: the job (complete at once, nothing to export) is recorded all the same.
        let http = reqwest::Client::new();

        let response = http
            .get(format!("http://127.0.0.1:{port}/fhir/$export"))
            .header(header::ACCEPT, "application/fhir+json")
            .header("prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_outcome(response, StatusCode::INTERNAL_SERVER_ERROR, "base URL").await;
        assert_eq!(db.count("SELECT count(*) FROM export_jobs").await, 0);
        drop(stop);
    }
}

/// A Postgres database migrated while migration 0005 had its first text (a comment has changed
/// since) still opens: its stored checksum is brought up to date, and later migrations apply.
#[tokio::test]
async fn a_database_migrated_with_the_first_text_of_migration_0005_still_opens() {
    let db = TestDb::create(Backend::Postgres).await;
    let mut before = sqlx::migrate!("./migrations/postgres");
    let first_text = include_str!("../../src/store/postgres/superseded/0005_body_compression.sql");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version <= 5)
        .map(|m| match m.version {
            5 => sqlx::migrate::Migration::new(5, m.description.clone(), m.migration_type, sqlx::SqlSafeStr::into_sql_str(first_text), m.no_tx),
            _ => m.clone(),
        })
        .collect::<Vec<_>>()
        .into();
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    before.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let stores = Stores::connect(&db.url, 2).await.expect("a database migrated with the first text of 0005 opens");
    drop(stores);
    let current = sqlx::migrate!("./migrations/postgres");
    let latest = current.iter().map(|m| m.version).max().unwrap();
    let applied: Vec<(i64, Vec<u8>)> = {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version").fetch_all(&mut conn).await.unwrap()
    };
    assert_eq!(applied.last().unwrap().0, latest);
    let five = current.iter().find(|m| m.version == 5).unwrap();
    assert_eq!(applied.iter().find(|(v, _)| *v == 5).unwrap().1, five.checksum.as_ref());
}
