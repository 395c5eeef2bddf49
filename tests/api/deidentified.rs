//! De-identified export (`_anonymizationConfig`): at every level, GET and POST, with other
//! parameters; the configuration's ETag checked; every bad configuration refused at kick-off;
//! a configuration edited during an export does not change it; the keys never appear in the
//! job's row, its manifest or an error; a node with another anonymization key fails the task
//! saying so; a resource the rules cannot process fails the job (`processingErrors: raise`) or
//! is written empty (`skip`); and the configuration stores of the cloud destinations: Azure's
//! `anonymization` container on Azurite, S3's `anonymization/` prefix on moto.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bulkfhir::export::{deid::seal::ConfigKey, worker::{Ran, Worker, WorkerSettings}};
use object_store::{aws::AmazonS3Builder, azure::MicrosoftAzureBuilder, path::Path, ObjectStoreExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row, SqliteConnection};
use tokio_util::sync::CancellationToken;

use crate::{
    azurite::Azurite,
    helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_with, AppOptions, Backend, TestApp},
    moto::{Moto, BUCKET},
};

/// The keys of the test configurations: they must never be seen outside the server.
const HASH_KEY: &str = "hash-key-4b1d9e7730c2";
const SHIFT_KEY: &str = "shift-key-91aa03f6e5d8";

/// HIPAA Safe Harbor's identifiers, as the sample configuration treats them (a test's own
/// shorter set of rules).
fn config(hash_key: &str) -> Value {
    json!({
        "fhirVersion": "R4",
        "processingErrors": "raise",
        "fhirPathRules": [
            {"path": "Resource.id", "method": "cryptoHash"},
            {"path": "nodesByType('Reference').reference", "method": "cryptoHash"},
            {"path": "nodesByType('HumanName')", "method": "redact"},
            {"path": "nodesByType('Identifier')", "method": "redact"},
            {"path": "nodesByType('Address')", "method": "redact"},
            {"path": "nodesByType('ContactPoint')", "method": "redact"},
            {"path": "nodesByType('date')", "method": "dateShift"},
            {"path": "nodesByType('dateTime')", "method": "dateShift"}
        ],
        "parameters": {"cryptoHashKey": hash_key, "dateShiftKey": SHIFT_KEY, "dateShiftScope": "resource"}
    })
}

const PATIENTS: [&str; 2] = ["deid-patient-one", "deid-patient-two"];
/// A Patient whose birth date is not in the calendar (stored with validation off).
const BAD_PATIENT: &str = "deid-patient-bad-date";
const BAD_DATE: &str = "2019-02-30";

async fn load(app: &TestApp) {
    for (n, id) in PATIENTS.iter().enumerate() {
        let patient = json!({
            "resourceType": "Patient", "id": id, "gender": "female", "birthDate": "1970-03-0{n}".replace("{n}", &(n + 1).to_string()),
            "name": [{"family": "Quetzalcoatl", "given": ["Ximena"]}],
            "identifier": [{"system": "urn:ssn", "value": format!("999-00-000{n}")}],
            "address": [{"line": ["1 Zyzzyva Lane"], "city": "Ypsilanti", "state": "MI", "postalCode": "48197"}],
            "telecom": [{"system": "phone", "value": "555-0100"}]
        });
        assert!(app.put(&patient).await.status().is_success());
        let observation = json!({
            "resourceType": "Observation", "id": format!("deid-obs-{n}"), "status": if n == 0 { "final" } else { "amended" },
            "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{id}")},
            "effectiveDateTime": "2020-05-06T07:08:09Z", "valueQuantity": {"value": 70, "unit": "kg"}
        });
        assert!(app.put(&observation).await.status().is_success());
    }
    let group = json!({"resourceType": "Group", "id": "deid-group", "type": "person", "actual": true,
        "member": PATIENTS.iter().map(|p| json!({"entity": {"reference": format!("Patient/{p}")}})).collect::<Vec<_>>()});
    assert!(app.put(&group).await.status().is_success());
}

fn store_dir(app: &TestApp) -> std::path::PathBuf {
    crate::helpers::state_dir(app.output_dir.path()).join("anonymization")
}

