//! bulkfhir: a FHIR Bulk Data (`$export`) server.
//!
//! Layers, each in its own module, importing only those below (scripts/layers.py checks it):
//! `api` (HTTP) and the `startup` wiring shared by `main` and the tests; `config`; `auth` (SMART
//! authorization), `export` (the export domain), `load`; `store` (persistence behind traits),
//! `output` (where files go), `anonymize`; the utilities `telemetry`, `https`, `low_priority_runtime`;
//! `model` (the records they share); `fhir` (FHIR knowledge, no I/O).

/// Unit tests and benchmarks allocate as the server does.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod anonymize;
pub mod api;
pub mod auth;
pub mod config;
pub mod export;
pub mod fhir;
pub mod https;
pub mod load;
pub mod low_priority_runtime;
pub mod model;
pub mod output;
pub mod startup;
pub mod store;
pub mod telemetry;
