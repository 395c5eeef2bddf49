//! `WorkQueue` on Postgres: claims with `FOR UPDATE SKIP LOCKED`, leases, fencing tokens.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{PgConnection, Row};

use super::{retrying, PgStore};
use crate::{
    model::job::{exhausted_outcome, ClaimedTask, FileRecord, JobId, JobStatus, TaskKind},
    store::{Lease, StoreError, WorkQueue},
};

#[async_trait]
impl WorkQueue for PgStore {
    async fn claim(&self, worker: &str, lease: Duration, max_attempts: i32) -> Result<Option<ClaimedTask>, StoreError> {
        retrying(|| self.claim_once(worker, lease, max_attempts)).await
    }

    async fn heartbeat(&self, task: &ClaimedTask, lease: Duration, written: i64) -> Result<Lease, StoreError> {
        let job_status: Option<String> = sqlx::query_scalar(
            "UPDATE export_tasks t SET lease_expires_at = now() + $3 * interval '1 millisecond', written = $4 \
             FROM export_jobs j WHERE t.id = $1 AND t.fence = $2 AND t.status = 'running' AND j.id = t.job_id \
             RETURNING j.status",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(lease.as_millis() as i64)
        .bind(written)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match job_status.as_deref().and_then(JobStatus::parse) {
            None => Lease::Lost,
            Some(status) if status.is_terminal() => Lease::Cancelled,
            Some(_) => Lease::Held,
        })
    }

    async fn complete(&self, task: &ClaimedTask, files: Vec<FileRecord>) -> Result<bool, StoreError> {
        retrying(|| self.complete_once(task, &files)).await
    }

    async fn fail(&self, task: &ClaimedTask, outcome: String) -> Result<(), StoreError> {
        retrying(|| self.fail_once(task, &outcome)).await
    }

    async fn release(&self, task: &ClaimedTask) -> Result<(), StoreError> {
        self.release_once(task).await
    }

