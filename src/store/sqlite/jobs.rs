//! `JobStore` on SQLite.

use async_trait::async_trait;
use sqlx::{sqlite::SqliteRow, Row};

use super::{instant, micros, now_micros, SqliteStore};
use crate::{
    model::job::{FileRecord, JobId, JobRecord, JobStatus, NewJob, Progress},
    store::{is_current, Created, FileRow, JobCount, JobStore, StoreError},
};

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: NewJob, max_active: Option<u32>) -> Result<Created, StoreError> {
        // BEGIN IMMEDIATE: the count and the insert run under SQLite's one write lock.
        let mut tx = self.begin_write().await?;
        if let Some(limit) = max_active {
            let active: i64 = sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE owner = ? AND status IN ('queued', 'running')")
                .bind(&job.owner)
                .fetch_one(&mut *tx)
                .await?;
            if active >= i64::from(limit) {
                return Ok(Created::OverLimit { active });
            }
        }
        let now = now_micros();
        let request = serde_json::to_string(&job.request).expect("an export request serializes");
        // A job with nothing to export is complete at once.
        let (status, completed_at, expires_at) = if job.tasks.is_empty() {
            (JobStatus::Completed, Some(now), Some(now + job.retention.as_micros() as i64))
        } else {
            (JobStatus::Queued, None, None)
        };
        sqlx::query(
            "INSERT INTO export_jobs (id, owner, request, status, transaction_time, folder, retention_seconds, \
                                      max_file_bytes, created_at, completed_at, expires_at, anonymization) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job.id.to_string())
        .bind(&job.owner)
        .bind(request)
        .bind(status.as_str())
        .bind(micros(job.transaction_time))
        .bind(&job.folder)
        .bind(job.retention.as_secs() as i64)
        .bind(job.max_file_bytes as i64)
        .bind(now)
        .bind(completed_at)
        .bind(expires_at)
        .bind(job.anonymization.as_deref())
        .execute(&mut *tx)
        .await?;
        for task in &job.tasks {
            sqlx::query("INSERT INTO export_tasks (job_id, kind, resource_type, status) VALUES (?, ?, ?, 'queued')")
                .bind(job.id.to_string())
                .bind(task.kind.as_str())
                .bind(&task.resource_type)
                .execute(&mut *tx)
                .await?;
        }
        for patient in &job.patients {
            sqlx::query("INSERT INTO export_job_patients (job_id, patient_id) VALUES (?, ?)")
                .bind(job.id.to_string())
                .bind(patient.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.work.notify_waiters();
        Ok(Created::Job)
    }

    async fn delete_job(&self, id: JobId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for table in ["export_files", "export_job_patients", "export_tasks"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE job_id = ?"))).bind(id.to_string()).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM export_jobs WHERE id = ?").bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.owner, j.request, j.status, j.transaction_time, j.created_at, j.expires_at, j.error, \
                    (SELECT count(*) FROM export_tasks t WHERE t.job_id = j.id) AS tasks_total, \
                    (SELECT count(*) FROM export_tasks t WHERE t.job_id = j.id AND t.status = 'done') AS tasks_done, \
                    (SELECT coalesce(sum(t.written), 0) FROM export_tasks t WHERE t.job_id = j.id) AS written, \
                    (SELECT group_concat(resource_type, ',') FROM (SELECT t.resource_type FROM export_tasks t \
                      WHERE t.job_id = j.id AND t.status = 'running' ORDER BY t.resource_type)) AS running \
             FROM export_jobs j WHERE j.id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(job_record).transpose()
    }

    async fn files(&self, id: JobId) -> Result<Vec<FileRecord>, StoreError> {
        let rows: Vec<FileRow> = sqlx::query_as(
            "SELECT kind, resource_type, name, object_key, count, bytes FROM export_files \
             WHERE job_id = ? ORDER BY kind, resource_type, length(name), name",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FileRecord::from).collect())
    }

    async fn cancel(&self, id: JobId) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let cancelled = sqlx::query(
            "UPDATE export_jobs SET status = 'cancelled', completed_at = coalesce(completed_at, ?2) \
             WHERE id = ?1 AND status NOT IN ('cancelled', 'expired')",
        )
        .bind(id.to_string())
        .bind(now_micros())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        sqlx::query("UPDATE export_tasks SET status = 'cancelled' WHERE job_id = ? AND status = 'queued'")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM export_jobs ORDER BY created_at DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        ids.iter().map(|id| id.parse().map_err(|_| StoreError::Database(decode(format!("job id '{id}'"))))).collect()
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError> {
        let rows: Vec<(Option<String>, String, i64)> =
            sqlx::query_as("SELECT json_extract(request, '$.level') AS level, status, count(*) FROM export_jobs GROUP BY 1, 2 ORDER BY 1, 2")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(level, status, count)| JobCount { level: level.unwrap_or_default(), status, count }).collect())
    }

    async fn schema_current(&self) -> Result<bool, StoreError> {
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await?;
        Ok(is_current(applied, &sqlx::migrate!("./migrations/sqlite")))
    }
}

fn decode(what: String) -> sqlx::Error {
    sqlx::Error::Decode(what.into())
}

fn job_record(row: SqliteRow) -> Result<JobRecord, StoreError> {
    let status: String = row.get("status");
    let id: String = row.get("id");
    let request: String = row.get("request");
    let running: Option<String> = row.get("running");
    Ok(JobRecord {
        id: id.parse().map_err(|_| decode(format!("job id '{id}'")))?,
        owner: row.get("owner"),
        request: serde_json::from_str(&request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        status: JobStatus::parse(&status).ok_or_else(|| decode(format!("job status '{status}'")))?,
        transaction_time: instant(row.get("transaction_time")),
        created_at: instant(row.get("created_at")),
        expires_at: row.get::<Option<i64>, _>("expires_at").map(instant),
        error: row.get("error"),
        progress: Progress {
            tasks_total: row.get("tasks_total"),
            tasks_done: row.get("tasks_done"),
            resources_written: row.get("written"),
            running: running.map(|r| r.split(',').map(str::to_owned).collect()).unwrap_or_default(),
        },
    })
}
