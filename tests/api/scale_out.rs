//! Several server nodes on one database and one output folder share the work: an API-only node
//! takes the kick-off and serves the results, worker nodes run the tasks.

use std::collections::BTreeMap;

use crate::helpers::{backend_tests, fixture_resources, multiset, spawn_app_with, without_server_meta, AppOptions};

backend_tests! {
    async fn an_api_only_node_serves_an_export_that_other_nodes_ran(backend: Backend) {
        let api = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        api.load_synthea().await;
        let _node_a = api.spawn_node(1).await;
        let _node_b = api.spawn_node(1).await;

        let manifest = api.wait_for_manifest(&api.kick_off("/$export?_type=Patient,Observation,Encounter,Claim").await).await;
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
        // The API node has no workers: all four tasks were claimed and finished by the others.
        let done = api.db.count("SELECT count(*) FROM export_tasks WHERE status = 'done' AND worker_id IS NOT NULL").await;
        assert_eq!(done, 4);
    }
}
