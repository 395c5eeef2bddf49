//! `JobStore` on Postgres: the API side of export jobs.

use async_trait::async_trait;
use sqlx::{postgres::PgRow, Row};

use super::{retrying, PgStore, WORK_CHANNEL};
use crate::{
    model::job::{FileRecord, JobId, JobRecord, JobStatus, NewJob, Progress},
    store::{is_current, Created, FileRow, JobCount, JobStore, StoreError},
};

/// Advisory lock class of the per-owner export limit (`pg_advisory_xact_lock(class, owner hash)`).
const OWNER_LOCK: i32 = 0x6266_6a6f; // "bfjo"

#[async_trait]
impl JobStore for PgStore {
    async fn create_job(&self, job: NewJob, max_active: Option<u32>) -> Result<Created, StoreError> {
        retrying(|| self.create_job_once(&job, max_active)).await
    }

    async fn delete_job(&self, id: JobId) -> Result<(), StoreError> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            for table in ["export_files", "export_job_patients", "export_tasks"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE job_id = $1"))).bind(id.0).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM export_jobs WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.owner, j.request, j.status, j.transaction_time, j.created_at, j.expires_at, j.error, \
                    (SELECT count(*) FROM export_tasks t WHERE t.job_id = j.id) AS tasks_total, \
                    (SELECT count(*) FROM export_tasks t WHERE t.job_id = j.id AND t.status = 'done') AS tasks_done, \
                    (SELECT coalesce(sum(t.written), 0)::bigint FROM export_tasks t WHERE t.job_id = j.id) AS written, \
                    (SELECT coalesce(array_agg(t.resource_type ORDER BY t.resource_type), '{}') FROM export_tasks t \
                      WHERE t.job_id = j.id AND t.status = 'running') AS running \
             FROM export_jobs j WHERE j.id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(job_record).transpose()
    }

    async fn files(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
        let rows: Vec<FileRow> = sqlx::query_as(
            "SELECT kind, resource_type, name, object_key, count, bytes FROM export_files \
             WHERE job_id = $1 ORDER BY kind, resource_type, length(name), name",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FileRecord::from).collect())
    }

    async fn cancel(&self, id: JobId) -> Result<bool, StoreError> {
        retrying(|| self.cancel_once(id)).await
    }

    async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM export_jobs ORDER BY created_at DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(JobId).collect())
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError> {
        let rows: Vec<(Option<String>, String, i64)> =
            sqlx::query_as("SELECT request->>'level' AS level, status, count(*) FROM export_jobs GROUP BY 1, 2 ORDER BY 1, 2")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(level, status, count)| JobCount { level: level.unwrap_or_default(), status, count }).collect())
    }

    async fn schema_current(&self) -> Result<bool, StoreError> {
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?;
        Ok(is_current(applied, &sqlx::migrate!("./migrations/postgres")))
    }
}

impl PgStore {
    async fn create_job_once(&self, job: &NewJob, max_active: Option<u32>) -> Result<Created, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(limit) = max_active {
            // Kick-offs of one owner count and insert one at a time; the lock ends with the
            // transaction. (Two-key advisory locks do not share the one-key space.)
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))").bind(OWNER_LOCK).bind(&job.owner).execute(&mut *tx).await?;
            let active: i64 =
                sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE owner = $1 AND status IN ('queued', 'running')")
                    .bind(&job.owner)
                    .fetch_one(&mut *tx)
                    .await?;
            if active >= i64::from(limit) {
                return Ok(Created::OverLimit { active });
            }
        }
        let request = serde_json::to_value(&job.request).expect("an export request serializes");
        // A job with nothing to export is complete at once.
        let status = if job.tasks.is_empty() { JobStatus::Completed } else { JobStatus::Queued };
        sqlx::query(
            "INSERT INTO export_jobs (id, owner, request, status, transaction_time, folder, retention_seconds, \
                                      max_file_bytes, completed_at, expires_at, anonymization) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     CASE WHEN $4 = 'completed' THEN now() END, \
                     CASE WHEN $4 = 'completed' THEN now() + $7 * interval '1 second' END, $9)",
        )
        .bind(job.id.0)
        .bind(&job.owner)
        .bind(request)
        .bind(status.as_str())
        .bind(job.transaction_time)
        .bind(&job.folder)
        .bind(job.retention.as_secs() as i64)
        .bind(job.max_file_bytes as i64)
        .bind(job.anonymization.as_deref())
        .execute(&mut *tx)
        .await?;
        let kinds: Vec<&str> = job.tasks.iter().map(|t| t.kind.as_str()).collect();
        let types: Vec<&str> = job.tasks.iter().map(|t| t.resource_type.as_str()).collect();
        sqlx::query(
            "INSERT INTO export_tasks (job_id, kind, resource_type, status) \
             SELECT $1, k, t, 'queued' FROM unnest($2::text[], $3::text[]) AS x(k, t)",
        )
        .bind(job.id.0)
        .bind(&kinds)
        .bind(&types)
        .execute(&mut *tx)
        .await?;
        let patients: Vec<&str> = job.patients.iter().map(|p| p.as_str()).collect();
        sqlx::query("INSERT INTO export_job_patients (job_id, patient_id) SELECT $1, p FROM unnest($2::text[]) p")
            .bind(job.id.0)
            .bind(&patients)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Created::Job)
    }

    async fn cancel_once(&self, id: JobId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Task rows before the job row, the lock order of the queue.
        sqlx::query("UPDATE export_tasks SET status = 'cancelled' WHERE job_id = $1 AND status = 'queued'")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        let cancelled = sqlx::query(
            "UPDATE export_jobs SET status = 'cancelled', completed_at = coalesce(completed_at, now()) \
             WHERE id = $1 AND status NOT IN ('cancelled', 'expired')",
        )
        .bind(id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(cancelled)
    }
}

fn job_record(row: PgRow) -> Result<JobRecord, StoreError> {
    let status: String = row.get("status");
    let request: serde_json::Value = row.get("request");
    Ok(JobRecord {
        id: JobId(row.get("id")),
        owner: row.get("owner"),
        request: serde_json::from_value(request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        status: JobStatus::parse(&status).ok_or_else(|| sqlx::Error::Decode(format!("job status '{status}'").into()))?,
        transaction_time: row.get("transaction_time"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        error: row.get("error"),
        progress: Progress {
            tasks_total: row.get("tasks_total"),
            tasks_done: row.get("tasks_done"),
            resources_written: row.get("written"),
            running: row.get("running"),
        },
    })
}
