//! The export path survives what stored data, bugs and the database throw at it: a malformed
//! stored date, a panicking task, an unreadable Group, a warnings file beside exported
//! OperationOutcomes, and the database going away in the middle of an export.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bulkfhir::{
    export::worker::{Ran, TaskHook, Worker},
    model::job::ClaimedTask,
};
use futures::FutureExt;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::{assert_outcome, backend_tests, spawn_app, spawn_app_on, spawn_app_with, AppOptions, Backend, TestApp, TestDb};

/// Runs one statement on the test's own connection (not the server's).
async fn execute(db: &TestDb, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
}

/// One number, from SQL written for each backend.
async fn scalar(db: &TestDb, postgres: &str, sqlite: &str) -> i64 {
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(postgres.to_owned())).fetch_one(&mut conn).await.unwrap()
        }
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sqlite.to_owned())).fetch_one(&mut conn).await.unwrap()
        }
    }
}

/// A worker of the test's own with a hook run at the start of every task.
fn hooked_worker(app: &TestApp, hook: TaskHook) -> Worker {
    app.test_worker().with_task_hook(hook)
}

/// The status response once the job has ended (the test's worker runs tasks until then).
async fn run_until_ended(app: &TestApp, worker: &Worker, status_url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.client.get(status_url).send().await.unwrap();
        if response.status() != StatusCode::ACCEPTED {
            return response;
        }
        assert!(Instant::now() < deadline, "the job did not end");
        if !matches!(worker.run_next_task().await, Ok(Ran::Task)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The diagnostics of a failed job's OperationOutcome.
async fn failure(app: &TestApp, status_url: &str) -> String {
    let response = app.client.get(status_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    outcome["issue"][0]["diagnostics"].as_str().unwrap().to_owned()
}

backend_tests! {
    async fn a_malformed_stored_date_does_not_stop_an_export(backend: Backend) {
        let app = spawn_app(backend).await;
        for (id, date) in [("bad", "2020-01-01T00:00:00Z"), ("good", "2021-06-01")] {
            let obs = json!({"resourceType":"Observation","id":id,"status":"final","code":{"text":"x"},"effectiveDateTime":date});
            assert!(app.put(&obs).await.status().is_success());
        }
        // Stored as a careless feed wrote it (the write path may refuse it by now).
        execute(&app.db, "UPDATE resources SET body = replace(body, '2020-01-01T00:00:00Z', '2020-01-01Té12345') \
                          WHERE resource_type = 'Observation' AND id = 'bad'").await;

        // Twice: a panic used to leave the worker gone and the second export queued for good.
        for _ in 0..2 {
            let status = app.kick_off("/$export?_type=Observation&_typeFilter=Observation%3Fdate%3Dge2000").await;
            let manifest = app.wait_for_manifest(&status).await;
            let exported = app.download_all(&manifest).await;
            let ids: Vec<&str> = exported["Observation"].iter().map(|o| o["id"].as_str().unwrap()).collect();
            assert_eq!(ids, ["good"], "the malformed date matches nothing");
        }

        // The same value as a kick-off filter is a 400 naming it, not a 500.
        for filter in ["Observation%3Fdate%3D2020-01-01T%25C3%25A912345", "Observation%3Fdate%3D2020-01-01T%C3%A912345"] {
            let response = app.kick_off_raw(&format!("/$export?_type=Observation&_typeFilter={filter}")).await;
            assert_outcome(response, StatusCode::BAD_REQUEST, "2020-01-01Té12345").await;
        }
    }

    async fn a_panicking_task_fails_its_job_and_the_worker_goes_on(backend: Backend) {
        let options = AppOptions { workers: 0, max_attempts: 2, heartbeat_millis: 100, ..AppOptions::default() };
        let app = spawn_app_with(backend, options).await;
        assert!(app.put(&json!({"resourceType":"Patient","id":"p"})).await.status().is_success());
        assert!(app.put(&json!({"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"}})).await.status().is_success());
        let hook: TaskHook = Arc::new(|task: &ClaimedTask| {
            assert!(task.resource_type != "Observation", "injected fault: Observation tasks panic");
            async {}.boxed()
        });
        let worker = hooked_worker(&app, hook);
        let status = app.kick_off("/$export?_type=Patient,Observation").await;

        // The first attempt panics and is handed back for a retry after a backoff.
        let attempts = async || {
            let pg = "SELECT attempts::bigint FROM export_tasks WHERE resource_type = 'Observation'";
            scalar(&app.db, pg, "SELECT attempts FROM export_tasks WHERE resource_type = 'Observation'").await
        };
        while attempts().await == 0 {
            assert!(worker.run_next_task().await.expect("the worker runs") == Ran::Task);
        }
        // Its heartbeat ended with it: nothing renews the lease any more.
        let lease_pg = "SELECT (extract(epoch FROM lease_expires_at) * 1000000)::bigint FROM export_tasks WHERE resource_type = 'Observation'";
        let lease_lite = "SELECT lease_expires_at FROM export_tasks WHERE resource_type = 'Observation'";
        let lease = scalar(&app.db, lease_pg, lease_lite).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(scalar(&app.db, lease_pg, lease_lite).await, lease, "a heartbeat still renews the lease of an ended task");

        // The second attempt panics too: the job fails with an OperationOutcome naming the type.
        let response = run_until_ended(&app, &worker, &status).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let outcome: Value = response.json().await.unwrap();
        let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains("exporting Observation failed"), "{diagnostics}");
        assert!(!diagnostics.contains("injected"), "the panic's text stays in the log: {diagnostics}");
        assert_eq!(attempts().await, 2);

        // The same worker takes the next job.
        let status = app.kick_off("/$export?_type=Patient").await;
        let response = run_until_ended(&app, &worker, &status).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn a_failed_jobs_outcome_speaks_the_clients_terms_without_paths_or_database_internals(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { workers: 0, ..AppOptions::default() }).await;
        assert!(app.put(&json!({"resourceType":"Patient","id":"a"})).await.status().is_success());

        // The output directory turns into a file: the error names a server path.
        let status = app.kick_off("/$export?_type=Patient").await;
        let root = app.output_dir.path();
        std::fs::remove_dir_all(root).unwrap();
        std::fs::write(root, b"not a directory").unwrap();
        app.drain().await;
        let diagnostics = failure(&app, &status).await;
        assert!(diagnostics.contains("exporting Patient failed") && diagnostics.contains("writing the export files"), "{diagnostics}");
        assert!(!diagnostics.contains(root.to_str().unwrap()) && !diagnostics.contains("/tmp"), "{diagnostics}");
        std::fs::remove_file(root).unwrap();
        std::fs::create_dir(root).unwrap();

        // Recording the files fails the same way every time: the job fails at once, saying so
        // (not a lease later, blaming lost workers).
        let status = app.kick_off("/$export?_type=Patient").await;
        execute(&app.db, "ALTER TABLE export_files RENAME TO export_files_gone").await;
        app.drain().await;
        let diagnostics = failure(&app, &status).await;
        assert!(diagnostics.contains("exporting Patient failed: recording its files failed"), "{diagnostics}");
        execute(&app.db, "ALTER TABLE export_files_gone RENAME TO export_files").await;

        // The resources table is gone: the error is the database's own.
        let status = app.kick_off("/$export?_type=Patient").await;
        execute(&app.db, "ALTER TABLE resources RENAME TO resources_gone").await;
        app.drain().await;
        let diagnostics = failure(&app, &status).await;
        assert!(diagnostics.contains("exporting Patient failed") && diagnostics.contains("reading the stored resources"), "{diagnostics}");
        for internal in ["resources_gone", "relation", "no such table", "SELECT", "database error"] {
            assert!(!diagnostics.contains(internal), "{diagnostics}");
        }
    }

    async fn the_warnings_file_does_not_collide_with_exported_operation_outcomes(backend: Backend) {
        let app = spawn_app(backend).await;
        let stored = json!({"resourceType":"OperationOutcome","id":"oo","issue":[{"severity":"information","code":"informational"}]});
        assert!(app.put(&stored).await.status().is_success());
        let manifest = app.export_lenient("/$export?_type=OperationOutcome&_bogus=1").await;

        let exported = app.download_all(&manifest).await;
        assert_eq!(exported["OperationOutcome"].len(), 1);
        assert_eq!(exported["OperationOutcome"][0]["id"], "oo");
        let errors = manifest["error"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{manifest}");
        let warnings = app.download(&errors[0]).await;
        assert!(warnings[0]["issue"][0]["diagnostics"].as_str().unwrap().contains("_bogus"), "{warnings:?}");
        let output_url = manifest["output"][0]["url"].as_str().unwrap();
        assert_ne!(errors[0]["url"].as_str().unwrap(), output_url);
    }

    async fn an_unreadable_stored_group_is_refused_not_exported_empty(backend: Backend) {
        let app = spawn_app(backend).await;
        assert!(app.put(&json!({"resourceType":"Patient","id":"p"})).await.status().is_success());
        for id in ["broken", "odd"] {
            let group = json!({"resourceType":"Group","id":id,"type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p"}}]});
            assert!(app.put(&group).await.status().is_success());
        }
        let broken = r#"{"resourceType":"Group","id":"broken","#;
        let odd = r#"{"resourceType":"Group","id":"odd","type":"person","actual":true,"member":{"entity":{"reference":"Patient/p"}}}"#;
        for (id, body) in [("broken", broken), ("odd", odd)] {
            execute(&app.db, &format!("UPDATE resources SET body = '{body}' WHERE resource_type = 'Group' AND id = '{id}'")).await;
        }
        let response = app.kick_off_raw("/Group/broken/$export").await;
        assert_outcome(response, StatusCode::UNPROCESSABLE_ENTITY, "Group/broken").await;
        let response = app.kick_off_raw("/Group/odd/$export").await;
        assert_outcome(response, StatusCode::UNPROCESSABLE_ENTITY, "'member' is not a list").await;
    }
}

