//! `ResourceStore` on SQLite: versioned writes with history and compartment rows in one
//! `BEGIN IMMEDIATE` transaction per batch (prepared statements, reused for every row), and
//! the export queries (run by `reader`).

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use rusqlite::types::Value;

use super::{
    instant, micros,
    reader::{self, ReadSource},
    SqliteStore,
};
use crate::{
    fhir::{types::ResourceId, Resource, ResourceType},
    store::{is_bulk, Applied, ResourceStore, Scope, Selection, Stored, StoreError, Write},
};

/// Rows per multi-row statement of the bulk path (at most 7 bound values a row, well under
/// SQLite's limit on parameters). Each statement is one round trip to SQLite's thread.
const ROWS_PER_STATEMENT: usize = 200;

/// Versions of `?1` current at `?2` (microseconds): `(id, version_id, last_updated, body,
/// patients)`.
const VERSIONS_AT: &str = "SELECT id, version_id, last_updated, body, patients FROM resources \
       WHERE resource_type = ?1 AND last_updated <= ?2 AND deleted = 0 \
     UNION ALL \
     SELECT id, version_id, last_updated, body, patients FROM resource_history \
       WHERE resource_type = ?1 AND last_updated <= ?2 AND superseded_at > ?2 AND deleted = 0";

/// Deletions of `?1` that stand at `?2`: `(id, version_id, last_updated)`, where
/// `version_id - 1` is the live version the deletion ended.
const DELETIONS_AT: &str = "SELECT id, version_id, last_updated FROM resources \
       WHERE resource_type = ?1 AND last_updated <= ?2 AND deleted = 1 \
     UNION ALL \
     SELECT id, version_id, last_updated FROM resource_history \
       WHERE resource_type = ?1 AND last_updated <= ?2 AND superseded_at > ?2 AND deleted = 1";

/// Patients that exist at `?2`.
const PATIENTS_AT: &str = "SELECT id FROM resources WHERE resource_type = 'Patient' AND last_updated <= ?2 AND deleted = 0 \
     UNION ALL \
     SELECT id FROM resource_history WHERE resource_type = 'Patient' AND last_updated <= ?2 \
       AND superseded_at > ?2 AND deleted = 0";

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn read(&self, resource_type: &ResourceType, id: &ResourceId) -> Result<Option<Stored>, StoreError> {
        let row = sqlx::query("SELECT version_id, last_updated, deleted, body FROM resources WHERE resource_type = ? AND id = ?")
            .bind(resource_type.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Stored {
            version_id: r.get("version_id"),
            last_updated: instant(r.get("last_updated")),
            deleted: r.get::<i64, _>("deleted") != 0,
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
            "SELECT body FROM resources WHERE resource_type = ?1 AND id = ?2 AND last_updated <= ?3 AND deleted = 0 \
             UNION ALL \
             SELECT body FROM resource_history WHERE resource_type = ?1 AND id = ?2 AND last_updated <= ?3 \
               AND superseded_at > ?3 AND deleted = 0",
        )
        .bind(resource_type.as_str())
        .bind(id.as_str())
        .bind(micros(as_of))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Taken under the write lock, so later than any snapshot already taken.
        let now = Utc::now();
        let applied = if is_bulk(&writes) {
            bulk_save(&mut tx, writes, now).await?
        } else {
            let mut applied = Vec::with_capacity(writes.len());
            for write in writes {
                applied.push(match write {
                    Write::Save(resource) => save_one(&mut tx, resource, now).await?,
                    Write::Delete { resource_type, id } => delete_one(&mut tx, resource_type, id, now).await?,
                });
            }
            applied
        };
        tx.commit().await?;
        Ok(applied)
    }

    async fn snapshot_time(&self) -> Result<DateTime<Utc>, StoreError> {
        // Holding the write lock: no write is in flight, and the next one reads a later clock.
        let tx = self.begin_write().await?;
        let t = Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        tx.commit().await?;
        Ok(t)
    }

    async fn types_present(&self) -> Result<Vec<ResourceType>, StoreError> {
        // One probe of the primary key per type, as on Postgres.
        let names: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE t(resource_type) AS ( \
               SELECT min(resource_type) FROM resources \
               UNION ALL \
               SELECT (SELECT min(r.resource_type) FROM resources r WHERE r.resource_type > t.resource_type) \
               FROM t WHERE t.resource_type IS NOT NULL) \
             SELECT resource_type FROM t WHERE resource_type IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(names.iter().filter_map(|n| ResourceType::parse(n)).collect())
    }

    fn export_stream(&self, selection: Selection) -> BoxStream<'static, Result<Bytes, StoreError>> {
        let (sql, job) = export_query(&selection);
        text_lines(self.reads.clone(), sql, selection, job)
    }

    fn deleted_stream(&self, selection: Selection) -> BoxStream<'static, Result<Bytes, StoreError>> {
        let (sql, job) = deleted_query(&selection);
        text_lines(self.reads.clone(), sql, selection, job)
    }
}

