//! A synthesized population (`bulkfhir synth`) loads through the bulk path, keeps its
//! references inside each copy, reloads as new versions, and exports per Group exactly.

use serde_json::{json, Value};

use crate::helpers::{backend_tests, spawn_app};

/// Patients and one Observation each: enough rows for the loader's bulk path.
const PATIENTS: usize = 70;

fn uuid(kind: u8, n: usize) -> String {
    format!("a1b2c3d4-0000-4000-8{kind:03x}-{n:012x}")
}

/// A small Synthea-like sample: patients, an Observation each, and a Group of them all.
fn write_sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut lines = Vec::new();
    for n in 0..PATIENTS {
        lines.push(json!({"resourceType": "Patient", "id": uuid(1, n)}));
        lines.push(json!({"resourceType": "Observation", "id": uuid(2, n), "status": "final", "code": {"text": "x"},
                          "subject": {"reference": format!("Patient/{}", uuid(1, n))}}));
    }
    let members: Vec<Value> = (0..PATIENTS).map(|n| json!({"entity": {"reference": format!("Patient/{}", uuid(1, n))}})).collect();
    lines.push(json!({"resourceType": "Group", "id": uuid(3, 0), "type": "person", "actual": true, "member": members}));
    let path = dir.join("sample.ndjson");
    std::fs::write(&path, lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")).unwrap();
    path
}

backend_tests! {
    async fn a_synthesized_population_loads_reloads_and_exports_by_group(backend: Backend) {
        let app = spawn_app(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let sample = write_sample(dir.path());
        let out = dir.path().join("population");
        let report = bulkfhir::load::synth::synthesize(&[sample], 3 * (2 * PATIENTS as u64 + 1), &out).unwrap();
        assert_eq!((report.copies, report.resources), (3, 3 * (2 * PATIENTS as u64 + 1)));

        let loaded = bulkfhir::load::load(app.stores.resources.as_ref(), &report.files).await.unwrap();
        assert!(loaded.failures.is_empty(), "{:?}", loaded.failures);
        assert_eq!(loaded.total(), report.resources);

        // Copy 2's Group holds copy 2's patients, and their observations follow them.
        let group = format!("00000002{}", &uuid(3, 0)[8..]);
        let manifest = app.wait_for_manifest(&app.kick_off(&format!("/Group/{group}/$export")).await).await;
        let exported = app.download_all(&manifest).await;
        // Group is in the R4 Patient compartment (by `member`): the group itself comes along.
        assert_eq!(exported.keys().collect::<Vec<_>>(), ["Group", "Observation", "Patient"]);
        assert_eq!(exported["Group"].iter().map(|g| g["id"].as_str().unwrap()).collect::<Vec<_>>(), [group.as_str()]);
        for (t, kind) in [("Patient", 1), ("Observation", 2)] {
            let mut ids: Vec<&str> = exported[t].iter().map(|r| r["id"].as_str().unwrap()).collect();
            ids.sort();
            let expected: Vec<String> = (0..PATIENTS).map(|n| format!("00000002{}", &uuid(kind, n)[8..])).collect();
            assert_eq!(ids, expected, "{t}");
        }
        assert!(exported["Observation"].iter().all(|o| o["subject"]["reference"].as_str().unwrap().starts_with("Patient/00000002")));

        // Loading the same files again writes version 2 of every resource, through the bulk path
        // for existing rows; an export sees them, and exactly once each.
        let reloaded = bulkfhir::load::load(app.stores.resources.as_ref(), &report.files).await.unwrap();
        assert_eq!(reloaded.total(), report.resources);
        let manifest = app.wait_for_manifest(&app.kick_off("/$export").await).await;
        let exported = app.download_all(&manifest).await;
        let all: Vec<&Value> = exported.values().flatten().collect();
        assert_eq!(all.len() as u64, report.resources);
        assert!(all.iter().all(|r| r["meta"]["versionId"] == "2"));
        assert_eq!(app.db.count("SELECT count(*) FROM resource_history").await, report.resources as i64);
    }
}

backend_tests! {
    async fn a_resource_repeated_in_a_later_batch_ends_at_its_later_version(backend: Backend) {
        let app = spawn_app(backend).await;
        let dir = tempfile::tempdir().unwrap();
        // More than a batch (5,000), so the repeat of p0 lands in the second batch, which may be
        // written while the first is still in flight.
        let mut lines: Vec<String> = (0..5_001).map(|n| json!({"resourceType": "Patient", "id": format!("p{n}")}).to_string()).collect();
        lines.push(json!({"resourceType": "Patient", "id": "p0", "name": [{"family": "Later"}]}).to_string());
        let path = dir.path().join("Patient.ndjson");
        std::fs::write(&path, lines.join("\n")).unwrap();

        let report = bulkfhir::load::load(app.stores.resources.as_ref(), &[path]).await.unwrap();
        assert_eq!(report.total(), 5_002);
        let p0: Value = app.client.get(app.url("/Patient/p0")).send().await.unwrap().json().await.unwrap();
        assert_eq!((p0["name"][0]["family"].as_str(), p0["meta"]["versionId"].as_str()), (Some("Later"), Some("2")));
        assert_eq!(app.db.count("SELECT count(*) FROM resources").await, 5_001);
    }
}
