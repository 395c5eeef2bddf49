//! `allowPartialManifests=true` on the Synthea sample: while the export runs, 202 responses
//! carry a manifest of the files already complete; an entry once listed never changes.

use reqwest::StatusCode;
use serde_json::Value;

use crate::{
    export_levels::exported_multisets,
    helpers::{backend_tests, fixture_resources, multiset, spawn_app_with, AppOptions, TestApp},
};

async fn in_progress_manifest(app: &TestApp, status_url: &str) -> Value {
    let response = app.client.get(status_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().contains_key("x-progress"));
    response.json().await.unwrap()
}

backend_tests! {
    async fn partial_manifests_list_finished_files_while_the_export_runs(backend: Backend) {
        // No workers: the test runs the tasks one at a time.
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        let status_url = app.kick_off("/$export?_type=Patient,Condition,Device&allowPartialManifests=true").await;

        let before = in_progress_manifest(&app, &status_url).await;
        assert_eq!(before["output"], serde_json::json!([]));
        assert_eq!(before["error"], serde_json::json!([]));

        assert!(app.run_one_task().await);
        // Status answers may be up to one heartbeat old (each node caches them that long).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let partial = loop {
            let partial = in_progress_manifest(&app, &status_url).await;
            if partial["output"] != serde_json::json!([]) {
                break partial;
            }
            assert!(std::time::Instant::now() < deadline, "the finished file is not listed 3 s after its task ended");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let listed = partial["output"].as_array().unwrap().clone();
        assert_eq!(listed.len(), 1, "one task done, one file: {partial}");
        let t = listed[0]["type"].as_str().unwrap().to_owned();
        // Listed files can be downloaded at once, and hold the whole type.
        let exported = exported_multisets(app.download_all(&partial).await);
        assert_eq!(exported[&t], multiset(&loaded[&t]));

        app.drain().await;
        let manifest = app.wait_for_manifest(&status_url).await;
        let output = manifest["output"].as_array().unwrap();
        assert_eq!(output.len(), 3);
        assert!(output.contains(&listed[0]), "the listed entry is unchanged in the final manifest");
        for (t, lines) in exported_multisets(app.download_all(&manifest).await) {
            assert_eq!(lines, multiset(&loaded[&t]), "{t}");
        }

        // Without the parameter an in-progress status carries no manifest.
        let status_url = app.kick_off("/$export?_type=Device").await;
        let response = app.client.get(&status_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert!(response.text().await.unwrap().is_empty());
        app.drain().await;
    }
}
