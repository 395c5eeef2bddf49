//! The test app: the real server on a free port, over HTTP, against a fresh database of the
//! backend under test (a Postgres database, or a SQLite file) that is removed afterwards. Quiet
//! unless `TEST_LOG` is set.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    sync::Once,
    time::{Duration, Instant},
};

use bulkfhir::{
    auth::settings::AuthSettings,
    config::{KickoffHeaders, Settings},
    export::worker::{Ran, Worker},
    output::Output,
    startup::Application,
    store::Stores,
    telemetry::LogFormat,
};
use reqwest::{header, Client, Response, StatusCode};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio_util::sync::CancellationToken;

/// The storage backends. Every integration test runs against each of them from one body, by
/// [`backend_tests!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Declares each `async fn name(backend: Backend)` once and runs it as two tests,
/// `name::postgres` and `name::sqlite`. The body stays an ordinary function (a function and a
/// module may share a name), so a failure points at the test's own lines.
macro_rules! backend_tests {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block)*) => {$(
        $(#[$meta])*
        async fn $name($backend: $crate::helpers::Backend) $body

        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }

            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
        }
    )*};
}
pub(crate) use backend_tests;

/// Where the tests find Postgres; each Postgres test creates (and drops) its own database there.
pub fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, empty database for one test: a Postgres database that is dropped afterwards, or a
/// SQLite file in a temporary directory that is removed afterwards.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    place: Place,
}

enum Place {
    Postgres { name: String },
    Sqlite { _dir: tempfile::TempDir },
    /// A database of a server the test runs itself; the test cleans up.
    Given,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let server = postgres_server_url();
                let name = format!("bulkfhir_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.unwrap_or_else(|e| {
                    panic!("Postgres is not reachable at {server} ({e}). The tests need a real Postgres: start it, or set TEST_DATABASE_URL.")
                });
                admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create the test database");
                Self { backend, url: format!("{server}/{name}"), place: Place::Postgres { name } }
            }
            Backend::Sqlite => {
                // The server creates the file; the URL is sqlite:// and an absolute path.
                let dir = tempfile::tempdir().expect("temp dir for the SQLite database");
                let url = format!("sqlite://{}", dir.path().join("bulkfhir.db").display());
                Self { backend, url, place: Place::Sqlite { _dir: dir } }
            }
        }
    }

    /// The Postgres database at `url`, on a server the test manages itself.
    pub fn given(url: &str) -> Self {
        Self { backend: Backend::Postgres, url: url.to_owned(), place: Place::Given }
    }

    /// A one-number query (`SELECT count(*) ...`) run on a connection of the test's own, beside
    /// the server's. The SQL must be valid in both backends.
    pub async fn count(&self, sql: &'static str) -> i64 {
        match self.backend {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect to the test database");
                sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.expect(sql)
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url).await.expect("open the test database");
                sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.expect(sql)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Place::Postgres { name } = &self.place else {
            return; // the SQLite file goes with its temporary directory
        };
        let (server, name) = (postgres_server_url(), name.clone());
        // Drop runs outside async context guarantees: use a thread with its own runtime.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
                admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await.map(drop)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.url);
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppOptions {
    pub workers: usize,
    pub max_file_bytes: u64,
    pub retention_seconds: u64,
    pub lease_seconds: u64,
    pub heartbeat_millis: u64,
    pub max_attempts: i32,
    pub max_body_bytes: usize,
    pub kickoff_headers: KickoffHeaders,
    pub database_acquire_timeout_millis: u64,
    pub header_read_timeout_seconds: u64,
    /// Authorization: open by default (no clients); auth tests register clients.
    pub auth: AuthSettings,
    pub output: bulkfhir::output::OutputSettings,
    pub validation: bulkfhir::fhir::Validation,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            max_file_bytes: 64 * 1024 * 1024,
            retention_seconds: 3600,
            lease_seconds: 30,
            heartbeat_millis: 200,
            max_attempts: 3,
            max_body_bytes: 16 * 1024 * 1024,
            kickoff_headers: KickoffHeaders::Strict,
            database_acquire_timeout_millis: 3000,
            header_read_timeout_seconds: 10,
            auth: AuthSettings::default(),
            output: Default::default(),
            validation: Default::default(),
        }
    }
}

pub struct TestApp {
    pub base_url: String,
    pub client: Client,
    pub stores: Stores,
    pub output: Output,
    pub output_dir: tempfile::TempDir,
    pub options: AppOptions,
    config_key: std::sync::Arc<bulkfhir::export::deid::seal::ConfigKey>,
    shutdown: CancellationToken,
    // Dropped last, after the server stopped using it.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(state_dir(self.output_dir.path()));
    }
}

/// The anonymization store and key of a test's nodes: beside its output folder, not in it (tests
/// count what is left there), shared by the nodes of one test, removed with its app.
pub(crate) fn state_dir(output_dir: &std::path::Path) -> std::path::PathBuf {
    let mut name = output_dir.file_name().expect("a temporary folder has a name").to_owned();
    name.push(".state");
    output_dir.with_file_name(name)
}

