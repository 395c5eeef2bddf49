//! Crash safety: a task whose worker died is taken over after its lease; a task that keeps
//! losing its workers, or whose output fails, fails the job with an OperationOutcome. A job
//! never stays at 202.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_outcome, backend_tests, spawn_app_with, AppOptions};

backend_tests! {
    async fn a_task_whose_worker_died_is_taken_over_and_the_dead_worker_cannot_record_it(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a"})).await.status(), 201);
        let status_url = app.kick_off("/$export").await;

        let dead = app.stores.queue.claim("dead-worker", Duration::from_millis(300), 3).await.unwrap().expect("a task");
        app.drain().await; // the lease still holds: nothing to take
        assert_eq!(app.client.get(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);

        tokio::time::sleep(Duration::from_millis(400)).await;
        app.drain().await;
        let manifest = app.wait_for_manifest(&status_url).await;
        assert_eq!(manifest["output"][0]["count"], 1);
        assert!(!app.stores.queue.complete(&dead, vec![]).await.unwrap(), "a stale fence is refused");
    }

    async fn a_task_that_keeps_losing_its_workers_fails_the_job(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, max_attempts: 2, ..Default::default() }).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a"})).await.status(), 201);
        let status_url = app.kick_off("/$export").await;
        for _ in 0..2 {
            app.stores.queue.claim("dying-worker", Duration::from_millis(100), 2).await.unwrap().expect("a task");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The janitor (every second) fails the exhausted task and its job.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let response = app.client.get(&status_url).send().await.unwrap();
            if response.status() != StatusCode::ACCEPTED {
                assert_outcome(response, StatusCode::INTERNAL_SERVER_ERROR, "stopped 2 times").await;
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the job stayed at 202");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn an_output_failure_fails_the_job_with_a_clear_outcome(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a"})).await.status(), 201);
        let status_url = app.kick_off("/$export").await;
        // The output directory turns into a file: no folder can be made under it.
        let root = app.output_dir.path();
        std::fs::remove_dir_all(root).unwrap();
        std::fs::write(root, b"not a directory").unwrap();
        app.drain().await;
        let response = app.client.get(&status_url).send().await.unwrap();
        assert_outcome(response, StatusCode::INTERNAL_SERVER_ERROR, "exporting Patient failed").await;
        std::fs::remove_file(root).unwrap();
        std::fs::create_dir(root).unwrap();
    }
}
