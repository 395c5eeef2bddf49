-- De-identified exports (`_anonymizationConfig`): the configuration read at kick-off, sealed
-- with the server's anonymization key (AES-256-GCM), so every task of the job applies the same
-- rules and its keys are never stored in clear. NULL for plain exports.
ALTER TABLE export_jobs ADD COLUMN anonymization bytea;
