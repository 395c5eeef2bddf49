//! bulkfhir: a FHIR Bulk Data (`$export`) server.
//!
//! Layers, each in its own module: `fhir` (FHIR knowledge, no I/O), `export` (the export domain), `auth` (SMART authorization),
//! `store` (persistence behind traits), `output` (where files go), `api` (HTTP), and the
//! `startup` wiring shared by `main` and the tests.

pub mod anonymize;
pub mod api;
pub mod auth;
pub mod config;
pub mod export;
pub mod fhir;
pub mod https;
pub mod load;
pub mod low_priority_runtime;
pub mod output;
pub mod startup;
pub mod store;
pub mod telemetry;
