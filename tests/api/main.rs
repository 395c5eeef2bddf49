//! Integration tests: the real server over HTTP, each test against both backends (a real
//! Postgres, and a SQLite file) from one body: `name::postgres` and `name::sqlite`.

mod auth;
mod azure;
mod azurite;
mod associated_data;
mod cancel;
mod cli;
mod elements;
mod export_levels;
mod fuzz;
mod helpers;
mod kickoff_clients;
mod moto;
mod organize_output;
mod partial_manifests;
mod patient_param;
mod point_in_time;
mod recovery;
mod rejections;
mod rest;
mod rollover;
mod s3;
mod scale_out;
mod smart;
mod type_filter;
mod since_until;
mod status_cache;
mod synth_load;
