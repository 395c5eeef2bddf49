//! Integration tests: the real server over HTTP against a real Postgres.

mod cancel;
mod cli;
mod export_levels;
mod helpers;
mod point_in_time;
mod recovery;
mod rejections;
mod rest;
mod rollover;