/// A TCP proxy in front of Postgres that the test can take down (refusing new connections and
/// cutting open ones) and bring back, as a database restart or a network cut looks to the server.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<Mutex<CancellationToken>>,
    _accepting: AbortOnDrop,
}

/// A spawned task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let (up_flag, cuts) = (up.clone(), cut.clone());
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !up_flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let cut = cuts.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self { port, up, cut, _accepting: AbortOnDrop(accepting) }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.cut.lock().unwrap()).cancel();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A Postgres test app whose server reaches its database through a [`Proxy`].
async fn app_behind_proxy(options: AppOptions) -> (TestApp, Arc<Proxy>) {
    let db = TestDb::create(Backend::Postgres).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let target = tokio::net::lookup_host(target).await.unwrap().next().unwrap();
    let proxy = Arc::new(Proxy::start(target).await);
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    let app = spawn_app_on(db, url.as_str(), options).await;
    for n in 0..3 {
        assert!(app.put(&json!({"resourceType":"Patient","id":format!("p{n}")})).await.status().is_success());
        let obs = json!({"resourceType":"Observation","id":format!("o{n}"),"status":"final","code":{"text":"x"},"subject":{"reference":format!("Patient/p{n}")}});
        assert!(app.put(&obs).await.status().is_success());
    }
    (app, proxy)
}