    async fn retry(&self, task: &ClaimedTask, backoff: Duration, max_attempts: i32) -> Result<bool, StoreError> {
        // Still 'running', under a lease that ends after the backoff: the claim takes it then.
        let retried = sqlx::query(
            "UPDATE export_tasks SET worker_id = NULL, lease_expires_at = now() + $3 * interval '1 millisecond' \
             WHERE id = $1 AND fence = $2 AND status = 'running' AND attempts < $4",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(backoff.as_millis() as i64)
        .bind(max_attempts)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(retried == 1)
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
    }

    async fn fail_exhausted(&self, max_attempts: i32) -> Result<u64, StoreError> {
        retrying(|| self.fail_exhausted_once(max_attempts)).await
    }

    async fn expire_jobs(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("UPDATE export_jobs SET status = 'expired' WHERE status = 'completed' AND expires_at <= now()")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn jobs_to_release(&self) -> Result<Vec<(JobId, String)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT j.id, j.folder FROM export_jobs j \
             WHERE j.status IN ('cancelled', 'failed', 'expired') AND NOT j.files_released \
               AND NOT EXISTS (SELECT 1 FROM export_tasks t WHERE t.job_id = j.id AND t.status = 'running' \
                               AND t.lease_expires_at > now())",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, folder)| (JobId(id), folder)).collect())
    }

    async fn mark_released(&self, id: JobId) -> Result<(), StoreError> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE export_jobs SET files_released = true WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM export_files WHERE job_id = $1").bind(id.0).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

// Lock order, everywhere: task rows before the job row. A claim whose recheck skips a row
// another worker just claimed keeps that row locked until it commits; were a completion to
// lock the job row first and wait for its task row, a claim waiting on the job row would close
// a cycle (the deadlocks of issue 17).
impl PgStore {
    async fn claim_once(&self, worker: &str, lease: Duration, max_attempts: i32) -> Result<Option<ClaimedTask>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE export_tasks t SET status = 'running', worker_id = $1, \
                    lease_expires_at = now() + $2 * interval '1 millisecond', fence = fence + 1, attempts = attempts + 1 \
             WHERE t.id = ( \
                SELECT c.id FROM export_tasks c JOIN export_jobs j ON j.id = c.job_id \
                WHERE j.status IN ('queued', 'running') AND c.attempts < $3 \
                  AND (c.status = 'queued' OR (c.status = 'running' AND c.lease_expires_at < now())) \
                ORDER BY j.created_at, c.id \
                FOR UPDATE OF c SKIP LOCKED LIMIT 1) \
             RETURNING t.id, t.job_id, t.kind, t.resource_type, t.fence",
        )
        .bind(worker)
        .bind(lease.as_millis() as i64)
        .bind(max_attempts)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(task) = claimed else { return Ok(None) };
        let job_id: uuid::Uuid = task.get("job_id");
        // Only the first claim of a job writes its row: later claims never wait on a job row
        // that a completion holds.
        sqlx::query("UPDATE export_jobs SET status = 'running', started_at = now() WHERE id = $1 AND status = 'queued'")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        let job = sqlx::query("SELECT request, transaction_time, folder, max_file_bytes, anonymization FROM export_jobs WHERE id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let kind: String = task.get("kind");
        let request: serde_json::Value = job.get("request");
        Ok(Some(ClaimedTask {
            task_id: task.get("id"),
            job_id: JobId(job_id),
            kind: TaskKind::parse(&kind).unwrap_or(TaskKind::Export),
            resource_type: task.get("resource_type"),
            fence: task.get("fence"),
            request: serde_json::from_value(request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            transaction_time: job.get("transaction_time"),
            folder: job.get("folder"),
            max_file_bytes: job.get::<i64, _>("max_file_bytes") as u64,
            anonymization: job.get("anonymization"),
        }))
    }

    async fn complete_once(&self, task: &ClaimedTask, files: &[FileRecord]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let written: i64 = files.iter().map(|f| f.count).sum();
        let held = sqlx::query(
            "UPDATE export_tasks SET status = 'done', written = $3, lease_expires_at = NULL \
             WHERE id = $1 AND fence = $2 AND status = 'running'",
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
        // Completions of one job are serialized on its row, so exactly one sees the last task done.
        let job_status: Option<String> = sqlx::query_scalar("SELECT status FROM export_jobs WHERE id = $1 FOR UPDATE")
            .bind(task.job_id.0)
            .fetch_optional(&mut *tx)
            .await?;
        if job_status.as_deref() != Some(JobStatus::Running.as_str()) {
            // The job ended (cancelled or failed) while the task ran: hand the task back at once,
            // so the job's files can be deleted without waiting for the lease to expire.
            tx.rollback().await?;
            self.release_once(task).await?;
            return Ok(false);
        }
        let column = |f: fn(&FileRecord) -> String| files.iter().map(f).collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO export_files (job_id, task_id, kind, resource_type, name, object_key, count, bytes) \
             SELECT $1, $2, k, t, n, o, c, b FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[]) \
               AS x(k, t, n, o, c, b)",
        )
        .bind(task.job_id.0)
        .bind(task.task_id)
        .bind(column(|f| f.kind.as_str().to_owned()))
        .bind(column(|f| f.resource_type.clone()))
        .bind(column(|f| f.name.clone()))
        .bind(column(|f| f.key.clone()))
        .bind(files.iter().map(|f| f.count).collect::<Vec<i64>>())
        .bind(files.iter().map(|f| f.bytes).collect::<Vec<i64>>())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE export_jobs SET status = 'completed', completed_at = now(), \
                    expires_at = now() + retention_seconds * interval '1 second' \
             WHERE id = $1 AND status = 'running' \
               AND NOT EXISTS (SELECT 1 FROM export_tasks WHERE job_id = $1 AND status <> 'done')",
        )
        .bind(task.job_id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_once(&self, task: &ClaimedTask, outcome: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let held = sqlx::query(
            "UPDATE export_tasks SET status = 'failed', error = $3, lease_expires_at = NULL \
             WHERE id = $1 AND fence = $2 AND status = 'running'",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .bind(outcome)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if held {
            fail_job(&mut tx, task.job_id, outcome).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release_once(&self, task: &ClaimedTask) -> Result<(), StoreError> {
        // A graceful hand-back does not count as an attempt.
        sqlx::query(
            "UPDATE export_tasks t SET lease_expires_at = NULL, worker_id = NULL, \
                    status = CASE WHEN j.status IN ('queued', 'running') THEN 'queued' ELSE 'cancelled' END, \
                    attempts = CASE WHEN j.status IN ('queued', 'running') THEN t.attempts - 1 ELSE t.attempts END \
             FROM export_jobs j WHERE t.id = $1 AND t.fence = $2 AND t.status = 'running' AND j.id = t.job_id",
        )
        .bind(task.task_id)
        .bind(task.fence)
        .execute(&self.pool)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')").bind(super::WORK_CHANNEL).execute(&self.pool).await?;
        Ok(())
    }

    async fn fail_exhausted_once(&self, max_attempts: i32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let dead: Vec<(uuid::Uuid, String, i32)> = sqlx::query_as(
            "UPDATE export_tasks SET status = 'failed', lease_expires_at = NULL \
             WHERE status = 'running' AND lease_expires_at < now() AND attempts >= $1 \
             RETURNING job_id, resource_type, attempts",
        )
        .bind(max_attempts)
        .fetch_all(&mut *tx)
        .await?;
        for (job, resource_type, attempts) in &dead {
            let outcome = exhausted_outcome(resource_type, *attempts);
            fail_job(&mut tx, JobId(*job), &outcome).await?;
        }
        tx.commit().await?;
        Ok(dead.len() as u64)
    }
}

/// Fails a job that is still queued or running, and cancels its queued tasks.
async fn fail_job(conn: &mut PgConnection, job: JobId, outcome: &str) -> Result<(), StoreError> {
    // Task rows first, as everywhere (see the lock order above).
    sqlx::query("UPDATE export_tasks SET status = 'cancelled' WHERE job_id = $1 AND status = 'queued'")
        .bind(job.0)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE export_jobs SET status = 'failed', error = $2, completed_at = now() \
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(job.0)
    .bind(outcome)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
