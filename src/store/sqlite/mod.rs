//! The SQLite backend: the embedded default, so one command runs bulkfhir with nothing else
//! installed. Same model and semantics as Postgres; SQLite's single writer stands in for the
//! advisory lock (every write and every snapshot runs in `BEGIN IMMEDIATE`), and idle workers
//! are woken in-process (other processes on the same file find work by polling).

mod auth;
mod chunks;
mod jobs;
mod queue;
mod reader;
mod resources;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Sqlite, SqlitePool, Transaction,
};
use tokio::sync::Notify;

use super::StoreError;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Exports read on connections of their own (`reader`), not the pool's.
    reads: reader::ReadSource,
    work: Arc<Notify>,
}

impl SqliteStore {
    /// Opens (creating the file and its folder if needed) and migrates the database.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed write survives a power cut, not only a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // 64 MiB of page cache per connection (the default is 2 MiB): bulk loads update
            // several indexes per row, and exports scan large tables.
            .pragma("cache_size", "-65536");
        if let Some(folder) = Path::new(options.get_filename()).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| StoreError::Database(sqlx::Error::Configuration(format!("cannot create {}: {e}", folder.display()).into())))?;
        }
        let reads = reader::ReadSource::new(options.get_filename().to_path_buf());
        let pool = SqlitePoolOptions::new().max_connections(pool_size).connect_with(options).await?;
        let migrator = sqlx::migrate!("./migrations/sqlite");
        super::announce_upgrade(&pool, &migrator).await;
        migrator.run(&pool).await?;
        Ok(Self { pool, reads, work: Arc::new(Notify::new()) })
    }

    /// A write transaction: takes SQLite's write lock at once, so reads inside it are current.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Instants are stored as microseconds since the epoch.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn instant(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn now_micros() -> i64 {
    micros(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database made before migration 0005, upgraded: each version's `patients` is filled in
    /// from its compartment rows, current and historical alike.
    #[tokio::test]
    async fn migration_0005_fills_in_the_patients_of_each_version() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let options = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(options).await.unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = before.migrations.iter().filter(|m| m.version < 5).cloned().collect::<Vec<_>>().into();
        before.run(&pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO resources (resource_type, id, version_id, last_updated, body) VALUES \
               ('Observation', 'one', 2, 2, '{}'), ('Observation', 'two', 1, 1, '{}'), ('Organization', 'none', 1, 1, '{}'); \
             INSERT INTO resource_history (resource_type, id, version_id, last_updated, superseded_at, deleted, body) VALUES \
               ('Observation', 'one', 1, 1, 2, 0, '{}'); \
             INSERT INTO compartment_members (patient_id, resource_type, id, version_id) VALUES \
               ('a', 'Observation', 'one', 1), ('b', 'Observation', 'one', 2), \
               ('a', 'Observation', 'two', 1), ('b', 'Observation', 'two', 1);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = SqliteStore::connect(&url, 1).await.unwrap();
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, version_id, patients FROM resources UNION ALL SELECT id, version_id, patients FROM resource_history",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        // group_concat's order is unspecified: each version's patients compare as a set.
        let set = |p: &str| p.split(' ').map(str::to_owned).collect::<std::collections::BTreeSet<String>>();
        let mut rows: Vec<_> = rows.into_iter().map(|(id, v, p)| (id, v, p.as_deref().map(set))).collect();
        rows.sort();
        let expected =
            [("none".into(), 1, None), ("one".into(), 1, Some(set("a"))), ("one".into(), 2, Some(set("b"))), ("two".into(), 1, Some(set("a b")))];
        assert_eq!(rows, expected);
    }
}