/// Writes a configuration into the local store; its ETag (the content's SHA-256).
fn put_config(app: &TestApp, name: &str, content: &[u8]) -> String {
    std::fs::create_dir_all(store_dir(app)).unwrap();
    std::fs::write(store_dir(app).join(name), content).unwrap();
    bulkfhir::output::config_store::content_hash(content)
}

/// Every downloaded resource of a manifest, and the files' text.
async fn outputs(app: &TestApp, manifest: &Value) -> (Vec<Value>, String) {
    let mut all = Vec::new();
    let mut text = String::new();
    for entry in manifest["output"].as_array().unwrap() {
        // Read as text: organized files mix types (the helper's download checks one type).
        let body = app.client.get(entry["url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
        let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        text.push_str(&lines.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
        all.extend(lines);
    }
    (all, text)
}

/// What the de-identified output must be: no name, identifier, address or telecom; no stored
/// id; every Patient reference names an exported (hashed) Patient id.
fn assert_deidentified(resources: &[Value], text: &str) {
    for clear in ["Quetzalcoatl", "Ximena", "999-00-000", "Zyzzyva", "Ypsilanti", "555-0100", "deid-patient", "deid-obs", HASH_KEY, SHIFT_KEY] {
        assert!(!text.contains(clear), "'{clear}' is in the de-identified output: {text}");
    }
    let patients: BTreeSet<&str> = resources.iter().filter(|r| r["resourceType"] == "Patient").map(|r| r["id"].as_str().unwrap()).collect();
    assert!(!patients.is_empty(), "{text}");
    for r in resources {
        for element in ["name", "identifier", "address", "telecom"] {
            assert!(r.get(element).is_none(), "{element} left in {r}");
        }
        if let Some(subject) = r["subject"]["reference"].as_str() {
            let id = subject.strip_prefix("Patient/").unwrap_or_else(|| panic!("{subject}"));
            assert!(patients.contains(id), "{subject} is not an exported Patient's hashed id ({patients:?})");
        }
    }
}

/// The job's whole row as the database holds it, every column as text or bytes.
async fn raw_job_row(app: &TestApp, status_url: &str) -> Vec<u8> {
    let job = status_url.rsplit('/').next().unwrap();
    let mut raw = Vec::new();
    match app.db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&app.db.url).await.unwrap();
            let row = sqlx::query("SELECT CAST(j AS text) AS whole, anonymization FROM export_jobs j WHERE id = $1::uuid")
                .bind(job)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            raw.extend(row.get::<String, _>("whole").into_bytes());
            raw.extend(row.get::<Option<Vec<u8>>, _>("anonymization").expect("a sealed configuration"));
        }
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(&app.db.url).await.unwrap();
            let row = sqlx::query("SELECT request, owner, folder, coalesce(error, '') AS error, anonymization FROM export_jobs WHERE id = ?")
                .bind(job)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            for column in ["request", "owner", "folder", "error"] {
                raw.extend(row.get::<String, _>(column).into_bytes());
            }
            raw.extend(row.get::<Option<Vec<u8>>, _>("anonymization").expect("a sealed configuration"));
        }
    }
    raw
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The status response once the job has ended (manifest or failure).
async fn ended(app: &TestApp, status_url: &str) -> reqwest::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let response = app.client.get(status_url).send().await.unwrap();
        if response.status() != StatusCode::ACCEPTED {
            return response;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn body_text(response: reqwest::Response) -> (StatusCode, String) {
    (response.status(), response.text().await.unwrap())
}

backend_tests! {
    async fn every_level_exports_de_identified_resources(backend: Backend) {
        let app = spawn_app(backend).await;
        load(&app).await;
        let etag = put_config(&app, "safe-harbor.json", config(HASH_KEY).to_string().as_bytes());

        // System level, GET, with _type and _since.
        let status_url = app.kick_off("/$export?_anonymizationConfig=safe-harbor.json&_type=Patient,Observation&_since=2000-01-01T00:00:00Z").await;
        let manifest = app.wait_for_manifest(&status_url).await;
        assert_eq!(manifest["extension"], json!({"anonymizationConfig": "safe-harbor.json", "anonymizationConfigEtag": etag}));
        let (system, text) = outputs(&app, &manifest).await;
        assert_eq!(system.len(), 4, "{text}");
        assert_deidentified(&system, &text);
        assert!(!manifest.to_string().contains(HASH_KEY));
        // Dates shift; the shifted birth date is still a date.
        let birth = system.iter().find(|r| r["resourceType"] == "Patient").unwrap()["birthDate"].as_str().unwrap().to_owned();
        assert!(birth.len() == 10 && !birth.starts_with("1970-03-0"), "{birth}");
        // Hashing is stable: the same configuration gives the same ids in another export.
        let ids = |resources: &[Value]| resources.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<BTreeSet<_>>();

        // Patient level, POST, with the ETag and _typeFilter.
        let parameters = json!({"resourceType": "Parameters", "parameter": [
            {"name": "_anonymizationConfig", "valueString": "safe-harbor.json"},
            {"name": "_anonymizationConfigEtag", "valueString": etag},
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "_typeFilter", "valueString": "Observation?status=final"}]});
        let manifest = app.wait_for_manifest(&app.kick_off_post("/Patient/$export", &parameters, "respond-async").await).await;
        let (patient, text) = outputs(&app, &manifest).await;
        assert_eq!(patient.iter().filter(|r| r["resourceType"] == "Observation").count(), 1, "the filter judged the stored status: {text}");
        assert_deidentified(&patient, &text);
        assert!(ids(&patient).is_subset(&ids(&system)), "the same hashes in both exports");

        // Group level, GET, organized by patient: the block headers name the hashed ids too.
        let query = "/Group/deid-group/$export?_anonymizationConfig=safe-harbor.json&organizeOutputBy=Patient&_elements=Observation.subject,Patient.gender";
        let manifest = app.wait_for_manifest(&app.kick_off(query).await).await;
        let (group, text) = outputs(&app, &manifest).await;
        let headers: Vec<&Value> = group.iter().filter(|r| r["resourceType"] == "Parameters").collect();
        assert_eq!(headers.len(), 2, "{text}");
        let resources: Vec<Value> = group.iter().filter(|r| r["resourceType"] != "Parameters").cloned().collect();
        assert_deidentified(&resources, &text);
        for header in headers {
            let reference = header["parameter"][0]["valueReference"]["reference"].as_str().unwrap();
            assert!(ids(&system).contains(reference.strip_prefix("Patient/").unwrap()), "{reference}");
        }
        let observation = resources.iter().find(|r| r["resourceType"] == "Observation").unwrap();
        assert!(observation.get("effectiveDateTime").is_none() && observation["meta"]["tag"][0]["code"] == "SUBSETTED", "_elements after de-identification: {observation}");
    }

    async fn etags_must_match_and_bad_configurations_are_refused_at_kick_off(backend: Backend) {
        let app = spawn_app(backend).await;
        load(&app).await;
        let etag = put_config(&app, "good.json", config(HASH_KEY).to_string().as_bytes());
        let response = app.kick_off_raw("/$export?_anonymizationConfig=good.json&_anonymizationConfigEtag=0123abcd").await;
        let (status, text) = body_text(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(&etag) && text.contains("0123abcd") && text.contains("_anonymizationConfigEtag"), "names both ETags: {text}");
        // Quoted, as HTTP shows ETags: the same ETag.
        let quoted = format!("/$export?_anonymizationConfig=good.json&_anonymizationConfigEtag=%22{etag}%22");
        assert_eq!(app.kick_off_raw(&quoted).await.status(), StatusCode::ACCEPTED);

        let mut unknown_method = config(HASH_KEY);
        unknown_method["fhirPathRules"][2]["method"] = json!("scramble");
        let mut unknown_parameter = config(HASH_KEY);
        unknown_parameter["parameters"]["saltOfTheEarth"] = json!("x");
        let mut bad_path = config(HASH_KEY);
        bad_path["fhirPathRules"][2]["path"] = json!("Patient.name.where(");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("invalid.json", b"{\"fhirPathRules\": [".to_vec(), "invalid.json"),
            ("method.json", unknown_method.to_string().into_bytes(), "scramble"),
            ("parameter.json", unknown_parameter.to_string().into_bytes(), "saltOfTheEarth"),
            ("path.json", bad_path.to_string().into_bytes(), "Patient.name.where("),
        ];
        for (name, content, needle) in cases {
            put_config(&app, name, &content);
            let response = app.kick_off_raw(&format!("/$export?_anonymizationConfig={name}")).await;
            let (status, text) = body_text(response).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {text}");
            assert!(text.contains("OperationOutcome") && text.contains(needle) && text.contains("_anonymizationConfig"), "{name}: {text}");
            assert!(!text.contains(HASH_KEY) && !text.contains(SHIFT_KEY), "{name}: a key in the error: {text}");
        }
        assert_outcome(app.kick_off_raw("/$export?_anonymizationConfig=missing.json").await, StatusCode::BAD_REQUEST, "no configuration 'missing.json'").await;
        for name in ["..%2Fsecret.json", "a%2Fb.json", ".hidden"] {
            assert_outcome(app.kick_off_raw(&format!("/$export?_anonymizationConfig={name}")).await, StatusCode::BAD_REQUEST, "is not a configuration name").await;
        }
        assert_outcome(app.kick_off_raw("/$export?_anonymizationConfigEtag=x").await, StatusCode::BAD_REQUEST, "_anonymizationConfig").await;
        // The seed system's collection reference: refused, or under lenient handling left out
        // and reported in an error file.
        let collection = "/Patient/$export?_anonymizationConfigCollectionReference=registry.azurecr.io/configs:1&_anonymizationConfig=good.json";
        assert_outcome(app.kick_off_raw(collection).await, StatusCode::BAD_REQUEST, "not supported").await;
        let manifest = app.export_lenient(collection).await;
        assert_eq!(manifest["extension"]["anonymizationConfig"], "good.json");
        let errors = app.download(&manifest["error"][0]).await;
        assert!(errors[0].to_string().contains("_anonymizationConfigCollectionReference"), "{errors:?}");
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE anonymization IS NULL").await, 0, "every job recorded was de-identified");
    }

    async fn a_configuration_edited_during_an_export_does_not_change_it(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        load(&app).await;
        let etag = put_config(&app, "edited.json", config(HASH_KEY).to_string().as_bytes());
        let first = app.kick_off("/$export?_anonymizationConfig=edited.json&_type=Patient").await;
        // Now the file keeps names and hashes with another key.
        let mut keeps_names = config("another-hash-key");
        keeps_names["fhirPathRules"].as_array_mut().unwrap().retain(|rule| rule["path"] != "nodesByType('HumanName')");
        let edited_etag = put_config(&app, "edited.json", keeps_names.to_string().as_bytes());
        let second = app.kick_off("/$export?_anonymizationConfig=edited.json&_type=Patient").await;
        app.drain().await;

        let manifest = app.wait_for_manifest(&first).await;
        assert_eq!(manifest["extension"]["anonymizationConfigEtag"], json!(etag));
        let (before, text) = outputs(&app, &manifest).await;
        assert_deidentified(&before, &text);
        let manifest = app.wait_for_manifest(&second).await;
        assert_eq!(manifest["extension"]["anonymizationConfigEtag"], json!(edited_etag));
        let (after, text) = outputs(&app, &manifest).await;
        assert!(text.contains("Quetzalcoatl"), "the edited configuration keeps names: {text}");
        let ids = |resources: &[Value]| resources.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<BTreeSet<_>>();
        assert!(ids(&before).is_disjoint(&ids(&after)), "each job hashed with its own configuration's key");
    }

    async fn keys_never_reach_the_job_row_and_another_nodes_key_fails_the_task_plainly(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..Default::default() }).await;
        load(&app).await;
        put_config(&app, "secret.json", config(HASH_KEY).to_string().as_bytes());
        let status_url = app.kick_off("/$export?_anonymizationConfig=secret.json&_type=Patient").await;
        let row = raw_job_row(&app, &status_url).await;
        for clear in [HASH_KEY, SHIFT_KEY, "cryptoHashKey", "nodesByType"] {
            assert!(!contains(&row, clear), "'{clear}' is in the job's row in clear");
        }
        assert!(contains(&row, "secret.json"), "the row names the configuration");

        // A worker whose node has another anonymization key cannot open the configuration.
        let dir = tempfile::tempdir().unwrap();
        let other = Arc::new(ConfigKey::load_or_create(&dir.path().join("other.key")).unwrap());
        let settings = WorkerSettings { workers: 1, lease: Duration::from_secs(30), heartbeat: Duration::from_millis(200), max_attempts: 3, idle_poll: Duration::from_millis(100) };
        let worker = Worker::new("other-node".into(), app.stores.clone(), app.output.clone(), settings, CancellationToken::new()).with_config_key(other);
        assert_eq!(worker.run_next_task().await.unwrap(), Ran::Task);
        let response = app.client.get(&status_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = response.text().await.unwrap();
        assert!(text.contains("anonymization_key_file") && text.contains("cannot be decrypted"), "{text}");
        assert!(!text.contains(HASH_KEY));
    }

    async fn a_resource_the_rules_cannot_process_fails_the_job_or_is_written_empty_as_processing_errors_say(backend: Backend) {
        // Validation off: the store keeps a birth date that is not in the calendar, which
        // dateShift cannot move (the reference engine's processing error).
        let app = spawn_app_with(backend, AppOptions { validation: bulkfhir::fhir::Validation::Off, ..Default::default() }).await;
        load(&app).await;
        let bad = json!({"resourceType": "Patient", "id": BAD_PATIENT, "gender": "male", "birthDate": BAD_DATE,
            "name": [{"family": "Quetzalcoatl", "given": ["Ximena"]}]});
        assert!(app.put(&bad).await.status().is_success());
        let stored: Value = app.client.get(app.url(&format!("/Patient/{BAD_PATIENT}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(stored["birthDate"], BAD_DATE, "the store keeps the impossible date: {stored}");

        // raise: the job fails, naming the stored resource, and no key.
        put_config(&app, "raise.json", config(HASH_KEY).to_string().as_bytes());
        let status_url = app.kick_off("/$export?_anonymizationConfig=raise.json&_type=Patient,Observation").await;
        let response = ended(&app, &status_url).await;
        let (status, text) = body_text(response).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "the job failed: {text}");
        let outcome: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{text}");
        assert_eq!(outcome["issue"][0]["severity"], "error", "{text}");
        let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains(&format!("Patient/{BAD_PATIENT}")) && diagnostics.contains(BAD_DATE), "names the resource and its value: {diagnostics}");
        for key in [HASH_KEY, SHIFT_KEY] {
            assert!(!text.contains(key), "a key in the failed job's outcome: {text}");
        }

        // skip: the export completes; that resource is the reference engine's empty resource,
        // the others are de-identified as ever.
        let mut skip = config(HASH_KEY);
        skip["processingErrors"] = json!("skip");
        put_config(&app, "skip.json", skip.to_string().as_bytes());
        let manifest = app.wait_for_manifest(&app.kick_off("/$export?_anonymizationConfig=skip.json&_type=Patient,Observation").await).await;
        let (resources, text) = outputs(&app, &manifest).await;
        assert_eq!(resources.len(), 5, "three Patients and two Observations: {text}");
        let empty = json!({"resourceType": "Patient", "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED", "display": "redacted"}]}});
        let (emptied, rest): (Vec<Value>, Vec<Value>) = resources.into_iter().partition(|r| r.get("id").is_none());
        assert_eq!(emptied, [empty], "the resource that failed is written empty: {text}");
        assert!(!text.contains(BAD_DATE) && !text.contains(BAD_PATIENT), "{text}");
        assert_eq!(rest.iter().filter(|r| r["resourceType"] == "Patient").count(), 2, "{text}");
        assert_deidentified(&rest, &text);
        for patient in rest.iter().filter(|r| r["resourceType"] == "Patient") {
            let birth = patient["birthDate"].as_str().unwrap();
            assert!(birth.len() == 10 && !birth.starts_with("1970-03-0"), "the others' dates shift: {birth}");
        }
    }
}

