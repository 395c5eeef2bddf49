//! Several server nodes on one database and one output folder share the work: an API-only node
//! takes the kick-off and serves the results, worker nodes run the tasks.

use std::{collections::BTreeMap, time::Duration};

use crate::{
    cancel::wait_until,
    helpers::{backend_tests, fixture_resources, multiset, spawn_app_with, without_server_meta, AppOptions},
};

backend_tests! {
    async fn an_api_only_node_serves_an_export_that_other_nodes_ran(backend: Backend) {
        let api = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        api.load_synthea().await;
        let status_url = api.kick_off("/$export?_type=Patient,Observation,Encounter,Claim").await;

        // The test holds two of the four tasks, so the first worker node cannot run them all;
        // it leaves, and a second node runs the two the test hands back.
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(api.stores.queue.claim("test-holder", Duration::from_secs(120), 3).await.unwrap().expect("a queued task"));
        }
        let node_a = api.spawn_node(1).await;
        let done = async || api.db.count("SELECT count(*) FROM export_tasks WHERE status = 'done'").await;
        wait_until("the first node ran the two free tasks", 60, async || done().await == 2).await;
        node_a.stop().await;
        let _node_b = api.spawn_node(1).await;
        for task in &held {
            api.stores.queue.release(task).await.unwrap();
        }

        let manifest = api.wait_for_manifest(&status_url).await;
        let exported: BTreeMap<String, Vec<String>> = api
            .download_all(&manifest)
            .await
            .into_iter()
            .map(|(t, resources)| (t, multiset(&resources.into_iter().map(without_server_meta).collect::<Vec<_>>())))
            .collect();
        let loaded = fixture_resources();
        for t in ["Patient", "Observation", "Encounter", "Claim"] {
            assert!(exported[t] == multiset(&loaded[t]), "{t}: {} exported of {}", exported[t].len(), loaded[t].len());
        }
        assert_eq!(done().await, 4);
        // A node's workers are named `<node>-<n>`: two node prefixes, none of them the test's.
        let nodes = api.db.count("SELECT count(DISTINCT substr(worker_id, 1, 8)) FROM export_tasks WHERE status = 'done'").await;
        assert_eq!(nodes, 2, "the job's tasks were run by both worker nodes");
        assert_eq!(api.db.count("SELECT count(*) FROM export_tasks WHERE worker_id = 'test-holder'").await, 0);
    }
}