static TRACING: Once = Once::new();

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    spawn_app_in(TestDb::create(backend).await, options).await
}

/// The test app on a database the caller provides.
pub async fn spawn_app_in(db: TestDb, options: AppOptions) -> TestApp {
    let url = db.url.clone();
    spawn_app_on(db, &url, options).await
}

/// The app on a test database it reaches at `database_url` (through a proxy, say).
pub async fn spawn_app_on(db: TestDb, database_url: &str, options: AppOptions) -> TestApp {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            bulkfhir::telemetry::init(LogFormat::Text);
        }
    });
    let output_dir = tempfile::tempdir().expect("temp dir");
    let app = Application::build(settings(database_url, output_dir.path(), &options)).await.expect("the app builds");
    let (base_url, stores, output, shutdown) =
        (app.base_url().to_owned(), app.stores().clone(), app.output().clone(), app.shutdown_token());
    let config_key = app.config_key();
    tokio::spawn(app.run_until_stopped());
    // Azurite (Node) closes idle keep-alive connections after 5 s; a pooled connection reused
    // just as it closes fails with IncompleteMessage. Never reuse one idle that long.
    let client = Client::builder().pool_idle_timeout(Duration::from_secs(2)).build().expect("an HTTP client");
    TestApp { base_url, client, stores, output, output_dir, options, config_key, shutdown, db }
}

pub(crate) fn settings(database_url: &str, output_dir: &std::path::Path, options: &AppOptions) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        base_url: String::new(),
        database_url: database_url.to_owned(),
        database_pool_size: 8,
        database_acquire_timeout_millis: options.database_acquire_timeout_millis,
        output_dir: output_dir.to_owned(),
        anonymization_dir: state_dir(output_dir).join("anonymization"),
        anonymization_key_file: state_dir(output_dir).join("anonymization.key"),
        max_file_bytes: options.max_file_bytes,
        part_size_bytes: 1024 * 1024,
        workers: options.workers,
        retention_seconds: options.retention_seconds,
        lease_seconds: options.lease_seconds,
        heartbeat_millis: options.heartbeat_millis,
        max_attempts: options.max_attempts,
        sweep_seconds: 1,
        max_body_bytes: options.max_body_bytes,
        log_format: LogFormat::Text,
        request_timeout_seconds: 60,
        kickoff_headers: options.kickoff_headers,
        header_read_timeout_seconds: options.header_read_timeout_seconds,
        concurrent_large_bodies: 2,
        validation: options.validation,
        auth: options.auth.clone(),
        output: options.output.clone(),
    }
}

/// Another server node on a test app's database and output folder. It stops when dropped.
pub struct Node {
    pub base_url: String,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Node {
    /// Stops the node and waits until its workers have stopped (none claims anything after).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.await.expect("the node stops").expect("the node served");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Starts a second server node on the same database and output folder, with its own
    /// workers and its own HTTP address, as a scaled-out deployment runs.
    pub async fn spawn_node(&self, workers: usize) -> Node {
        let options = AppOptions { workers, ..self.options.clone() };
        let node = Application::build(settings(&self.db.url, self.output_dir.path(), &options)).await.expect("the node builds");
        let (base_url, shutdown) = (node.base_url().to_owned(), node.shutdown_token());
        Node { base_url, shutdown, running: Some(tokio::spawn(node.run_until_stopped())) }
    }
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthea-r4-100")
}

/// The fixture's resources per type, read straight from the files (not through the server).
pub fn fixture_resources() -> BTreeMap<String, Vec<Value>> {
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".ndjson.gz") {
            continue;
        }
        let reader = BufReader::new(flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()));
        for line in reader.lines() {
            let value: Value = serde_json::from_str(&line.unwrap()).unwrap();
            by_type.entry(value["resourceType"].as_str().unwrap().to_owned()).or_default().push(value);
        }
    }
    by_type
}

/// A resource without the server's `meta.versionId` and `meta.lastUpdated`, as it was loaded.
pub fn without_server_meta(mut resource: Value) -> Value {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            resource.as_object_mut().unwrap().remove("meta");
        }
    }
    resource
}

