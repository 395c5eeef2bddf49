//! The Postgres backend: the production store, and the way to run many server nodes on one
//! database. Exports stream with `COPY ... TO STDOUT`; bulk loads go through `COPY ... FROM STDIN`.

mod auth;
mod jobs;
mod queue;
mod resources;
mod sql;

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
    PgPool, Postgres,
};
use tokio::{sync::Notify, task::JoinHandle};

use super::StoreError;

/// NOTIFY channel that wakes idle workers when a job is created.
const WORK_CHANNEL: &str = "bulkfhir_work";

pub struct PgStore {
    pool: PgPool,
    work: Arc<Notify>,
    listener: JoinHandle<()>,
}

impl PgStore {
    /// Connects (creating the database if it does not exist yet), applies migrations, and starts
    /// listening for work notifications.
    pub async fn connect(url: &str, pool_size: u32, acquire_timeout: Duration) -> Result<Self, StoreError> {
        if !Postgres::database_exists(url).await? {
            tracing::info!("creating database");
            Postgres::create_database(url).await?;
        }
        let options = PgConnectOptions::from_str(url)?.application_name("bulkfhir");
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        let migrator = sqlx::migrate!("./migrations/postgres");
        super::announce_upgrade(&pool, &migrator).await;
        migrator.run(&pool).await?;
        let work = Arc::new(Notify::new());
        let listener = tokio::spawn(listen_for_work(pool.clone(), work.clone()));
        Ok(Self { pool, work, listener })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// LISTEN for new work and wake idle workers; reconnects after errors. Workers also poll, so a
/// missed notification only costs latency.
async fn listen_for_work(pool: PgPool, work: Arc<Notify>) {
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(WORK_CHANNEL).await?;
            loop {
                listener.recv().await?;
                work.notify_waiters();
            }
        };
        let result: Result<(), sqlx::Error> = listening.await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "work notification listener failed; reconnecting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
