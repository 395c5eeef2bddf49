//! Export to S3, against moto's S3 server: presigned URLs downloaded by a plain client and
//! compared with what was written, the container as a top-level prefix, release deleting the
//! objects.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    cancel::wait_until,
    helpers::{backend_tests, spawn_app_with, AppOptions},
    moto::{Moto, BUCKET},
};

backend_tests! {
    async fn exports_go_to_s3_under_the_container_prefix_with_presigned_urls(backend: Backend) {
        let moto = Moto::start().await;
        let app = spawn_app_with(backend, AppOptions { max_file_bytes: 300, output: moto.settings(), ..Default::default() }).await;
        let mut written = Vec::new();
        for n in 0..20 {
            let patient = json!({"resourceType": "Patient", "id": format!("p{n}"), "gender": "female"});
            assert_eq!(app.put(&patient).await.status(), 201);
            written.push(format!("p{n}"));
        }
        let status_url = app.kick_off("/$export?_container=nightly").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        assert_eq!(manifest["requiresAccessToken"], json!(false));
        let outputs = manifest["output"].as_array().unwrap();
        assert!(outputs.len() > 3, "a 300-byte limit rolls over: {} files", outputs.len());
        let mut exported: Vec<String> = Vec::new();
        for entry in outputs {
            let url = entry["url"].as_str().unwrap();
            assert!(url.starts_with(&format!("{}/{BUCKET}/nightly/", moto.endpoint())) && url.contains("X-Amz-Signature="), "{url}");
            exported.extend(app.download(entry).await.iter().map(|r: &Value| r["id"].as_str().unwrap().to_owned()));
        }
        exported.sort();
        written.sort();
        assert_eq!(exported, written);
        assert_eq!(moto.objects("nightly").await.len(), outputs.len());

        assert_eq!(app.client.delete(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
        wait_until("the objects are deleted", 20, async || moto.objects("nightly").await.is_empty()).await;
    }
}
