-- Cheaper index maintenance for bulk loads (issue 7). Measured by the backend's CPU time for a
-- COPY of 269k Synthea-shaped resources and their 267k compartment rows:
--
-- 1. Key columns compare bytewise (COLLATE "C"). Ids, type names and patient ids are ASCII
--    tokens, and equality is the same under any deterministic collation; only the order of ids
--    in an index changes (byte order, which is also what a C.UTF-8 database already used).
--    Every index insert compares keys a dozen times, and a libc collation copies both strings
--    and calls strcoll for each: "C" is a memcmp. resources' COPY: 4.6 -> 3.9 CPU-s.
-- 2. compartment_members loses its four-column primary key. Its rows are written only together
--    with the version row they describe, which has its own primary key, so the unique index
--    guarded nothing, and it was the widest index of the load. The lookups by patient (Group,
--    Patient and `_typeFilter` patient narrowing, always with a resource type) use a
--    (patient_id, resource_type) index instead, which B-tree deduplication keeps small:
--    compartment rows' COPY: 1.9 -> 1.3 CPU-s, a quarter less WAL.
ALTER TABLE resources
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";

ALTER TABLE resource_history
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";

ALTER TABLE compartment_members DROP CONSTRAINT compartment_members_pkey;
ALTER TABLE compartment_members
    ALTER COLUMN patient_id TYPE text COLLATE "C",
    ALTER COLUMN resource_type TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C";
CREATE INDEX compartment_members_patient ON compartment_members (patient_id, resource_type);
