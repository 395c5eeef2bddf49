-- SQLite schema, the same model as Postgres (see migrations/postgres). Instants are INTEGER
-- microseconds since the Unix epoch (UTC): exact, and ordered as numbers.

-- The current version of each resource, as export-ready compact JSON text.
CREATE TABLE resources (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    deleted       INTEGER NOT NULL DEFAULT 0,
    body          TEXT,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resources_type_last_updated ON resources (resource_type, last_updated);

-- Prior versions: current at T when last_updated <= T < superseded_at.
CREATE TABLE resource_history (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    superseded_at INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    body          TEXT,
    PRIMARY KEY (resource_type, id, version_id)
);
CREATE INDEX resource_history_superseded ON resource_history (resource_type, superseded_at);

-- Patient compartment membership of each version.
CREATE TABLE compartment_members (
    patient_id    TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version_id    INTEGER NOT NULL,
    PRIMARY KEY (patient_id, resource_type, id, version_id)
) WITHOUT ROWID;
CREATE INDEX compartment_members_resource ON compartment_members (resource_type, id, version_id);
