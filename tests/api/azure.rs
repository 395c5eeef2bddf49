//! Export to Azure Blob Storage, against a real Azurite: every level downloaded by signed URL
//! and compared with the loaded data, rollover into several blobs, proxy URLs, cancel and
//! release deleting the blobs, and storage outages (one that passes, one that lasts).

use std::{collections::BTreeMap, time::Duration};

use bulkfhir::{
    export::worker::Ran,
    output::UrlMode,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    azurite::Azurite,
    cancel::wait_until,
    export_levels::{assert_same, expected_for_group, expected_for_patients, exported_multisets, SYNTHEA_GROUP},
    helpers::{backend_tests, fixture_resources, spawn_app_with, AppOptions},
};

fn outputs(manifest: &Value) -> &Vec<Value> {
    manifest["output"].as_array().unwrap()
}

/// The container of a signed blob URL (the path segment after the account).
fn container_of(url: &str, azurite: &Azurite) -> String {
    let rest = url.strip_prefix(&format!("{}/", azurite.endpoint())).unwrap_or_else(|| panic!("{url} is not an Azurite URL"));
    rest.split('/').next().unwrap().to_owned()
}


backend_tests! {
    async fn every_export_level_lands_in_azurite_and_downloads_by_signed_url(backend: Backend) {
        let azurite = Azurite::start();
        let options = AppOptions { max_file_bytes: 1_000_000, output: azurite.settings(), ..Default::default() };
        let app = spawn_app_with(backend, options).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        // System level into a named container: signed URLs, many blobs per large type.
        let system = app.wait_for_manifest(&app.kick_off("/$export?_container=levels").await).await;
        assert_eq!(system["requiresAccessToken"], json!(false));
        let mut files_per_type: BTreeMap<&str, usize> = BTreeMap::new();
        for entry in outputs(&system) {
            let url = entry["url"].as_str().unwrap();
            assert_eq!(container_of(url, &azurite), "levels");
            assert!(url.contains("sig="), "a signed URL: {url}");
            *files_per_type.entry(entry["type"].as_str().unwrap()).or_default() += 1;
        }
        assert!(files_per_type["Observation"] >= 12 && files_per_type["ExplanationOfBenefit"] >= 18, "{files_per_type:?}");
        let blobs = azurite.blobs("levels").await.unwrap();
        assert_eq!(blobs.len(), outputs(&system).len(), "one blob per manifest file");
        assert!(blobs.iter().all(|b| b.ends_with(".ndjson") && b.split('/').count() == 2), "{blobs:?}");
        let expected: BTreeMap<String, Vec<String>> = loaded.iter().map(|(t, r)| (t.clone(), crate::helpers::multiset(r))).collect();
        assert_same(exported_multisets(app.download_all(&system).await), &expected);

        // Patient level without _container: a container of its own, named from time and job.
        let status_url = app.kick_off("/Patient/$export").await;
        let patient = app.wait_for_manifest(&status_url).await;
        let job = status_url.rsplit('/').next().unwrap();
        let container = container_of(outputs(&patient)[0]["url"].as_str().unwrap(), &azurite);
        assert!(container.ends_with(job) && container.len() == 52 && container == container.to_lowercase(), "{container}");
        let all_patients = loaded["Patient"].iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
        let expected = expected_for_patients(&loaded, &all_patients);
        assert_same(exported_multisets(app.download_all(&patient).await), &expected);

        let group = app.wait_for_manifest(&app.kick_off(&format!("/Group/{SYNTHEA_GROUP}/$export?_container=levels")).await).await;
        // Every Synthea patient is a member; a Group export adds the resources they reference.
        assert_same(exported_multisets(app.download_all(&group).await), &expected_for_group(&loaded, &all_patients));
    }

    async fn proxy_urls_stream_the_blobs_through_the_server(backend: Backend) {
        let azurite = Azurite::start();
        let output = bulkfhir::output::OutputSettings { file_urls: UrlMode::Proxy, ..azurite.settings() };
        let app = spawn_app_with(backend, AppOptions { output, ..Default::default() }).await;
        for id in ["a", "b"] {
            assert_eq!(app.put(&json!({"resourceType": "Patient", "id": id})).await.status(), 201);
        }
        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_container=proxied").await).await;
        assert_eq!(manifest["requiresAccessToken"], json!(false), "open: the server's file URLs need no token");
        let url = outputs(&manifest)[0]["url"].as_str().unwrap();
        assert!(url.starts_with(&app.base_url), "{url}");
        assert_eq!(app.download(&outputs(&manifest)[0]).await.len(), 2);
        assert_eq!(azurite.blobs("proxied").await.unwrap().len(), 1);
    }

    async fn cancel_in_mid_export_deletes_the_jobs_blobs(backend: Backend) {
        let azurite = Azurite::start();
        let options = AppOptions { workers: 1, max_file_bytes: 4_000, output: azurite.settings(), ..Default::default() };
        let app = spawn_app_with(backend, options).await;
        app.load_synthea().await;
        let status_url = app.kick_off("/$export?_container=cancelled").await;

        wait_until("the export is writing blobs", 60, async || azurite.blobs("cancelled").await.is_ok_and(|b| b.len() > 20)).await;
        assert_eq!(app.client.get(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED, "still running");
        assert_eq!(app.client.delete(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
        wait_until("the blobs are deleted", 20, async || azurite.blobs("cancelled").await.is_ok_and(|b| b.is_empty())).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(azurite.blobs("cancelled").await.unwrap(), Vec::<String>::new(), "nothing is written after the cancel");
    }

    async fn releasing_an_export_deletes_the_container_made_for_it(backend: Backend) {
        let azurite = Azurite::start();
        let app = spawn_app_with(backend, AppOptions { output: azurite.settings(), ..Default::default() }).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a"})).await.status(), 201);
        let status_url = app.kick_off("/$export").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        let container = container_of(outputs(&manifest)[0]["url"].as_str().unwrap(), &azurite);
        assert_eq!(azurite.blobs(&container).await.unwrap().len(), 1);

        assert_eq!(app.client.delete(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
        wait_until("the container is deleted", 20, async || {
            // object_store reports a missing container on listing as a generic error.
            azurite.blobs(&container).await.is_err_and(|e| format!("{e:?}").contains("ContainerNotFound"))
        })
        .await;
    }

    async fn an_export_survives_azurite_stopping_and_restarting_in_the_middle(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut azurite = Azurite::start_in(dir.path());
        let options = AppOptions { workers: 0, max_file_bytes: 1_000_000, output: azurite.settings(), ..Default::default() };
        let app = spawn_app_with(backend, options).await;
        app.load_synthea().await;
        let loaded = fixture_resources();
        let status_url = app.kick_off("/$export?_type=Patient,Condition,Observation&_container=outage").await;

        // One type is written, then the store goes away while the others are exported.
        let worker = app.test_worker();
        assert_eq!(worker.run_next_task().await.unwrap(), Ran::Task);
        azurite.stop();
        let rest = tokio::spawn(async move { while worker.run_next_task().await.unwrap() == Ran::Task {} });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(app.client.get(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED, "waiting on the store");
        azurite.restart();
        tokio::time::timeout(Duration::from_secs(90), rest).await.expect("the export resumes").unwrap();

        let manifest = app.wait_for_manifest(&status_url).await;
        let expected: BTreeMap<String, Vec<String>> = ["Patient", "Condition", "Observation"]
            .iter()
            .map(|t| (t.to_string(), crate::helpers::multiset(&loaded[*t])))
            .collect();
        assert_same(exported_multisets(app.download_all(&manifest).await), &expected);
    }

    async fn a_lasting_outage_fails_the_job_with_a_plain_outcome(backend: Backend) {
        let mut azurite = Azurite::start();
        let output = bulkfhir::output::OutputSettings { storage_retry_seconds: 2, ..azurite.settings() };
        let app = spawn_app_with(backend, AppOptions { workers: 1, output, ..Default::default() }).await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "a"})).await.status(), 201);
        azurite.stop();
        let status_url = app.kick_off("/$export").await;

        wait_until("the job fails", 60, async || app.client.get(&status_url).send().await.unwrap().status() != StatusCode::ACCEPTED).await;
        let response = app.client.get(&status_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let outcome: Value = response.json().await.unwrap();
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(text.contains("Azure Blob Storage account 'devstoreaccount1' container"), "{text}");
        assert!(text.contains("could not be reached"), "{text}");
        for secret_or_noise in ["sig=", "<", "http://", &bulkfhir::output::settings::AZURITE_KEY[..12]] {
            assert!(!text.contains(secret_or_noise), "{text}");
        }
    }
}