/// Runs the worker's tasks in the background until dropped, whatever the database does.
fn keep_working(worker: Worker) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            if !matches!(worker.run_next_task().await, Ok(Ran::Task)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }))
}

#[tokio::test]
async fn an_export_outlives_a_database_outage_and_polls_meanwhile_get_503_transient() {
    let options = AppOptions { workers: 0, max_attempts: 5, database_acquire_timeout_millis: 500, ..AppOptions::default() };
    let (app, proxy) = app_behind_proxy(options).await;
    let outage = Arc::new(tokio::sync::Notify::new());
    let hook: TaskHook = {
        let (proxy, outage) = (proxy.clone(), outage.clone());
        // The database goes away as the first Observation attempt starts reading.
        Arc::new(move |task: &ClaimedTask| {
            if task.resource_type == "Observation" && task.fence == 1 {
                proxy.down();
                outage.notify_one();
            }
            async {}.boxed()
        })
    };
    let status = app.kick_off("/$export?_type=Patient,Observation").await;
    let _working = keep_working(hooked_worker(&app, hook));
    tokio::time::timeout(Duration::from_secs(30), outage.notified()).await.expect("the Observation task starts");

    // While it is down, a status poll says so plainly: 503, Retry-After, transient.
    let deadline = Instant::now() + Duration::from_secs(10);
    let unavailable = loop {
        let response = app.client.get(&status).send().await.unwrap();
        match response.status() {
            StatusCode::ACCEPTED => {}
            StatusCode::SERVICE_UNAVAILABLE => break response,
            other => panic!("status {other} during the outage: {}", response.text().await.unwrap()),
        }
        assert!(Instant::now() < deadline, "no 503 during the outage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let retry_after = unavailable.headers()[header::RETRY_AFTER].to_str().unwrap().to_owned();
    assert!(retry_after.parse::<u32>().is_ok_and(|s| s > 0), "{retry_after}");
    let outcome: Value = unavailable.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "transient");

    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let manifest = app.wait_for_manifest(&status).await;
    let exported = app.download_all(&manifest).await;
    assert_eq!(exported["Patient"].len(), 3);
    assert_eq!(exported["Observation"].len(), 3, "the Observation task was retried, not failed");
    let attempts = app.db.count("SELECT attempts::bigint FROM export_tasks WHERE resource_type = 'Observation'").await;
    assert!(attempts >= 2, "attempts {attempts}");
}

#[tokio::test]
async fn a_task_that_cannot_renew_its_lease_stops_before_it_runs_out() {
    let options = AppOptions { workers: 0, lease_seconds: 3, heartbeat_millis: 200, max_attempts: 5, database_acquire_timeout_millis: 500, ..AppOptions::default() };
    let (app, proxy) = app_behind_proxy(options).await;
    let hook: TaskHook = {
        let proxy = proxy.clone();
        // The database goes away and the task then hangs, deaf to its stop signal.
        Arc::new(move |task: &ClaimedTask| {
            if task.resource_type == "Observation" && task.fence == 1 {
                proxy.down();
                return tokio::time::sleep(Duration::from_secs(60)).boxed();
            }
            async {}.boxed()
        })
    };
    let worker = hooked_worker(&app, hook);
    let status = app.kick_off("/$export?_type=Patient,Observation").await;
    loop {
        let started = Instant::now();
        let ran = worker.run_next_task().await;
        let took = started.elapsed();
        if ran.is_err() {
            // The Observation task: it cannot record its end either, the database is still away.
            assert!(took < Duration::from_secs(6), "the task ran {took:?}, past its 3 s lease");
            break;
        }
        assert_eq!(ran.unwrap(), Ran::Task, "the Observation task has not run");
    }

    proxy.restore();
    let response = run_until_ended(&app, &worker, &status).await;
    assert_eq!(response.status(), StatusCode::OK);
    let manifest: Value = response.json().await.unwrap();
    let exported = app.download_all(&manifest).await;
    assert_eq!(exported["Observation"].len(), 3);
}
