//! The `bulkfhir` command as an operator uses it.

use std::process::Command;

use serde_json::json;

use crate::helpers::{backend_tests, spawn_app_with, AppOptions};

fn bulkfhir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bulkfhir"))
}

#[test]
fn the_cli_offers_serve_load_and_migrate() {
    let help = bulkfhir().arg("--help").output().unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    for command in ["serve", "load", "migrate"] {
        assert!(text.contains(command), "{text}");
    }
    let bad = bulkfhir().args(["serve", "--max-file-bytes", "0"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8(bad.stderr).unwrap().contains("max_file_bytes"));
}

backend_tests! {
    async fn load_reports_bad_lines_and_keeps_the_good_ones(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        let dir = tempfile::tempdir().unwrap();
        let ndjson = dir.path().join("Patient.ndjson");
        let lines = [
            json!({"resourceType": "Patient", "id": "good-1"}).to_string(),
            "{broken".to_owned(),
            json!({"resourceType": "Patient", "id": "bad id"}).to_string(),
            String::new(),
            json!({"resourceType": "Patient", "id": "good-2"}).to_string(),
        ];
        std::fs::write(&ndjson, lines.join("\n")).unwrap();
        let bundle = dir.path().join("bundle.json");
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000000", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000000"}},
             "request": {"method": "POST", "url": "Observation"}}]});
        std::fs::write(&bundle, transaction.to_string()).unwrap();

        let output = bulkfhir().arg("load").arg(dir.path()).env("DATABASE_URL", &app.db.url).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!output.status.success(), "a bad line makes the exit code non-zero");
        assert!(stderr.contains("Patient.ndjson: line 2: the body is not valid JSON"), "{stderr}");
        assert!(stderr.contains("Patient.ndjson: line 3: the id 'bad id' is invalid"), "{stderr}");
        assert!(stdout.lines().any(|l| l.starts_with("Patient") && l.trim_end().ends_with(" 3")), "{stdout}");
        assert!(stdout.contains("resources/s") && stdout.contains("2 failed"), "{stdout}");

        for id in ["good-1", "good-2"] {
            let response = app.client.get(app.url(&format!("/Patient/{id}"))).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
        let manifest = app.kick_off("/Patient/$export?_type=Observation").await;
        app.drain().await;
        let manifest = app.wait_for_manifest(&manifest).await;
        assert_eq!(manifest["output"][0]["count"], 1, "the loaded transaction's references were resolved");
    }
}

backend_tests! {
    async fn jobs_list_show_and_cancel_work_against_the_database(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        assert!(app.put(&json!({"resourceType": "Patient", "id": "p1"})).await.status().is_success());
        let done_url = app.kick_off("/$export?_type=Patient").await;
        app.drain().await;
        let manifest = app.wait_for_manifest(&done_url).await;
        let queued_url = app.kick_off("/Patient/$export").await;
        let (done, queued) = (done_url.rsplit('/').next().unwrap(), queued_url.rsplit('/').next().unwrap());
        let jobs = |args: &[&str]| bulkfhir().arg("jobs").args(args).args(["--database-url", &app.db.url]).output().unwrap();

        let list = jobs(&["list"]);
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "a header and two jobs: {text}");
        assert!(lines[1].starts_with(queued) && lines[1].contains(" queued ") && lines[1].contains(" patient "), "newest first: {text}");
        let file = manifest["output"][0]["url"].as_str().unwrap();
        let bytes = app.client.get(file).send().await.unwrap().bytes().await.unwrap().len();
        assert!(lines[2].starts_with(done) && lines[2].contains(" completed ") && lines[2].contains(&format!(" {bytes} ")), "{text}");

        let show = jobs(&["show", done]);
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(text.contains("status:           completed") && text.contains("level:            system"), "{text}");
        assert!(text.contains("Patient-1.ndjson") && text.contains(&format!("files:            1 ({bytes} bytes)")), "{text}");

        let cancel = jobs(&["cancel", queued]);
        assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
        let status = app.client.get(&queued_url).send().await.unwrap();
        assert_eq!(status.status(), 404, "cancelled as DELETE cancels");
        assert!(!jobs(&["cancel", queued]).status.success(), "a cancelled job cannot be cancelled again");
        let unknown = jobs(&["show", "not-a-job"]);
        assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("not a job id"));
    }
}
