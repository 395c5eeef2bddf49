//! Exports are exact as of transactionTime: a resource changed after kick-off is exported at
//! its kick-off version; one created after is left out; one deleted after is still there.

use serde_json::{json, Value};

use crate::helpers::{backend_tests, spawn_app_with, AppOptions};

backend_tests! {
    async fn an_export_reflects_the_data_at_kick_off(backend: Backend) {
        // No workers: the test decides when the export runs.
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        for (id, family) in [("a", "Before"), ("b", "Doomed")] {
            let patient = json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
            assert_eq!(app.put(&patient).await.status(), 201);
        }
        let obs = json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                         "subject": {"reference": "Patient/a"}});
        assert_eq!(app.put(&obs).await.status(), 201);

        let group = json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true,
                           "member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Patient/b"}}]});
        assert_eq!(app.put(&group).await.status(), 201);

        let system = app.kick_off("/$export").await;
        let patients = app.kick_off("/Patient/$export").await;
        let members = app.kick_off("/Group/g/$export").await;

        // After kick-off: change a, create c, delete b, move o1 to patient c.
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a", "name": [{"family": "After"}]})).await.status(), 200);
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "c"})).await.status(), 201);
        assert_eq!(app.client.delete(app.url("/Patient/b")).send().await.unwrap().status(), 204);
        let moved = json!({"resourceType": "Observation", "id": "o1", "status": "amended", "code": {"text": "x"},
                           "subject": {"reference": "Patient/c"}});
        assert_eq!(app.put(&moved).await.status(), 200);

        app.drain().await;
        for status_url in [system, patients, members] {
            let manifest = app.wait_for_manifest(&status_url).await;
            let exported = app.download_all(&manifest).await;
            let mut names: Vec<(String, String, String)> = exported["Patient"]
                .iter()
                .map(|p| (p["id"].as_str().unwrap().into(), p["name"][0]["family"].as_str().unwrap().into(), p["meta"]["versionId"].as_str().unwrap().into()))
                .collect();
            names.sort();
            assert_eq!(names, [("a".into(), "Before".into(), "1".into()), ("b".into(), "Doomed".into(), "1".into())]);
            let observations: Vec<&Value> = exported["Observation"].iter().collect();
            assert_eq!(observations.len(), 1);
            assert_eq!(observations[0]["status"], "final", "the kick-off version of o1, in a's compartment then");
        }

        // A new export sees the new state.
        let status_url = app.kick_off("/Patient/$export").await;
        app.drain().await;
        let exported = app.download_all(&app.wait_for_manifest(&status_url).await).await;
        let mut ids: Vec<&str> = exported["Patient"].iter().map(|p| p["id"].as_str().unwrap()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(exported["Patient"].iter().find(|p| p["id"] == "a").unwrap()["meta"]["versionId"], "2");
        assert_eq!(exported["Observation"][0]["status"], "amended");
    }
}
