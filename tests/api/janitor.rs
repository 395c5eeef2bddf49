//! The janitor with several nodes: sweeps that race on one folder still delete every file,
//! a folder that cannot be deleted holds back only its own job, and the staging files a killed
//! attempt left behind go with the rest.

use std::path::{Path, PathBuf};

use bulkfhir::export::janitor;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::helpers::{backend_tests, spawn_app_with, AppOptions, Backend, TestApp, TestDb};

/// Every file (not folder) under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |entries| {
            entries
                .filter_map(Result::ok)
                .flat_map(|e| if e.path().is_dir() { files_under(&e.path()) } else { vec![e.path()] })
                .collect()
        },
    )
}

/// Runs one statement on a connection of the test's own.
async fn execute(db: &TestDb, sql: &'static str) {
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        }
        Backend::Sqlite => {
            let mut conn = SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        }
    }
}

async fn put_patients(app: &TestApp, n: usize) {
    let puts = (0..n).map(|i| async move {
        app.put(&json!({"resourceType": "Patient", "id": format!("p{i}"), "gender": "female",
            "name": [{"family": "Janitor", "given": ["A long enough name to fill files quickly"]}]}))
            .await
    });
    for response in futures::future::join_all(puts).await {
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

async fn sweep_once(app: &TestApp) {
    janitor::sweep(&app.stores, &app.output, app.options.max_attempts).await.expect("the sweep runs");
}

backend_tests! {
    /// Three nodes' janitors, twelve more sweeps and twelve deletes of the folder at once on
    /// a released export of many files: no file is left, and the job is marked released.
    async fn janitors_of_several_nodes_sweeping_at_once_delete_every_file(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions { max_file_bytes: 400, ..Default::default() }).await;
        let _b = app.spawn_node(1).await;
        let _c = app.spawn_node(1).await;
        put_patients(&app, 40).await;
        // Three rounds: how the sweeps overlap varies from run to run.
        for round in 1..=3 {
            let status_url = app.kick_off("/$export?_type=Patient").await;
            let manifest = app.wait_for_manifest(&status_url).await;
            let files = files_under(app.output_dir.path());
            assert!(files.len() > 5 && files.len() == manifest["output"].as_array().unwrap().len(), "{} files", files.len());
            // Many more files in the folder (as a large export has), so that the sweeps overlap.
            let folder = files[0].parent().unwrap();
            for n in 0..3000 {
                std::fs::write(folder.join(format!("Patient-{}.ndjson", 1000 + n)), b"{}\n").unwrap();
            }

            assert_eq!(app.client.delete(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
            // Twelve sweeps, and twelve deletes of the folder as other nodes' janitors make them.
            let folder_key = folder.strip_prefix(app.output_dir.path()).unwrap().to_str().unwrap().to_owned();
            let deletes = futures::future::join_all((0..12).map(|_| app.output.delete_folder(&folder_key)));
            let (_, deleted) = futures::join!(futures::future::join_all((0..12).map(|_| sweep_once(&app))), deletes);
            assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
            assert_eq!(files_under(app.output_dir.path()).len(), 0, "round {round}");
            assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE files_released").await, round);
        }
    }

    /// A folder that cannot be deleted (a file stands where a folder should be) holds back
    /// its own job only: the other job's files go in the same pass, and the blocked job is
    /// released once its folder can be deleted.
    async fn a_folder_that_cannot_be_deleted_holds_back_only_its_job(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions::default()).await;
        put_patients(&app, 5).await;
        let blocked = app.kick_off("/$export?_type=Patient&_container=blocked").await;
        let other = app.kick_off("/$export?_type=Patient&_container=other").await;
        app.wait_for_manifest(&blocked).await;
        app.wait_for_manifest(&other).await;
        std::fs::write(app.output_dir.path().join("not-a-folder"), b"x").unwrap();
        execute(&app.db, "UPDATE export_jobs SET folder = 'not-a-folder/inside' WHERE folder LIKE 'blocked/%'").await;

        for url in [&blocked, &other] {
            assert_eq!(app.client.delete(url).send().await.unwrap().status(), StatusCode::ACCEPTED);
        }
        sweep_once(&app).await;
        assert_eq!(files_under(&app.output_dir.path().join("other")), Vec::<PathBuf>::new());
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE files_released").await, 1);
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE files_released AND folder LIKE 'other/%'").await, 1);

        std::fs::remove_file(app.output_dir.path().join("not-a-folder")).unwrap();
        sweep_once(&app).await;
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE files_released").await, 2);
    }

    /// Staging files (`Patient-1.ndjson#1`) as a killed attempt leaves them are deleted with
    /// the job's files when it is released.
    async fn release_deletes_the_staging_files_of_killed_attempts(backend: Backend) {
        let app = spawn_app_with(backend, AppOptions::default()).await;
        put_patients(&app, 5).await;
        let status_url = app.kick_off("/$export?_type=Patient").await;
        app.wait_for_manifest(&status_url).await;
        let files = files_under(app.output_dir.path());
        let folder = files[0].parent().unwrap().to_owned();
        for staging in ["Patient-1.ndjson#1", "Patient-2.ndjson#1", "Patient-2.ndjson#2"] {
            std::fs::write(folder.join(staging), b"{\"resourceType\":\"Patient\",\"id\":\"half\"}\n{\"resou").unwrap();
        }

        assert_eq!(app.client.delete(&status_url).send().await.unwrap().status(), StatusCode::ACCEPTED);
        sweep_once(&app).await;
        assert_eq!(files_under(app.output_dir.path()), Vec::<PathBuf>::new());
        assert!(!folder.exists());
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE files_released").await, 1);
    }
}