/// The Azure configuration store is the `anonymization` container of the export account: the
/// blob's ETag is the one to give, quoted or not.
#[tokio::test]
async fn the_azure_configuration_store_is_the_anonymization_container() {
    let azurite = Azurite::start();
    let app = spawn_app_with(Backend::Sqlite, AppOptions { output: azurite.settings(), ..Default::default() }).await;
    load(&app).await;
    let container = MicrosoftAzureBuilder::new()
        .with_endpoint(azurite.endpoint())
        .with_allow_http(true)
        .with_account("devstoreaccount1")
        .with_access_key(bulkfhir::output::settings::AZURITE_KEY)
        .with_container_name("anonymization")
        .build()
        .unwrap();
    // Written through the server's own Azure output, which makes the container as it writes.
    let mut file = app.output.create("anonymization/azure.json").await.unwrap();
    file.write(config(HASH_KEY).to_string().as_bytes()).await.unwrap();
    file.finish().await.unwrap();
    let head = container.head(&"azure.json".into()).await.unwrap();
    let etag = head.e_tag.expect("Azure gives an ETag");

    let query = format!("/$export?_anonymizationConfig=azure.json&_anonymizationConfigEtag={}&_type=Patient,Observation", urlencode(&etag));
    let manifest = app.wait_for_manifest(&app.kick_off(&query).await).await;
    assert_eq!(manifest["extension"]["anonymizationConfigEtag"], json!(etag.trim_matches('"')));
    let (resources, text) = outputs(&app, &manifest).await;
    assert_eq!(resources.len(), 4);
    assert_deidentified(&resources, &text);

    let (status, text) = body_text(app.kick_off_raw("/$export?_anonymizationConfig=azure.json&_anonymizationConfigEtag=0x0").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains(etag.trim_matches('"')) && text.contains("0x0"), "{text}");
    assert_outcome(app.kick_off_raw("/$export?_anonymizationConfig=absent.json").await, StatusCode::BAD_REQUEST, "container 'anonymization'").await;
}

