-- Export jobs: the kick-off request, its owner and transactionTime, and the job's state.
CREATE TABLE export_jobs (
    id                uuid        PRIMARY KEY,
    owner             text        NOT NULL,
    request           jsonb       NOT NULL,
    status            text        NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'expired')),
    transaction_time  timestamptz NOT NULL,
    -- Object-store folder of all the job's files.
    folder            text        NOT NULL,
    retention_seconds bigint      NOT NULL,
    -- Output files roll over before passing this size (fixed at kick-off for every node).
    max_file_bytes    bigint      NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    expires_at        timestamptz,
    -- OperationOutcome JSON of a failed job.
    error             text,
    -- Set once the janitor has deleted the files of a cancelled, failed or expired job.
    files_released    boolean     NOT NULL DEFAULT false
);
CREATE INDEX export_jobs_unreleased ON export_jobs (status) WHERE NOT files_released;

-- Tasks: one per resource type of a job (plus one for lenient-handling warnings). Claimed with
-- FOR UPDATE SKIP LOCKED under a lease; `fence` grows with each claim and guards every write.
CREATE TABLE export_tasks (
    id               bigserial   PRIMARY KEY,
    job_id           uuid        NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    kind             text        NOT NULL CHECK (kind IN ('export', 'outcomes')),
    resource_type    text        NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    worker_id        text,
    lease_expires_at timestamptz,
    fence            bigint      NOT NULL DEFAULT 0,
    attempts         integer     NOT NULL DEFAULT 0,
    written          bigint      NOT NULL DEFAULT 0,
    error            text,
    UNIQUE (job_id, kind, resource_type)
);
CREATE INDEX export_tasks_runnable ON export_tasks (status, lease_expires_at)
    WHERE status IN ('queued', 'running');

-- Finished files, listed in the manifest. Only a task's current fence holder adds them.
CREATE TABLE export_files (
    job_id        uuid   NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    task_id       bigint NOT NULL REFERENCES export_tasks (id) ON DELETE CASCADE,
    kind          text   NOT NULL CHECK (kind IN ('output', 'error', 'deleted')),
    resource_type text   NOT NULL,
    name          text   NOT NULL,
    object_key    text   NOT NULL,
    count         bigint NOT NULL,
    bytes         bigint NOT NULL,
    PRIMARY KEY (job_id, name)
);

-- Group export: the member patients at transactionTime.
CREATE TABLE export_job_patients (
    job_id     uuid NOT NULL REFERENCES export_jobs (id) ON DELETE CASCADE,
    patient_id text NOT NULL,
    PRIMARY KEY (job_id, patient_id)
);
