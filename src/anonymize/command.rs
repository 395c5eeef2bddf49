//! `bulkfhir anonymize`: the engine over NDJSON and Bundle files.
