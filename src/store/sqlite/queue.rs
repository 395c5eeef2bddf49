//! `WorkQueue` on SQLite: claims inside `BEGIN IMMEDIATE` (SQLite's one writer makes the claim
//! exclusive), leases and fencing tokens as on Postgres.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};

use super::{instant, now_micros, SqliteStore};
use crate::{
    model::job::{exhausted_outcome, ClaimedTask, FileRecord, JobId, JobStatus, TaskKind},
    store::{Lease, StoreError, WorkQueue},
};

fn lease_until(lease: Duration) -> i64 {
    now_micros() + lease.as_micros() as i64
}

#[async_trait]
impl WorkQueue for SqliteStore {
    async fn claim(&self, worker: &str, lease: Duration, max_attempts: i32) -> Result<Option<ClaimedTask>, StoreError> {
        let mut tx = self.begin_write().await?;
        let candidate: Option<(i64, String)> = sqlx::query_as(
            "SELECT c.id, c.job_id FROM export_tasks c JOIN export_jobs j ON j.id = c.job_id \
             WHERE j.status IN ('queued', 'running') AND c.attempts < ?1 \
               AND (c.status = 'queued' OR (c.status = 'running' AND c.lease_expires_at < ?2)) \
             ORDER BY j.created_at, c.id LIMIT 1",
        )
        .bind(max_attempts)
        .bind(now_micros())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((task_id, job_id)) = candidate else { return Ok(None) };
        let task = sqlx::query(
            "UPDATE export_tasks SET status = 'running', worker_id = ?2, lease_expires_at = ?3, \
                    fence = fence + 1, attempts = attempts + 1 \
             WHERE id = ?1 RETURNING kind, resource_type, fence",
        )
        .bind(task_id)
        .bind(worker)
        .bind(lease_until(lease))
        .fetch_one(&mut *tx)
        .await?;
        let job = sqlx::query(
            "UPDATE export_jobs SET status = 'running', started_at = coalesce(started_at, ?2) \
             WHERE id = ?1 RETURNING request, transaction_time, folder, max_file_bytes, anonymization",
        )
        .bind(&job_id)
        .bind(now_micros())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let kind: String = task.get("kind");
        let request: String = job.get("request");
        Ok(Some(ClaimedTask {
            task_id,
            job_id: job_id.parse().map_err(|_| sqlx::Error::Decode(format!("job id '{job_id}'").into()))?,
            kind: TaskKind::parse(&kind).unwrap_or(TaskKind::Export),
            resource_type: task.get("resource_type"),
            fence: task.get("fence"),
            request: serde_json::from_str(&request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            transaction_time: instant(job.get("transaction_time")),
            folder: job.get("folder"),
            max_file_bytes: job.get::<i64, _>("max_file_bytes") as u64,
            anonymization: job.get("anonymization"),
        }))
    }

    async fn heartbeat(&self, task: &ClaimedTask, lease: Duration, written: i64) -> Result<Lease, StoreError> {
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(
            "UPDATE export_tasks SET lease_expires_at = ?3, written = ?4 WHERE id = ?1 AND fence = ?2 AND status = 'running'",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(lease_until(lease))
        .bind(written)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let job_status = job_status(&mut tx, task.job_id).await?;
        tx.commit().await?;
        Ok(match job_status {
            _ if !held => Lease::Lost,
            Some(status) if !status.is_terminal() => Lease::Held,
            _ => Lease::Cancelled,
        })
    }

    async fn complete(&self, task: &ClaimedTask, files: Vec<FileRecord>) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if job_status(&mut tx, task.job_id).await? != Some(JobStatus::Running) {
            // The job ended while the task ran: hand the task back so cleanup need not wait.
            drop(tx);
            self.release(task).await?;
            return Ok(false);
        }
        let written: i64 = files.iter().map(|f| f.count).sum();
        let held = sqlx::query(
            "UPDATE export_tasks SET status = 'done', written = ?3, lease_expires_at = NULL \
             WHERE id = ?1 AND fence = ?2 AND status = 'running'",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(written)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !held {
            return Ok(false);
        }
        for file in &files {
            sqlx::query(
                "INSERT INTO export_files (job_id, task_id, kind, resource_type, name, object_key, count, bytes) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(task.job_id.to_string())
            .bind(task.task_id)
            .bind(file.kind.as_str())
            .bind(&file.resource_type)
            .bind(&file.name)
            .bind(&file.key)
            .bind(file.count)
            .bind(file.bytes)
            .execute(&mut *tx)
            .await?;
        }
        let now = now_micros();
        sqlx::query(
            "UPDATE export_jobs SET status = 'completed', completed_at = ?2, expires_at = ?2 + retention_seconds * 1000000 \
             WHERE id = ?1 AND status = 'running' \
               AND NOT EXISTS (SELECT 1 FROM export_tasks WHERE job_id = ?1 AND status <> 'done')",
        )
        .bind(task.job_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fail(&self, task: &ClaimedTask, outcome: String) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let held = sqlx::query(
            "UPDATE export_tasks SET status = 'failed', error = ?3, lease_expires_at = NULL \
             WHERE id = ?1 AND fence = ?2 AND status = 'running'",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(&outcome)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if held {
            fail_job(&mut tx, task.job_id, &outcome).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release(&self, task: &ClaimedTask) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let live = job_status(&mut tx, task.job_id).await?.is_some_and(|s| !s.is_terminal());
        // A graceful hand-back does not count as an attempt.
        sqlx::query(
            "UPDATE export_tasks SET lease_expires_at = NULL, worker_id = NULL, \
                    status = CASE WHEN ?3 THEN 'queued' ELSE 'cancelled' END, \
                    attempts = CASE WHEN ?3 THEN attempts - 1 ELSE attempts END \
             WHERE id = ?1 AND fence = ?2 AND status = 'running'",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(live)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.work.notify_waiters();
        Ok(())
    }

    async fn retry(&self, task: &ClaimedTask, backoff: Duration, max_attempts: i32) -> Result<bool, StoreError> {
        // Still 'running', under a lease that ends after the backoff: the claim takes it then.
        let mut tx = self.begin_write().await?;
        let retried = sqlx::query(
            "UPDATE export_tasks SET worker_id = NULL, lease_expires_at = ?3 \
             WHERE id = ?1 AND fence = ?2 AND status = 'running' AND attempts < ?4",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(lease_until(backoff))
        .bind(max_attempts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(retried == 1)
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
    }

    async fn fail_exhausted(&self, max_attempts: i32) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let dead: Vec<(String, String, i32)> = sqlx::query_as(
            "UPDATE export_tasks SET status = 'failed', lease_expires_at = NULL \
             WHERE status = 'running' AND lease_expires_at < ?2 AND attempts >= ?1 \
             RETURNING job_id, resource_type, attempts",
        )
        .bind(max_attempts)
        .bind(now_micros())
        .fetch_all(&mut *tx)
        .await?;
        for (job, resource_type, attempts) in &dead {
            let outcome = exhausted_outcome(resource_type, *attempts);
            let job: JobId = job.parse().map_err(|_| sqlx::Error::Decode(format!("job id '{job}'").into()))?;
            fail_job(&mut tx, job, &outcome).await?;
        }
        tx.commit().await?;
        Ok(dead.len() as u64)
    }

    async fn expire_jobs(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let expired = sqlx::query("UPDATE export_jobs SET status = 'expired' WHERE status = 'completed' AND expires_at <= ?")
            .bind(now_micros())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(expired)
    }

    async fn jobs_to_release(&self) -> Result<Vec<(JobId, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT j.id, j.folder FROM export_jobs j \
             WHERE j.status IN ('cancelled', 'failed', 'expired') AND j.files_released = 0 \
               AND NOT EXISTS (SELECT 1 FROM export_tasks t WHERE t.job_id = j.id AND t.status = 'running' \
                               AND t.lease_expires_at > ?)",
        )
        .bind(now_micros())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().filter_map(|(id, folder)| Some((id.parse().ok()?, folder))).collect())
    }

    async fn mark_released(&self, id: JobId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE export_jobs SET files_released = 1 WHERE id = ?").bind(id.to_string()).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM export_files WHERE job_id = ?").bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn job_status(conn: &mut SqliteConnection, job: JobId) -> Result<Option<JobStatus>, StoreError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM export_jobs WHERE id = ?")
        .bind(job.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(status.as_deref().and_then(JobStatus::parse))
}

/// Fails a job that is still queued or running, and cancels its queued tasks.
async fn fail_job(conn: &mut SqliteConnection, job: JobId, outcome: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE export_jobs SET status = 'failed', error = ?2, completed_at = ?3 \
         WHERE id = ?1 AND status IN ('queued', 'running')",
    )
    .bind(job.to_string())
    .bind(outcome)
    .bind(now_micros())
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE export_tasks SET status = 'cancelled' WHERE job_id = ? AND status = 'queued'")
        .bind(job.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
