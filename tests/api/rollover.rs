//! Rollover: with a small size limit, files never pass it, no line is split, and the counts add
//! up to the loaded data.

use reqwest::header;

use crate::helpers::{backend_tests, fixture_resources, multiset, spawn_app_with, without_server_meta, AppOptions};

backend_tests! {
    async fn files_roll_over_before_passing_the_size_limit(backend: Backend) {
        const LIMIT: usize = 1_000_000;
        let app = spawn_app_with(backend, AppOptions { max_file_bytes: LIMIT as u64, ..Default::default() }).await;
        app.load_synthea().await;
        let loaded = fixture_resources();

        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_type=ExplanationOfBenefit,Observation,Patient").await).await;
        let mut per_type: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
        let mut names: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for entry in manifest["output"].as_array().unwrap() {
            let url = entry["url"].as_str().unwrap();
            let response = app.client.get(url).send().await.unwrap();
            let length: usize = response.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
            assert!(length <= LIMIT, "{url} has {length} bytes, over the limit");
            let lines = app.download(entry).await;
            assert_eq!(lines.len() as u64, entry["count"].as_u64().unwrap());
            let t = entry["type"].as_str().unwrap().to_owned();
            names.entry(t.clone()).or_default().push(url.rsplit('/').next().unwrap().to_owned());
            per_type.entry(t).or_default().extend(lines.into_iter().map(without_server_meta));
        }
        // 18 MB of ExplanationOfBenefit and 12 MB of Observation: many files, numbered from 1.
        for (t, min_files) in [("ExplanationOfBenefit", 18), ("Observation", 12), ("Patient", 1)] {
            let expected: Vec<String> = (1..=names[t].len()).map(|n| format!("{t}-{n}.ndjson")).collect();
            assert_eq!(names[t], expected);
            assert!(names[t].len() >= min_files, "{t}: {} files", names[t].len());
            assert_eq!(multiset(&per_type[t]), multiset(&loaded[t]), "{t}");
        }
    }
}