/// The S3 configuration store is the `anonymization/` prefix of the export bucket: the object's
/// ETag, as S3 reports it (quoted), is the one to give.
#[tokio::test]
async fn the_s3_configuration_store_is_the_anonymization_prefix_of_the_bucket() {
    let moto = Moto::start().await;
    let app = spawn_app_with(Backend::Sqlite, AppOptions { output: moto.settings(), ..Default::default() }).await;
    load(&app).await;
    let bucket = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    // Put with the test's own client, as an operator uploads a configuration.
    let key = Path::from("anonymization/s3.json");
    bucket.put(&key, config(HASH_KEY).to_string().into()).await.unwrap();
    let etag = bucket.head(&key).await.unwrap().e_tag.expect("S3 gives an ETag");
    assert!(!store_dir(&app).join("s3.json").exists(), "not in the local store: the configuration can only come from the bucket");

    let query = format!("/$export?_anonymizationConfig=s3.json&_anonymizationConfigEtag={}&_type=Patient,Observation", urlencode(&etag));
    let status_url = app.kick_off(&query).await;
    let manifest = app.wait_for_manifest(&status_url).await;
    assert_eq!(manifest["extension"], json!({"anonymizationConfig": "s3.json", "anonymizationConfigEtag": etag.trim_matches('"')}));
    assert!(!manifest.to_string().contains(HASH_KEY));
    // The files, read back from the bucket with the test's own client.
    let mut resources = Vec::new();
    let mut text = String::new();
    let prefix = format!("{}/{BUCKET}/", moto.endpoint());
    for entry in manifest["output"].as_array().unwrap() {
        let url = entry["url"].as_str().unwrap();
        let object = url.strip_prefix(&prefix).and_then(|rest| rest.split('?').next()).unwrap_or_else(|| panic!("not in the bucket: {url}"));
        let bytes = bucket.get(&Path::from_url_path(object).unwrap()).await.unwrap().bytes().await.unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        text.push_str(&body);
        resources.extend(body.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    assert_eq!(resources.len(), 4, "{text}");
    assert_deidentified(&resources, &text);
    let ids: BTreeSet<&str> = resources.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "every id hashed to its own value: {text}");
    assert!(ids.iter().all(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())), "ids are hashes: {ids:?}");

    let (status, text) = body_text(app.kick_off_raw("/$export?_anonymizationConfig=s3.json&_anonymizationConfigEtag=0x0").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("OperationOutcome") && text.contains(etag.trim_matches('"')) && text.contains("0x0"), "names both ETags: {text}");
    assert_outcome(app.kick_off_raw("/$export?_anonymizationConfig=absent.json").await, StatusCode::BAD_REQUEST, "under anonymization/").await;
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