/// Runs a selection query of one text column and streams the values as lines, in chunks
/// (`reader`). Binds `?1` type, `?2` as_of, `?3` since, `?4` job (or NULL), `?5`-`?8` the
/// `_typeFilter` narrowing (see `export_query`), `?9` until.
fn text_lines(reads: ReadSource, sql: String, selection: Selection, job: Option<String>) -> BoxStream<'static, Result<Bytes, StoreError>> {
    let narrowing = &selection.narrowing;
    let json = |ids: &_| Value::Text(serde_json::to_string(ids).expect("a set of strings serializes"));
    let params = vec![
        Value::Text(selection.resource_type.as_str().to_owned()),
        Value::Integer(micros(selection.as_of)),
        selection.since.map_or(Value::Null, |t| Value::Integer(micros(t))),
        job.map_or(Value::Null, Value::Text),
        narrowing.ids.as_ref().map_or(Value::Null, json),
        narrowing.updated_from.map_or(Value::Null, |t| Value::Integer(micros(t))),
        narrowing.updated_before.map_or(Value::Null, |t| Value::Integer(micros(t))),
        narrowing.patients.as_ref().map_or(Value::Null, json),
        selection.until.map_or(Value::Null, |t| Value::Integer(micros(t))),
    ];
    reader::lines(reads, sql, params)
}

/// The query of the selected deletions' ids, and the job id to bind as `?4` for a Group export.
fn deleted_query(selection: &Selection) -> (String, Option<String>) {
    let member = |patients: &str| {
        format!(
            " AND EXISTS (SELECT 1 FROM compartment_members c WHERE c.resource_type = ?1 AND c.id = v.id \
             AND c.version_id = v.version_id - 1{patients})"
        )
    };
    let (scope, job) = match &selection.scope {
        Scope::All => (String::new(), None),
        Scope::AllPatients => (member(""), None),
        Scope::JobPatients(job) => {
            (member(" AND +c.patient_id IN (SELECT patient_id FROM export_job_patients WHERE job_id = ?4)"), Some(job.to_string()))
        }
        Scope::Patient(id) => (member(" AND c.patient_id = ?4"), Some(id.to_string())),
    };
    (
        format!("SELECT v.id FROM ({DELETIONS_AT}) v WHERE (?3 IS NULL OR v.last_updated > ?3) AND (?9 IS NULL OR v.last_updated < ?9){scope}"),
        job,
    )
}