/// Canonical text of each resource, sorted: a multiset to compare exports with.
pub fn multiset<'a>(resources: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut lines: Vec<String> = resources.into_iter().map(canonical).collect();
    lines.sort();
    lines
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys.iter().map(|k| format!("{:?}:{}", k, canonical(&map[*k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn load_synthea(&self) {
        let report = bulkfhir::load::load(self.stores.resources.as_ref(), &[fixture_dir()]).await.expect("the fixture loads");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(report.total(), 38_473);
    }

    pub async fn put(&self, resource: &Value) -> Response {
        let url = self.url(&format!("/{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap()));
        self.client.put(url).json(resource).send().await.unwrap()
    }

    /// A GET kick-off with the headers the spec asks for.
    pub async fn kick_off_raw(&self, path_and_query: &str) -> Response {
        self.kick_off_prefer_raw(path_and_query, "respond-async").await
    }

    /// A GET kick-off with this `Prefer` header.
    pub async fn kick_off_prefer_raw(&self, path_and_query: &str, prefer: &str) -> Response {
        self.client
            .get(self.url(path_and_query))
            .header(header::ACCEPT, "application/fhir+json")
            .header("prefer", prefer)
            .send()
            .await
            .unwrap()
    }

    /// A POST kick-off with a `Parameters` body and this `Prefer` header.
    pub async fn kick_off_post_raw(&self, path: &str, parameters: &Value, prefer: &str) -> Response {
        self.client
            .post(self.url(path))
            .header(header::ACCEPT, "application/fhir+json")
            .header("prefer", prefer)
            .json(parameters)
            .send()
            .await
            .unwrap()
    }

    /// Kicks off and returns the status URL, asserting the 202.
    pub async fn kick_off(&self, path_and_query: &str) -> String {
        status_url(self.kick_off_raw(path_and_query).await).await
    }

    /// A POST kick-off; returns the status URL, asserting the 202.
    pub async fn kick_off_post(&self, path: &str, parameters: &Value, prefer: &str) -> String {
        status_url(self.kick_off_post_raw(path, parameters, prefer).await).await
    }

    /// A GET kick-off under `Prefer: handling=lenient`, waited on until its manifest arrives.
    pub async fn export_lenient(&self, path_and_query: &str) -> Value {
        let status_url = status_url(self.kick_off_prefer_raw(path_and_query, LENIENT).await).await;
        self.wait_for_manifest(&status_url).await
    }

    /// Polls the status URL until the manifest arrives. 202s must carry X-Progress and a
    /// whole-seconds Retry-After.
    pub async fn wait_for_manifest(&self, status_url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let response = self.client.get(status_url).send().await.unwrap();
            match response.status() {
                StatusCode::OK => {
                    assert!(response.headers().contains_key(header::EXPIRES));
                    return response.json().await.unwrap();
                }
                StatusCode::ACCEPTED => {
                    assert!(response.headers().contains_key("x-progress"));
                    let retry = response.headers()[header::RETRY_AFTER].to_str().unwrap();
                    assert!(retry.parse::<u32>().is_ok(), "Retry-After must be whole seconds: {retry}");
                }
                other => panic!("status {other}: {}", response.text().await.unwrap()),
            }
            assert!(Instant::now() < deadline, "export did not finish in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Downloads one file; checks its content type and that it is clean NDJSON of one type.
    pub async fn download(&self, entry: &Value) -> Vec<Value> {
        let response = self.client.get(entry["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/fhir+ndjson");
        let text = response.text().await.unwrap();
        assert!(text.ends_with('\n'), "a file ends with a newline");
        text.lines()
            .map(|line| {
                assert!(!line.is_empty(), "no blank lines");
                let value: Value = serde_json::from_str(line).expect("each line is JSON");
                assert_eq!(value["resourceType"], entry["type"], "every line has the file's type");
                value
            })
            .collect()
    }

    /// Every output resource of a manifest, by type, checking each file's `count`.
    pub async fn download_all(&self, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
        let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for entry in manifest["output"].as_array().unwrap() {
            let lines = self.download(entry).await;
            assert_eq!(entry["count"].as_u64().unwrap() as usize, lines.len(), "count of {}", entry["url"]);
            by_type.entry(entry["type"].as_str().unwrap().to_owned()).or_default().extend(lines);
        }
        by_type
    }

    /// Runs export tasks in this test's own worker until none is left (for apps started
    /// with no workers).
    pub async fn drain(&self) {
        let worker = self.test_worker();
        while worker.run_next_task().await.expect("the worker runs") == Ran::Task {}
    }

    /// Runs one export task in this test's own worker; false when there was none.
    pub async fn run_one_task(&self) -> bool {
        self.test_worker().run_next_task().await.expect("the worker runs") == Ran::Task
    }

    /// A worker of the test's own, for apps started without workers (or beside theirs).
    pub fn test_worker(&self) -> Worker {
        let settings = bulkfhir::export::worker::WorkerSettings {
            workers: 1,
            lease: Duration::from_secs(self.options.lease_seconds),
            heartbeat: Duration::from_millis(self.options.heartbeat_millis),
            max_attempts: self.options.max_attempts,
            idle_poll: Duration::from_millis(100),
        };
        Worker::new("test-worker".into(), self.stores.clone(), self.output.clone(), settings, CancellationToken::new())
            .with_config_key(self.config_key.clone())
    }
}

/// The `Prefer` header of a lenient kick-off: what cannot be honoured is left out and reported.
pub const LENIENT: &str = "respond-async, handling=lenient";

/// The status URL of a kick-off's 202 (asserted, with an absolute Content-Location).
async fn status_url(response: Response) -> String {
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap());
    let location = response.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://"), "Content-Location must be absolute: {location}");
    location
}

/// Asserts an OperationOutcome response with this status whose diagnostics mention `needle`.
pub async fn assert_outcome(response: Response, status: StatusCode, needle: &str) {
    let url = response.url().to_string();
    if response.status() != status {
        panic!("{url}: expected {status}, got {}: {}", response.status(), response.text().await.unwrap_or_default());
    }
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/fhir+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    let text = body["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(text.contains(needle), "diagnostics '{text}' should mention '{needle}'");
}
