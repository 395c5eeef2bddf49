//! `includeAssociatedData` on the Synthea sample with Provenance added on top: which Provenance
//! goes with which export follows from the targets the test chose among the fixture's resources.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_outcome, backend_tests, fixture_resources, spawn_app, TestApp};

async fn provenance_ids(app: &TestApp, path: &str) -> BTreeSet<String> {
    let manifest = app.wait_for_manifest(&app.kick_off(path).await).await;
    let exported = app.download_all(&manifest).await;
    exported.get("Provenance").into_iter().flatten().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

backend_tests! {
    async fn associated_provenance_follows_the_exported_resources(backend: Backend) {
        let app = spawn_app(backend).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        let id = |t: &str| loaded[t][0]["id"].as_str().unwrap().to_owned();
        let (observation, patient, condition, organization) = (id("Observation"), id("Patient"), id("Condition"), id("Organization"));
        let provenance = |pid: &str, recorded: &str, targets: &[String]| -> Value {
            let target: Vec<Value> = targets.iter().map(|t| json!({"reference": t})).collect();
            json!({"resourceType": "Provenance", "id": pid, "recorded": recorded, "target": target,
                   "agent": [{"who": {"reference": format!("Organization/{organization}")}}]})
        };
        for p in [
            provenance("old-obs", "2020-01-01T00:00:00Z", &[format!("Observation/{observation}")]),
            provenance("new-obs", "2021-01-01T00:00:00Z", &[format!("Observation/{observation}/_history/1")]),
            provenance("pat-cond", "2019-01-01T00:00:00Z", &[format!("Patient/{patient}"), format!("Condition/{condition}")]),
            provenance("org", "2022-01-01T00:00:00Z", &[format!("Organization/{organization}")]),
            provenance("nothing", "2022-01-01T00:00:00Z", &["Observation/does-not-exist".to_owned()]),
        ] {
            assert_eq!(app.put(&p).await.status(), StatusCode::CREATED);
        }

        let relevant = "includeAssociatedData=RelevantProvenanceResources";
        let latest = "includeAssociatedData=LatestProvenanceResources";
        assert_eq!(provenance_ids(&app, &format!("/$export?_type=Observation,Patient&{relevant}")).await, ids(&["new-obs", "old-obs", "pat-cond"]));
        assert_eq!(provenance_ids(&app, &format!("/$export?_type=Observation,Patient&{latest}")).await, ids(&["new-obs", "pat-cond"]));
        assert_eq!(provenance_ids(&app, &format!("/$export?_type=Organization&{relevant}")).await, ids(&["org"]));
        // Without the parameter Provenance is an ordinary type.
        assert_eq!(provenance_ids(&app, "/$export?_type=Observation,Patient").await, ids(&[]));
        assert_eq!(provenance_ids(&app, "/$export?_type=Provenance").await, ids(&["new-obs", "nothing", "old-obs", "org", "pat-cond"]));
        // Patient level: the Condition is exported, the Patient is not.
        assert_eq!(provenance_ids(&app, &format!("/Patient/$export?_type=Condition&{latest}")).await, ids(&["pat-cond"]));

        assert_outcome(app.kick_off_raw("/$export?includeAssociatedData=_mine").await, StatusCode::BAD_REQUEST, "includeAssociatedData").await;
        let manifest = app.export_lenient("/$export?_type=Patient&includeAssociatedData=_mine").await;
        let outcomes = app.download(&manifest["error"][0]).await;
        assert!(serde_json::to_string(&outcomes).unwrap().contains("_mine"));
    }
}