/// The export query for a selection, and the job id to bind as `?4` for a Group export (NULL
/// otherwise). Parameters the text does not use are bound anyway: SQLite ignores them, and
/// the others keep their numbers. The
/// text is built from constants only; every value is a bind parameter.
fn export_query(selection: &Selection) -> (String, Option<String>) {
    let (scope, job) = match &selection.scope {
        Scope::All => (String::new(), None),
        Scope::AllPatients => (in_patient_compartment(), None),
        // The rows come from the group's own list (`GROUP_VERSIONS_AT`): nothing to add.
        Scope::JobPatients(job) => (String::new(), Some(job.to_string())),
        // The rows come from the patient's compartment rows (`PATIENT_VERSIONS_AT`).
        Scope::Patient(id) => (String::new(), Some(id.to_string())),
    };
    // `_typeFilter` bounds, in the text only when present so that SQLite plans them on its
    // indexes: ?5 a JSON array of ids, ?6 and ?7 last_updated bounds, ?8 a JSON array
    // of patient ids.
    let n = &selection.narrowing;
    let mut narrowing = String::new();
    if n.ids.is_some() {
        narrowing.push_str(" AND v.id IN (SELECT value FROM json_each(?5))");
    }
    if n.updated_from.is_some() {
        narrowing.push_str(" AND v.last_updated >= ?6");
    }
    if n.updated_before.is_some() {
        narrowing.push_str(" AND v.last_updated < ?7");
    }
    if n.patients.is_some() {
        // Ids that were ever in these compartments, read once through the compartment table's
        // primary key (patient first): a superset, the matcher checks the exported version.
        narrowing.push_str(
            " AND v.id IN (SELECT c.id FROM compartment_members c \
             WHERE c.patient_id IN (SELECT value FROM json_each(?8)) AND c.resource_type = ?1)",
        );
    }
    // `?4` is the job only for a Group export; for one patient's block it is the patient.
    let source = match selection.scope {
        Scope::JobPatients(_) => GROUP_VERSIONS_AT.to_owned(),
        Scope::Patient(_) => GROUP_VERSIONS_AT.replace(PATIENTS_OF_JOB, ONE_PATIENT),
        _ => VERSIONS_AT.to_owned(),
    };
    (format!("SELECT v.body FROM ({source}) v WHERE (?3 IS NULL OR v.last_updated > ?3) AND (?9 IS NULL OR v.last_updated < ?9){scope}{narrowing}"), job)
}

/// A version of `VERSIONS_AT` in the compartment of a patient that exists at `?2`. Almost every
/// version has one patient, so its `patients` column is the id, checked against the patients
/// read once into a temporary index. A version in several compartments is checked through
/// its compartment rows; the unary `+` keeps SQLite from probing the index once per patient
/// for every row (much slower on long lists; figures: docs/performance.md): it probes by
/// resource, then checks the list.
fn in_patient_compartment() -> String {
    format!(
        " AND (v.patients IN ({PATIENTS_AT}) OR (instr(v.patients, ' ') > 0 AND EXISTS (SELECT 1 FROM compartment_members c \
           WHERE c.resource_type = ?1 AND c.id = v.id AND c.version_id = v.version_id AND +c.patient_id IN ({PATIENTS_AT}))))"
    )
}

/// `VERSIONS_AT` for a Group export (`?4` the job): the versions in the compartments of the
/// job's patients, found from the patients, then each version by key, so the cost follows the
/// group's size and not the database's. CROSS JOIN fixes that join order; DISTINCT: a resource
/// in several listed patients' compartments comes once.
const GROUP_VERSIONS_AT: &str = "WITH m AS (SELECT DISTINCT c.id, c.version_id FROM export_job_patients p \
       CROSS JOIN compartment_members c ON c.patient_id = p.patient_id AND c.resource_type = ?1 WHERE p.job_id = ?4) \
     SELECT r.id, r.version_id, r.last_updated, r.body FROM m CROSS JOIN resources r \
       ON r.resource_type = ?1 AND r.id = m.id AND r.version_id = m.version_id WHERE r.last_updated <= ?2 AND r.deleted = 0 \
     UNION ALL \
     SELECT h.id, h.version_id, h.last_updated, h.body FROM m CROSS JOIN resource_history h \
       ON h.resource_type = ?1 AND h.id = m.id AND h.version_id = m.version_id \
       WHERE h.last_updated <= ?2 AND h.superseded_at > ?2 AND h.deleted = 0";

