//! Integration tests: the real server over HTTP, each test against both backends (a real
//! Postgres, and a SQLite file) from one body: `name::postgres` and `name::sqlite`.

mod auth;
mod azure;
mod azurite;
mod associated_data;
mod cancel;
mod cli;
mod config_strict;
mod elements;
mod export_levels;
mod health;
mod helpers;
mod janitor;
mod kickoff_clients;
mod http_edges;
mod metrics;
mod moto;
mod organize_output;
mod partial_manifests;
mod patient_param;
mod point_in_time;
mod races;
mod postgres_tls;
mod recovery;
mod rejections;
mod rest;
mod robustness;
mod rollover;
mod s3;
mod scale_out;
mod smart;
mod type_filter;
mod validation;
mod since_until;
mod status_cache;
mod synth_load;
