//! The status URL answers from the node's memory: a long heartbeat here makes a stale answer
//! last seconds, so only the node's own workers forgetting a job can make these pass.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::{backend_tests, spawn_app_with, AppOptions};

backend_tests! {
    async fn a_job_this_node_completes_is_reported_complete_on_the_next_poll(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { heartbeat_millis: 10_000, ..Default::default() }).await;
        app.load_synthea().await;
        let status_url = app.kick_off("/$export").await;
        // Usually still running: this answer is then cached for the 10 s heartbeat.
        let first = app.client.get(&status_url).send().await.unwrap().status();
        assert!(matches!(first, StatusCode::ACCEPTED | StatusCode::OK), "{first}");

        let deadline = Instant::now() + Duration::from_secs(60);
        while app.db.count("SELECT count(*) FROM export_jobs WHERE status = 'completed'").await == 0 {
            assert!(Instant::now() < deadline, "the export did not complete");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The worker forgets the job right after recording its last task.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = app.client.get(&status_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "a completed job still reported as running");
    }
}
