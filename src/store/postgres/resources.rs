//! `ResourceStore` on Postgres: versioned writes with history and compartment rows, the COPY
//! bulk path, snapshots, and the export stream.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{stream::BoxStream, StreamExt};
use sqlx::{pool::PoolConnection, PgConnection, Postgres, Row};

use super::{sql, PgStore};
use crate::{
    fhir::{instant, types::ResourceId, Resource, ResourceType},
    store::{is_bulk, Applied, ResourceStore, Selection, Stored, StoreError, Write},
};

/// Advisory lock that orders writes against snapshots: writes hold it shared, a snapshot takes
/// it exclusively, so no write straddles a transactionTime.
const SNAPSHOT_LOCK: i64 = 0x6275_6c6b_6668_6972; // "bulkfhir"

/// A first load's rows go to the server in pieces of about this size as they are built: a
/// buffer for a whole batch was fresh memory for every batch, and zeroing its pages cost the
/// loader more than writing the rows (figures: docs/performance.md).
const COPY_CHUNK: usize = 1 << 20;

/// Attempts of a write transaction that lost a race to create the same new resource.
const WRITE_ATTEMPTS: usize = 3;

/// Writes a new current version, guarded so it only follows the version it replaces.
const UPSERT_VERSION: &str = "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, body) \
     VALUES ($1, $2, $3, $4, false, $5) \
     ON CONFLICT (resource_type, id) DO UPDATE \
       SET version_id = excluded.version_id, last_updated = excluded.last_updated, deleted = false, body = excluded.body \
       WHERE resources.version_id = excluded.version_id - 1";

/// Starts a write transaction: takes the snapshot lock shared and reads the write instant.
async fn begin_write(conn: &mut PgConnection) -> Result<DateTime<Utc>, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(SNAPSHOT_LOCK).execute(&mut *conn).await?;
    Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *conn).await?)
}

#[async_trait]
impl ResourceStore for PgStore {
    async fn read(&self, resource_type: &ResourceType, id: &ResourceId) -> Result<Option<Stored>, StoreError> {
        let row = sqlx::query(
            "SELECT version_id, last_updated, deleted, body FROM resources WHERE resource_type = $1 AND id = $2",
        )
        .bind(resource_type.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Stored {
            version_id: r.get("version_id"),
            last_updated: r.get("last_updated"),
            deleted: r.get("deleted"),
            body: r.get("body"),
        }))
    }

    async fn read_as_of(
        &self,
        resource_type: &ResourceType,
        id: &ResourceId,
        as_of: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT body FROM resources WHERE resource_type = $1 AND id = $2 AND last_updated <= $3 AND NOT deleted \
             UNION ALL \
             SELECT body FROM resource_history WHERE resource_type = $1 AND id = $2 AND last_updated <= $3 \
               AND superseded_at > $3 AND NOT deleted",
        )
        .bind(resource_type.as_str())
        .bind(id.as_str())
        .bind(as_of)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let mut attempt = 1;
        loop {
            let mut tx = self.pool.begin().await?;
            let result = if is_bulk(&writes) { bulk_save(&mut tx, &writes).await } else { apply_each(&mut tx, &writes).await };
            match result {
                Ok(applied) => {
                    tx.commit().await?;
                    return Ok(applied);
                }
                Err(StoreError::Conflict(what)) if attempt < WRITE_ATTEMPTS => {
                    tracing::debug!(%what, attempt, "write lost a race; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Each COPY runs on one backend, one core: a second batch in flight keeps another core
    /// writing, and the database busy while the first batch commits.
    fn bulk_writers(&self) -> usize {
        2
    }

    async fn snapshot_time(&self) -> Result<DateTime<Utc>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SNAPSHOT_LOCK).execute(&mut *tx).await?;
        let t: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *tx).await?;
        // Hold the lock past the clock's resolution, so a write that starts after us reads a
        // strictly later instant.
        sqlx::query("SELECT pg_sleep(0.001)").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(t)
    }

    async fn types_present(&self) -> Result<Vec<ResourceType>, StoreError> {
        // A loose index scan: one probe of the primary key per type, not a scan of all rows.
        let names: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE t(resource_type) AS ( \
               (SELECT resource_type FROM resources ORDER BY resource_type LIMIT 1) \
               UNION ALL \
               SELECT (SELECT r.resource_type FROM resources r WHERE r.resource_type > t.resource_type \
                       ORDER BY r.resource_type LIMIT 1) FROM t WHERE t.resource_type IS NOT NULL) \
             SELECT resource_type FROM t WHERE resource_type IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(names.iter().filter_map(|n| ResourceType::parse(n)).collect())
    }

    fn export_stream(&self, selection: Selection) -> BoxStream<'static, Result<Bytes, StoreError>> {
        copy_out(self.pool.clone(), sql::export_copy(&selection))
    }

    fn deleted_stream(&self, selection: Selection) -> BoxStream<'static, Result<Bytes, StoreError>> {
        copy_out(self.pool.clone(), sql::deleted_copy(&selection))
    }
}

