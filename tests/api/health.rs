//! `/livez` and `/readyz` at the host root: no token needed, 503 with the reason when not ready.

use reqwest::{header, StatusCode};
use serde_json::Value;

use crate::helpers::{backend_tests, spawn_app, spawn_app_with, AppOptions, TestApp};

fn root(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.base_url.trim_end_matches("/fhir"))
}

async fn outcome(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/fhir+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    body["issue"].as_array().unwrap().iter().map(|i| i["diagnostics"].as_str().unwrap().to_owned()).collect::<Vec<_>>().join("; ")
}

backend_tests! {
    async fn health_endpoints_answer_without_a_token(backend: Backend) {
        let auth = bulkfhir::auth::settings::AuthSettings { allow_open: false, ..Default::default() };
        let app = spawn_app_with(backend, AppOptions { auth, ..Default::default() }).await;
        let refused = app.client.get(app.url("/$export")).header("prefer", "respond-async").send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "authorization is on");
        outcome(app.client.get(root(&app, "/livez")).send().await.unwrap(), StatusCode::OK).await;
        outcome(app.client.get(root(&app, "/readyz")).send().await.unwrap(), StatusCode::OK).await;
        let inside = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_ne!(inside.status(), StatusCode::OK, "not under the FHIR base");
    }

    async fn readyz_is_503_while_the_output_folder_is_not_writable(backend: Backend) {
        let app = spawn_app(backend).await;
        let folder = app.output_dir.path().to_owned();
        // Root ignores permissions: a file where the folder was refuses writes even to root.
        std::fs::remove_dir_all(&folder).unwrap();
        std::fs::write(&folder, b"not a folder").unwrap();
        let response = app.client.get(root(&app, "/readyz")).send().await.unwrap();
        let text = outcome(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(text.contains("the output destination is not writable"), "{text}");
        assert!(!text.contains(&folder.display().to_string()), "no server paths: {text}");
        outcome(app.client.get(root(&app, "/livez")).send().await.unwrap(), StatusCode::OK).await;

        std::fs::remove_file(&folder).unwrap();
        std::fs::create_dir(&folder).unwrap();
        outcome(app.client.get(root(&app, "/readyz")).send().await.unwrap(), StatusCode::OK).await;
    }

    async fn readyz_is_503_while_a_migration_is_missing(backend: Backend) {
        let app = spawn_app(backend).await;
        app.db.count("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations) RETURNING version").await;
        let text = outcome(app.client.get(root(&app, "/readyz")).send().await.unwrap(), StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(text.contains("migrations are not all applied"), "{text}");
    }
}
