-- Export jobs, tasks, files and Group members; see migrations/postgres for the meaning of each
-- column. Ids of jobs are UUID text; instants are INTEGER microseconds since the epoch.
CREATE TABLE export_jobs (
    id                TEXT    PRIMARY KEY,
    owner             TEXT    NOT NULL,
    request           TEXT    NOT NULL,
    status            TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'expired')),
    transaction_time  INTEGER NOT NULL,
    folder            TEXT    NOT NULL,
    retention_seconds INTEGER NOT NULL,
    max_file_bytes    INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    completed_at      INTEGER,
    expires_at        INTEGER,
    error             TEXT,
    files_released    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX export_jobs_unreleased ON export_jobs (status) WHERE files_released = 0;

CREATE TABLE export_tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           TEXT    NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    kind             TEXT    NOT NULL CHECK (kind IN ('export', 'outcomes')),
    resource_type    TEXT    NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    worker_id        TEXT,
    lease_expires_at INTEGER,
    fence            INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    written          INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    UNIQUE (job_id, kind, resource_type)
);
CREATE INDEX export_tasks_runnable ON export_tasks (status, lease_expires_at)
    WHERE status IN ('queued', 'running');

CREATE TABLE export_files (
    job_id        TEXT    NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    task_id       INTEGER NOT NULL REFERENCES export_tasks (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('output', 'error', 'deleted')),
    resource_type TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    object_key    TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);

CREATE TABLE export_job_patients (
    job_id     TEXT NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (job_id, patient_id)
) WITHOUT ROWID;
