//! Integration tests: the real server over HTTP, each test against both backends (a real
//! Postgres, and a SQLite file) from one body: `name::postgres` and `name::sqlite`.

mod cancel;
mod cli;
mod export_levels;
mod helpers;
mod point_in_time;
mod recovery;
mod rejections;
mod rest;
mod rollover;
mod scale_out;
mod synth_load;
