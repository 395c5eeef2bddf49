-- SMART Backend Services authorization; see migrations/postgres for the meaning of each table.
-- Instants are INTEGER microseconds since the epoch.
CREATE TABLE auth_clients (
    client_id  TEXT    PRIMARY KEY,
    jwks       TEXT,
    jwks_url   TEXT,
    scopes     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);

CREATE TABLE auth_seen_jti (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE INDEX auth_seen_jti_expiry ON auth_seen_jti (expires_at);

CREATE TABLE auth_signing_key (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    pkcs8 TEXT    NOT NULL
);

CREATE INDEX export_jobs_owner_active ON export_jobs (owner) WHERE status IN ('queued', 'running');
