-- SMART Backend Services authorization.

-- Registered backend clients: a JWKS given inline (JSON text) or as a URL, never both, and the
-- system scopes the client may be granted (space-separated).
CREATE TABLE auth_clients (
    client_id  text        PRIMARY KEY,
    jwks       text,
    jwks_url   text,
    scopes     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);

-- `jti` of accepted client assertions, kept until the assertion expires, so a replay is refused.
CREATE TABLE auth_seen_jti (
    client_id  text        NOT NULL,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_seen_jti_expiry ON auth_seen_jti (expires_at);

-- The server's access-token signing key (PKCS#8, base64), generated once and shared by every
-- node on this database, unless a key file is configured.
CREATE TABLE auth_signing_key (
    id    smallint PRIMARY KEY CHECK (id = 1),
    pkcs8 text     NOT NULL
);

-- Per-client limit on concurrent exports counts these.
CREATE INDEX export_jobs_owner_active ON export_jobs (owner) WHERE status IN ('queued', 'running');
