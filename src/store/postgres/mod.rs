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
    postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgSslMode},
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
    ///
    /// TLS as libpq spells it in the URL: `sslmode` (`disable`, `prefer` (the default),
    /// `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a CA file; without it the
    /// `verify-*` modes trust the bundled Mozilla roots).
    pub async fn connect(url: &str, pool_size: u32, acquire_timeout: Duration) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("bulkfhir");
        let explain = |e| explain_tls(e, &options);
        if !Postgres::database_exists(url).await.map_err(explain)? {
            tracing::info!("creating database");
            Postgres::create_database(url).await.map_err(explain)?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(explain)?;
        let migrator = sqlx::migrate!("./migrations/postgres");
        super::announce_upgrade(&pool, &migrator).await;
        accept_superseded_checksums(&pool, &migrator).await?;
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

/// Migrations whose text changed after some databases applied it, with the text they applied.
/// 0005 lost nothing but a comment's wording; such a database holds the old checksum, which
/// sqlx refuses at start.
const SUPERSEDED: &[(i64, &str)] = &[(5, include_str!("superseded/0005_body_compression.sql"))];

/// Rewrites the stored checksum of a migration applied with a superseded text (same effect, a
/// comment changed) to the current one, so `run` accepts the database.
async fn accept_superseded_checksums(pool: &PgPool, migrator: &sqlx::migrate::Migrator) -> Result<(), StoreError> {
    for (version, old_text) in SUPERSEDED {
        let Some(current) = migrator.iter().find(|m| m.version == *version) else { continue };
        let old = sqlx::migrate::Migration::new(
            *version,
            current.description.clone(),
            current.migration_type,
            sqlx::SqlSafeStr::into_sql_str(*old_text),
            current.no_tx,
        );
        // No migrations table yet (a new database): nothing to repair.
        let repaired = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $3 WHERE version = $1 AND checksum = $2",
        )
        .bind(version)
        .bind(old.checksum.as_ref())
        .bind(current.checksum.as_ref())
        .execute(pool)
        .await;
        match repaired {
            Ok(done) if done.rows_affected() > 0 => tracing::warn!(
                version,
                "migration applied with an earlier text of the same effect (only a comment differs); its stored checksum now matches this build"
            ),
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs a transaction again when Postgres aborted it as a deadlock victim (40P01) or a
/// serialization failure (40001): both mean "retry", and dropping the work instead would
/// leave a finished task's files unlisted until its lease ran out.
pub(super) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    const TRIES: u32 = 5;
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if tried < TRIES && matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
            {
                tracing::warn!(error = %e, tried, "transaction aborted by the database; retrying");
                tokio::time::sleep(Duration::from_millis(10 * u64::from(tried))).await;
                tried += 1;
            }
            result => return result,
        }
    }
}

/// A refused server certificate, said in the URL's terms (rustls names only the check that
/// failed); other errors as they are.
fn explain_tls(error: sqlx::Error, options: &PgConnectOptions) -> sqlx::Error {
    use rustls::{CertificateError, Error as TlsError};
    // rustls's error arrives inside an io::Error, whose `source` skips it: look inside too.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let refused = std::iter::from_fn(|| {
        let current = cause?;
        cause = current.source();
        Some(current)
    })
    .find_map(|e| {
        let tls = e.downcast_ref::<TlsError>().or_else(|| e.downcast_ref::<std::io::Error>()?.get_ref()?.downcast_ref::<TlsError>());
        match tls {
            Some(TlsError::InvalidCertificate(c)) => Some(c.clone()),
            _ => None,
        }
    });
    let reason = match &refused {
        Some(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the server's certificate is not signed by a CA in sslrootcert (without sslrootcert: by a public CA)".to_owned()
        }
        Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => format!(
            "the server's certificate is not valid for the host '{}' of the URL (sslmode=verify-full checks the name, verify-ca does not)",
            options.get_host()
        ),
        Some(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => "the server's certificate has expired".to_owned(),
        _ => return error,
    };
    // Only the verify-* modes check a certificate.
    let mode = if matches!(options.get_ssl_mode(), PgSslMode::VerifyCa) { "verify-ca" } else { "verify-full" };
    let detail = refused.map(TlsError::InvalidCertificate).map(|e| e.to_string()).unwrap_or_default();
    sqlx::Error::Tls(format!("sslmode={mode} refused the server: {reason} ({detail})").into())
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
