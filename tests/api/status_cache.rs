//! The status URL answers from the node's memory: a long heartbeat here makes a stale answer
//! last seconds, so only the node's own workers forgetting a job can make these pass.

use std::time::{Duration, Instant};

use bulkfhir::store::Lease;
use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::{
    cancel::wait_until,
    helpers::{backend_tests, spawn_app_with, AppOptions},
};

fn progress(response: &Response) -> String {
    response.headers()["x-progress"].to_str().unwrap().to_owned()
}

backend_tests! {
    async fn a_job_this_node_completes_is_reported_complete_on_the_next_poll(backend: Backend) {
        let heartbeat = Duration::from_secs(10);
        // An API-only node for the kick-off; the node under test has the one worker.
        let api = spawn_app_with(backend, AppOptions { workers: 0, heartbeat_millis: heartbeat.as_millis() as u64, ..Default::default() }).await;
        for resource in [
            json!({"resourceType": "Patient", "id": "p1"}),
            json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}),
        ] {
            assert_eq!(api.put(&resource).await.status(), 201);
        }
        let status_url = api.kick_off("/$export").await;
        // The test holds one of the two tasks: the job cannot complete until it hands it back.
        let held = api.stores.queue.claim("test-holder", Duration::from_secs(120), 3).await.unwrap().expect("a queued task");
        let node = api.spawn_node(1).await;
        let on_node = status_url.replacen(&api.base_url, &node.base_url, 1);
        wait_until("the node ran the other task", 30, async || {
            api.db.count("SELECT count(*) FROM export_tasks WHERE status = 'done'").await == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await; // the worker forgets right after recording

        let first = api.client.get(&on_node).send().await.unwrap();
        let cached_at = Instant::now();
        assert_eq!(first.status(), StatusCode::ACCEPTED, "in progress while the test holds a task");
        let cached = progress(&first);

        // Progress the node's own workers did not make shows on the node only a heartbeat late.
        assert_eq!(api.stores.queue.heartbeat(&held, Duration::from_secs(120), 1000).await.unwrap(), Lease::Held);
        let fresh = api.client.get(&status_url).send().await.unwrap(); // the API node has cached nothing
        assert!(progress(&fresh).contains("1001 resources"), "{}", progress(&fresh));
        let again = api.client.get(&on_node).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        assert_eq!(progress(&again), cached, "the node answers from its cache");

        // The node's worker runs the handed-back task, completes the job and forgets its answer.
        api.stores.queue.release(&held).await.unwrap();
        wait_until("the export completes", 30, async || {
            api.db.count("SELECT count(*) FROM export_jobs WHERE status = 'completed'").await == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cached_at.elapsed() < heartbeat - Duration::from_secs(1), "the cached answer is still fresh, so the poll tests the forgetting");
        let response = api.client.get(&on_node).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "a completed job still reported as running");
    }
}