/// The `m` of `GROUP_VERSIONS_AT`, and its one-patient form (`?4` the patient): a block of
/// `organizeOutputBy=Patient` reads that patient's compartment rows, then each version by key.
const PATIENTS_OF_JOB: &str = "FROM export_job_patients p \
       CROSS JOIN compartment_members c ON c.patient_id = p.patient_id AND c.resource_type = ?1 WHERE p.job_id = ?4";
const ONE_PATIENT: &str = "FROM compartment_members c WHERE c.patient_id = ?4 AND c.resource_type = ?1";

async fn current(conn: &mut SqliteConnection, t: &str, id: &str) -> Result<Option<(i64, bool)>, StoreError> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT version_id, deleted FROM resources WHERE resource_type = ? AND id = ?")
        .bind(t)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(v, d)| (v, d != 0)))
}

async fn keep_history(conn: &mut SqliteConnection, t: &str, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO resource_history (resource_type, id, version_id, last_updated, superseded_at, deleted, body, patients) \
         SELECT resource_type, id, version_id, last_updated, ?3, deleted, body, patients FROM resources \
         WHERE resource_type = ?1 AND id = ?2",
    )
    .bind(t)
    .bind(id)
    .bind(micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn save_one(conn: &mut SqliteConnection, resource: Resource, now: DateTime<Utc>) -> Result<Applied, StoreError> {
    let (t, id) = (resource.resource_type.as_str(), resource.id.to_string());
    let current = current(conn, t, &id).await?;
    let version_id = current.map_or(1, |(v, _)| v + 1);
    let body = resource.render(version_id, now);
    if current.is_some() {
        keep_history(conn, t, &id, now).await?;
    }
    sqlx::query(
        "INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, body, patients) \
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6) \
         ON CONFLICT (resource_type, id) DO UPDATE SET version_id = excluded.version_id, \
           last_updated = excluded.last_updated, deleted = 0, body = excluded.body, patients = excluded.patients",
    )
    .bind(t)
    .bind(&id)
    .bind(version_id)
    .bind(micros(now))
    .bind(&body)
    .bind(patients_column(&resource))
    .execute(&mut *conn)
    .await?;
    for patient in resource.compartment_patients().iter() {
        sqlx::query("INSERT INTO compartment_members (patient_id, resource_type, id, version_id) VALUES (?, ?, ?, ?)")
            .bind(patient.as_str())
            .bind(t)
            .bind(&id)
            .bind(version_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Applied::saved(&resource, version_id, now, current, Some(body)))
}

async fn delete_one(
    conn: &mut SqliteConnection,
    resource_type: ResourceType,
    id: ResourceId,
    now: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let t = resource_type.as_str();
    let current = current(conn, t, id.as_str()).await?;
    let (applied, new_version) = Applied::deleted(resource_type.clone(), id.clone(), now, current);
    if let Some(version_id) = new_version {
        keep_history(conn, t, id.as_str(), now).await?;
        sqlx::query(
            "UPDATE resources SET version_id = ?3, last_updated = ?4, deleted = 1, body = NULL, patients = NULL \
             WHERE resource_type = ?1 AND id = ?2",
        )
        .bind(t)
        .bind(id.as_str())
        .bind(version_id)
        .bind(micros(now))
        .execute(&mut *conn)
        .await?;
    }
    Ok(applied)
}

/// The bulk path for large batches of saves with distinct keys: the same writes as `save_one`,
/// as multi-row statements, so a batch costs a few hundred round trips instead of four per
/// resource.
async fn bulk_save(conn: &mut SqliteConnection, writes: Vec<Write>, now: DateTime<Utc>) -> Result<Vec<Applied>, StoreError> {
    let resources: Vec<Resource> = writes
        .into_iter()
        .map(|w| match w {
            Write::Save(r) => r,
            Write::Delete { .. } => unreachable!("is_bulk admits saves only"),
        })
        .collect();
    let now_micros = micros(now);

    let mut existing: HashMap<(String, String), (i64, bool)> = HashMap::new();
    for chunk in resources.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT resource_type, id, version_id, deleted FROM resources WHERE (resource_type, id) IN (",
        );
        push_keys(&mut query, chunk.iter().map(|r| (r.resource_type.as_str(), r.id.as_str())));
        query.push(")");
        for row in query.build().fetch_all(&mut *conn).await? {
            existing.insert((row.get(0), row.get(1)), (row.get(2), row.get::<i64, _>(3) != 0));
        }
    }
    let replaced: Vec<&Resource> =
        resources.iter().filter(|r| existing.contains_key(&(r.resource_type.to_string(), r.id.to_string()))).collect();
    for chunk in replaced.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO resource_history (resource_type, id, version_id, last_updated, superseded_at, deleted, body, patients) \
             SELECT resource_type, id, version_id, last_updated, ",
        );
        query.push_bind(now_micros).push(", deleted, body, patients FROM resources WHERE (resource_type, id) IN (");
        push_keys(&mut query, chunk.iter().map(|r| (r.resource_type.as_str(), r.id.as_str())));
        query.push(")");
        query.build().execute(&mut *conn).await?;
    }

    let mut rows = Vec::with_capacity(resources.len());
    let mut applied = Vec::with_capacity(resources.len());
    let mut members = Vec::new();
    for resource in &resources {
        let current = existing.get(&(resource.resource_type.to_string(), resource.id.to_string())).copied();
        let version_id = current.map_or(1, |(v, _)| v + 1);
        let body = resource.render(version_id, now);
        members.extend(resource.compartment_patients().iter().map(|p| (p.as_str(), resource.resource_type.as_str(), resource.id.as_str(), version_id)));
        applied.push(Applied::saved(resource, version_id, now, current, None));
        rows.push((resource.resource_type.as_str(), resource.id.as_str(), version_id, body, patients_column(resource)));
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            QueryBuilder::<Sqlite>::new("INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, body, patients) ");
        query.push_values(chunk, |mut row, (t, id, version_id, body, patients)| {
            row.push_bind(*t).push_bind(*id).push_bind(*version_id).push_bind(now_micros).push_bind(0).push_bind(body.as_str());
            row.push_bind(patients.as_deref());
        });
        query.push(
            " ON CONFLICT (resource_type, id) DO UPDATE SET version_id = excluded.version_id, \
              last_updated = excluded.last_updated, deleted = 0, body = excluded.body, patients = excluded.patients",
        );
        query.build().execute(&mut *conn).await?;
    }
    for chunk in members.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new("INSERT INTO compartment_members (patient_id, resource_type, id, version_id) ");
        query.push_values(chunk, |mut row, (patient, t, id, version_id)| {
            row.push_bind(*patient).push_bind(*t).push_bind(*id).push_bind(*version_id);
        });
        query.build().execute(&mut *conn).await?;
    }
    Ok(applied)
}

/// The `patients` column of a version (migration 0005): its compartment patients,
/// space-separated, NULL when none. A FHIR id has no spaces.
fn patients_column(resource: &Resource) -> Option<String> {
    let patients = resource.compartment_patients();
    (!patients.is_empty()).then(|| patients.iter().map(ResourceId::as_str).collect::<Vec<_>>().join(" "))
}

/// `(?, ?), (?, ?), ...` for a row-value IN list.
fn push_keys<'a>(query: &mut QueryBuilder<Sqlite>, keys: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut separated = query.separated(", ");
    for (t, id) in keys {
        separated.push("(").push_bind_unseparated(t).push_unseparated(", ").push_bind_unseparated(id).push_unseparated(")");
    }
}