/// Streams the output of a `COPY ... TO STDOUT` statement.
fn copy_out(pool: sqlx::PgPool, statement: String) -> BoxStream<'static, Result<Bytes, StoreError>> {
    async_stream::try_stream! {
        let mut guard = CopyGuard { conn: pool.acquire().await?, finished: false };
        let mut chunks = guard.conn.copy_out_raw(&statement).await?;
        while let Some(chunk) = chunks.next().await {
            yield chunk?;
        }
        drop(chunks);
        guard.finished = true;
    }
    .boxed()
}

/// Closes the connection when a COPY OUT is dropped unfinished (a cancelled task), instead of
/// returning it to the pool, where the next user would first have to drain the rest of the data.
struct CopyGuard {
    conn: PoolConnection<Postgres>,
    finished: bool,
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Applies writes one by one, in order, in the caller's transaction.
async fn apply_each(conn: &mut PgConnection, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
    let now = begin_write(conn).await?;
    let mut applied = Vec::with_capacity(writes.len());
    for write in writes {
        applied.push(match write {
            Write::Save(resource) => save_one(conn, resource, now).await?,
            Write::Delete { resource_type, id } => delete_one(conn, resource_type.clone(), id.clone(), now).await?,
        });
    }
    Ok(applied)
}

/// Locks the current row of a resource: (version_id, deleted), if it exists.
async fn lock_current(conn: &mut PgConnection, t: &str, id: &str) -> Result<Option<(i64, bool)>, StoreError> {
    Ok(sqlx::query_as("SELECT version_id, deleted FROM resources WHERE resource_type = $1 AND id = $2 FOR UPDATE")
        .bind(t)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Copies the current version of a resource into history, superseded now.
async fn keep_history(conn: &mut PgConnection, t: &str, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO resource_history (resource_type, id, version_id, last_updated, superseded_at, deleted, body) \
         SELECT resource_type, id, version_id, last_updated, $3, deleted, body FROM resources \
         WHERE resource_type = $1 AND id = $2",
    )
    .bind(t)
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn save_one(conn: &mut PgConnection, resource: &Resource, now: DateTime<Utc>) -> Result<Applied, StoreError> {
    let (t, id) = (resource.resource_type.as_str(), resource.id.to_string());
    let current = lock_current(conn, t, &id).await?;
    let version_id = current.map_or(1, |(v, _)| v + 1);
    let body = resource.render(version_id, now);
    if current.is_some() {
        keep_history(conn, t, &id, now).await?;
    }
    // One upsert for both cases; the WHERE refuses a row another writer created or moved on
    // since our lock (a new id has no row to lock).
    let written = sqlx::query(UPSERT_VERSION)
        .bind(t)
        .bind(&id)
        .bind(version_id)
        .bind(now)
        .bind(&body)
        .execute(&mut *conn)
        .await?;
    if written.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!("{t}/{id}")));
    }
    let patients: Vec<&str> = resource.compartment_patients().iter().map(|p| p.as_str()).collect();
    if !patients.is_empty() {
        sqlx::query(
            "INSERT INTO compartment_members (patient_id, resource_type, id, version_id) \
             SELECT p, $2, $3, $4 FROM unnest($1::text[]) p",
        )
        .bind(&patients)
        .bind(t)
        .bind(&id)
        .bind(version_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Applied::saved(resource, version_id, now, current, Some(body)))
}

async fn delete_one(
    conn: &mut PgConnection,
    resource_type: ResourceType,
    id: ResourceId,
    now: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let t = resource_type.as_str();
    let current = lock_current(conn, t, id.as_str()).await?;
    let (applied, new_version) = Applied::deleted(resource_type.clone(), id.clone(), now, current);
    if let Some(version_id) = new_version {
        keep_history(conn, t, id.as_str(), now).await?;
        sqlx::query(
            "UPDATE resources SET version_id = $3, last_updated = $4, deleted = true, body = NULL \
             WHERE resource_type = $1 AND id = $2",
        )
        .bind(t)
        .bind(id.as_str())
        .bind(version_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(applied)
}

/// The COPY path for large batches of saves with distinct keys. A batch of new resources (a
/// first load) is COPYed straight into the tables. If one of them exists, that COPY fails on the
/// primary key and is rolled back to a savepoint, and the batch takes the replacing path: lock
/// what exists, stage the new versions with COPY, then move them into place with set-based
/// statements. Trying the COPY first spares a new batch the lookup of every key, which cost
/// about a tenth of the database's time in a first load.
async fn bulk_save(conn: &mut PgConnection, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
    let now = begin_write(conn).await?;
    let resources: Vec<&Resource> = writes
        .iter()
        .map(|w| match w {
            Write::Save(r) => r,
            Write::Delete { .. } => unreachable!("is_bulk admits saves only"),
        })
        .collect();
    sqlx::query("SAVEPOINT bulk_new").execute(&mut *conn).await?;
    match copy_new(conn, &resources, now).await {
        Err(StoreError::Conflict(_)) => {
            sqlx::query("ROLLBACK TO SAVEPOINT bulk_new").execute(&mut *conn).await?;
        }
        done => return done,
    }
    let types: Vec<&str> = resources.iter().map(|r| r.resource_type.as_str()).collect();
    let ids: Vec<&str> = resources.iter().map(|r| r.id.as_str()).collect();
    let existing: HashMap<(String, String), (i64, bool)> = sqlx::query_as::<_, (String, String, i64, bool)>(
        "SELECT r.resource_type, r.id, r.version_id, r.deleted FROM resources r \
         JOIN unnest($1::text[], $2::text[]) k(t, i) ON r.resource_type = k.t AND r.id = k.i \
         ORDER BY r.resource_type, r.id FOR UPDATE OF r",
    )
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(t, id, v, d)| ((t, id), (v, d)))
    .collect();
    if existing.is_empty() {
        // The row the COPY met was another writer's, which then rolled back: try again.
        return Err(StoreError::Conflict("a resource of a bulk batch".into()));
    }

    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS load_stage \
         (resource_type text, id text, version_id bigint, body text) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *conn)
    .await?;

    let mut stage = Vec::with_capacity(resources.len() * 1024);
    let mut members = Vec::new();
    let mut applied = Vec::with_capacity(resources.len());
    for &resource in &resources {
        let key = (resource.resource_type.to_string(), resource.id.to_string());
        let current = existing.get(&key).copied();
        let version_id = current.map_or(1, |(v, _)| v + 1);
        let body = resource.render(version_id, now);
        for row in [key.0.as_bytes(), b"\x02", key.1.as_bytes(), b"\x02", version_id.to_string().as_bytes(), b"\x02", body.as_bytes(), b"\n"] {
            stage.extend_from_slice(row);
        }
        for patient in resource.compartment_patients().iter() {
            members.extend_from_slice(format!("{patient}\x02{}\x02{}\x02{version_id}\n", key.0, key.1).as_bytes());
        }
        applied.push(Applied::saved(resource, version_id, now, current, None));
    }

    copy_in(conn, &format!("COPY load_stage FROM STDIN {}", sql::COPY_IN_OPTIONS), stage).await?;
    if !existing.is_empty() {
        sqlx::query(
            "INSERT INTO resource_history (resource_type, id, version_id, last_updated, superseded_at, deleted, body) \
             SELECT r.resource_type, r.id, r.version_id, r.last_updated, $1, r.deleted, r.body \
             FROM resources r JOIN load_stage s USING (resource_type, id)",
        )
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    // The WHERE guards against a concurrent creation of the same id between our lock and here.
    let written = sqlx::query(
        "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, body) \
         SELECT resource_type, id, version_id, $1, false, body FROM load_stage \
         ON CONFLICT (resource_type, id) DO UPDATE \
           SET version_id = excluded.version_id, last_updated = excluded.last_updated, deleted = false, body = excluded.body \
           WHERE resources.version_id = excluded.version_id - 1",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if written.rows_affected() != resources.len() as u64 {
        return Err(StoreError::Conflict("a resource of a bulk batch".into()));
    }
    if !members.is_empty() {
        copy_in(
            conn,
            &format!("COPY compartment_members (patient_id, resource_type, id, version_id) FROM STDIN {}", sql::COPY_IN_OPTIONS),
            members,
        )
        .await?;
    }
    Ok(applied)
}

/// A batch of resources none of which exists yet (a first load): COPY straight into the table,
/// without the staging table and the INSERT..SELECT that replacing versions needs. That step
/// cost about half of the load's database time. A resource that exists (or that another writer
/// creates meanwhile) makes the COPY fail on the primary key: a conflict.
async fn copy_new(conn: &mut PgConnection, resources: &[&Resource], now: DateTime<Utc>) -> Result<Vec<Applied>, StoreError> {
    let last_updated = instant::format(now);
    let options = sql::COPY_IN_OPTIONS;
    let mut members = Vec::new();
    let mut applied = Vec::with_capacity(resources.len());
    let mut copy =
        conn.copy_in_raw(&format!("COPY resources (resource_type, id, version_id, last_updated, deleted, body) FROM STDIN {options}")).await?;
    let mut rows = Vec::with_capacity(COPY_CHUNK + (64 << 10));
    let mut failed = None;
    for &resource in resources {
        let (t, id) = (resource.resource_type.as_str(), resource.id.as_str());
        for field in [t.as_bytes(), b"\x02", id.as_bytes(), b"\x021\x02", last_updated.as_bytes(), b"\x02f\x02"] {
            rows.extend_from_slice(field);
        }
        resource.render_into(&mut rows, "1", &last_updated);
        rows.push(b'\n');
        for patient in resource.compartment_patients() {
            for field in [patient.as_str().as_bytes(), b"\x02", t.as_bytes(), b"\x02", id.as_bytes(), b"\x021\n"] {
                members.extend_from_slice(field);
            }
        }
        applied.push(Applied::saved(resource, 1, now, None, None));
        if rows.len() >= COPY_CHUNK {
            if let Err(e) = copy.send(rows.as_slice()).await {
                failed = Some(e);
                break;
            }
            rows.clear();
        }
    }
    if failed.is_none() {
        failed = copy.send(rows.as_slice()).await.err();
    }
    if let Some(e) = failed {
        copy.abort(e.to_string()).await?;
        return Err(e.into());
    }
    copy.finish().await.map_err(|e| match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => StoreError::Conflict("a resource of a bulk batch".into()),
        e => e.into(),
    })?;
    if !members.is_empty() {
        copy_in(conn, &format!("COPY compartment_members (patient_id, resource_type, id, version_id) FROM STDIN {options}"), members)
            .await?;
    }
    Ok(applied)
}

async fn copy_in(conn: &mut PgConnection, statement: &str, data: Vec<u8>) -> Result<(), StoreError> {
    let mut copy = conn.copy_in_raw(statement).await?;
    if let Err(e) = copy.send(data).await {
        copy.abort(e.to_string()).await?;
        return Err(e.into());
    }
    copy.finish().await?;
    Ok(())
}
