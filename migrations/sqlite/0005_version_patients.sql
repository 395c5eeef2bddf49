-- Each version carries the patients whose compartments hold it, space-separated (a FHIR id
-- has no spaces; NULL when none), written with its compartment_members rows. A Patient-level
-- export checks membership against this column instead of seeking compartment_members once per
-- row: on 1M resources that seek tripled the cost of reading Observation (0.49 s -> 1.65 s in
-- the sqlite3 shell), the column check costs 0.75 s. compartment_members stays the way in from
-- a patient (Group exports, `_typeFilter` on patient).
-- The backfill rewrites every row: about 30 s per million resources.
ALTER TABLE resources ADD COLUMN patients TEXT;
ALTER TABLE resource_history ADD COLUMN patients TEXT;

UPDATE resources SET patients = (
    SELECT group_concat(c.patient_id, ' ') FROM compartment_members c
    WHERE c.resource_type = resources.resource_type AND c.id = resources.id AND c.version_id = resources.version_id);

UPDATE resource_history SET patients = (
    SELECT group_concat(c.patient_id, ' ') FROM compartment_members c
    WHERE c.resource_type = resource_history.resource_type AND c.id = resource_history.id
      AND c.version_id = resource_history.version_id);
