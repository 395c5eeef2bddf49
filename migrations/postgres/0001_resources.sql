-- Resources: one row per (type, id) holding the current version. `body` is the compact JSON
-- text exactly as exported (meta.versionId and meta.lastUpdated already set), so an export
-- streams it without parsing. Deleted resources keep their row with deleted = true, body NULL.
CREATE TABLE resources (
    resource_type text        NOT NULL,
    id            text        NOT NULL,
    version_id    bigint      NOT NULL,
    last_updated  timestamptz NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    body          text,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resources_type_last_updated ON resources (resource_type, last_updated);

-- Prior versions. A version is the one current at instant T when
-- last_updated <= T < superseded_at; exports as of transactionTime read it from here when the
-- resource changed after kick-off.
CREATE TABLE resource_history (
    resource_type text        NOT NULL,
    id            text        NOT NULL,
    version_id    bigint      NOT NULL,
    last_updated  timestamptz NOT NULL,
    superseded_at timestamptz NOT NULL,
    deleted       boolean     NOT NULL,
    body          text,
    PRIMARY KEY (resource_type, id, version_id)
);
CREATE INDEX resource_history_superseded ON resource_history (resource_type, superseded_at);

-- Patient compartment membership of each version (R4 CompartmentDefinition), so Patient and
-- Group exports select exactly, and as of transactionTime. A Patient is in its own compartment.
CREATE TABLE compartment_members (
    patient_id    text   NOT NULL,
    resource_type text   NOT NULL,
    id            text   NOT NULL,
    version_id    bigint NOT NULL,
    PRIMARY KEY (patient_id, resource_type, id, version_id)
);
CREATE INDEX compartment_members_resource ON compartment_members (resource_type, id, version_id);
