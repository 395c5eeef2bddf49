//! `_since`, `_until` and `deleted` files on the Synthea sample: what each export holds is
//! worked out from the fixture files and the test's own changes, not by the server's code.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::{
    export_levels::{assert_same, exported_multisets},
    helpers::{backend_tests, fixture_resources, multiset, spawn_app, TestApp},
};

/// An instant between what happened before and what happens after: the transactionTime of a
/// small export.
async fn marker(app: &TestApp) -> String {
    let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=Group").await).await;
    manifest["transactionTime"].as_str().unwrap().replace('+', "%2B")
}

/// `Type/id` of every entry of the manifest's `deleted` files, checking each line's shape.
async fn deleted_refs(app: &TestApp, manifest: &Value) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for entry in manifest["deleted"].as_array().unwrap() {
        assert_eq!(entry["type"], "Bundle");
        for bundle in app.download(entry).await {
            assert_eq!(bundle["type"], "transaction");
            for e in bundle["entry"].as_array().unwrap() {
                assert_eq!(e["request"]["method"], "DELETE");
                assert!(refs.insert(e["request"]["url"].as_str().unwrap().to_owned()), "listed once");
            }
        }
    }
    refs
}

backend_tests! {
    async fn since_until_and_deleted_files_follow_last_updated(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        let patient = loaded["Patient"][0]["id"].as_str().unwrap().to_owned();
        let observation = loaded["Observation"]
            .iter()
            .find(|o| o["subject"]["reference"] == format!("Patient/{patient}"))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let device = loaded["Device"][0]["id"].as_str().unwrap().to_owned();

        let t1 = marker(&app).await;
        let changed = json!({"resourceType": "Device", "id": device, "status": "inactive"});
        assert!(app.put(&changed).await.status().is_success());
        for path in [format!("/Patient/{patient}"), format!("/Observation/{observation}")] {
            assert_eq!(app.client.delete(app.url(&path)).send().await.unwrap().status(), 204);
        }
        let t2 = marker(&app).await;
        let created = json!({"resourceType": "Patient", "id": "created-after-t2"});
        assert_eq!(app.put(&created).await.status(), 201);
        let gone: BTreeSet<String> = [format!("Patient/{patient}"), format!("Observation/{observation}")].into();

        // Only what was last updated before t1: the sample less what changed or went after it.
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/$export?_until={t1}")).await).await;
        let touched: BTreeSet<String> = gone.iter().cloned().chain([format!("Device/{device}")]).collect();
        let expected: BTreeMap<String, Vec<String>> = loaded
            .iter()
            .map(|(t, resources)| {
                let kept: Vec<&Value> =
                    resources.iter().filter(|r| !touched.contains(&format!("{t}/{}", r["id"].as_str().unwrap()))).collect();
                (t.clone(), multiset(kept))
            })
            .filter(|(_, lines)| !lines.is_empty())
            .collect();
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);
        assert_eq!(manifest["deleted"], json!([]), "no deleted files without _since");

        // Between t1 and t2: the changed Device; the deletions in deleted files, not in output.
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/$export?_since={t1}&_until={t2}")).await).await;
        let exported = exported_multisets(app.download_all(&manifest).await);
        assert_eq!(exported, BTreeMap::from([("Device".to_owned(), multiset([&changed]))]));
        assert_eq!(deleted_refs(&app, &manifest).await, gone);

        // Since t1 with no end: the created Patient too.
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/$export?_since={t1}")).await).await;
        let exported = exported_multisets(app.download_all(&manifest).await);
        let expected = BTreeMap::from([("Device".to_owned(), multiset([&changed])), ("Patient".to_owned(), multiset([&created]))]);
        assert_eq!(exported, expected);
        assert_eq!(deleted_refs(&app, &manifest).await, gone);

        // Since t2: nothing was deleted after it.
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/$export?_since={t2}")).await).await;
        assert_eq!(exported_multisets(app.download_all(&manifest).await), BTreeMap::from([("Patient".to_owned(), multiset([&created]))]));
        assert_eq!(manifest["deleted"], json!([]));

        // Patient level: the deleted Observation was in the deleted patient's compartment.
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/Patient/$export?_since={t1}")).await).await;
        assert_eq!(exported_multisets(app.download_all(&manifest).await), BTreeMap::from([("Patient".to_owned(), multiset([&created]))]));
        assert_eq!(deleted_refs(&app, &manifest).await, gone);
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/Patient/$export?_since={t1}&_type=Condition")).await).await;
        assert_eq!(manifest["deleted"], json!([]), "_type narrows deleted files too");
    }
}
