//! Cancel, release and expiry: the job stops within seconds, its files go, and its status and
//! file URLs answer 404.

use std::time::{Duration, Instant};

use reqwest::{header, StatusCode};
use serde_json::json;

use crate::helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_with, AppOptions, TestApp};

/// Files and folders under the app's output directory.
fn output_entries(app: &TestApp) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries.filter_map(Result::ok).map(|e| 1 + if e.path().is_dir() { count(&e.path()) } else { 0 }).sum()
        })
    }
    count(app.output_dir.path())
}

pub(crate) async fn wait_until(what: &str, seconds: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

backend_tests! {
    async fn cancel_in_mid_export_stops_the_job_and_removes_its_files(backend: Backend) {
        // Tiny files make the export slow enough to catch in the middle.
        let app = spawn_app_with(backend, AppOptions { workers: 1, max_file_bytes: 4_000, ..Default::default() }).await;
        app.load_synthea().await;
        let status_url = app.kick_off("/$export").await;

        wait_until("the export is writing files", 60, async || output_entries(&app) > 20).await;
        let progress = app.client.get(&status_url).send().await.unwrap();
        assert_eq!(progress.status(), StatusCode::ACCEPTED, "still running when cancelled");
        assert!(progress.headers()["x-progress"].to_str().unwrap().contains('%'));

        let cancelled = app.client.delete(&status_url).send().await.unwrap();
        assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
        assert_outcome(app.client.get(&status_url).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;

        wait_until("no task is running", 10, async || {
            app.db.count("SELECT count(*) FROM export_tasks WHERE status = 'running'").await == 0
        })
        .await;
        wait_until("the files are deleted", 10, async || output_entries(&app) == 0).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(output_entries(&app), 0, "nothing is written after the cancel");
        assert_outcome(app.client.delete(&status_url).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;
    }

    async fn a_whole_export_lifecycle_from_kick_off_to_release(backend: Backend) {
        let app = spawn_app(backend).await;
        for id in ["a", "b"] {
            assert_eq!(app.put(&json!({"resourceType": "Patient", "id": id})).await.status(), 201);
        }
        let status_url = app.kick_off("/$export?_container=nightly").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        let file_url = manifest["output"][0]["url"].as_str().unwrap().to_owned();
        assert!(app.output_dir.path().join("nightly").is_dir(), "_container names the output folder");

        // gzip when asked.
        let gzipped = app.client.get(&file_url).header(header::ACCEPT_ENCODING, "gzip").send().await.unwrap();
        assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzipped.bytes().await.unwrap()[..]), &mut text).unwrap();
        assert_eq!(text.lines().count(), 2);

        // DELETE of a completed job releases it.
        assert_eq!(app.client.delete(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
        assert_outcome(app.client.get(&status_url).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;
        assert_outcome(app.client.get(&file_url).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;
        wait_until("the released files are deleted", 10, async || output_entries(&app) == 0).await;
    }

    async fn completed_exports_expire_after_the_retention(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { retention_seconds: 1, ..Default::default() }).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a"})).await.status(), 201);
        let status_url = app.kick_off("/$export").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        let file_url = manifest["output"][0]["url"].as_str().unwrap().to_owned();
        wait_until("the export expires", 15, async || app.client.get(&status_url).send().await.unwrap().status() == StatusCode::NOT_FOUND).await;
        let job_id = status_url.rsplit('/').next().unwrap();
        assert_outcome(app.client.get(&file_url).send().await.unwrap(), StatusCode::NOT_FOUND, &format!("no export job {job_id}")).await;
        wait_until("the expired files are deleted", 10, async || output_entries(&app) == 0).await;
    }

    async fn an_export_of_an_empty_store_completes_with_no_files(backend: Backend) {
        let app = spawn_app(backend).await;
        let manifest = app.wait_for_manifest(&app.kick_off("/$export").await).await;
        assert_eq!(manifest["output"], json!([]));
        assert_eq!(manifest["error"], json!([]));
    }
}
