//! Logging: readable text by default, JSON lines for log pipelines; `RUST_LOG` filters. Metrics:
//! one process-wide Prometheus recorder, rendered by `GET /metrics`.

use std::{io::IsTerminal, sync::OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests build several apps in one process) keeps the first subscriber.
    drop(result);
}

/// Buckets (seconds) of request latencies: a status poll takes milliseconds, a large PUT seconds.
const REQUEST_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets (seconds) of export tasks: one type of a small export takes milliseconds, of a large
/// one many minutes.
const TASK_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The process's metrics recorder, installed on first use (metrics are global in the `metrics`
/// crate: several `Application`s in one process, as in the tests, share it).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::HTTP_REQUEST_SECONDS.into()), REQUEST_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::TASK_SECONDS.into()), TASK_BUCKETS))
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed (an embedding program's): ours then
        // renders what it was given, which is nothing.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        handle
    })
}

/// Metric names, in one place so docs/operations.md and the tests agree with the code.
pub mod names {
    /// Counter: kick-offs accepted, by `level`.
    pub const EXPORTS_STARTED: &str = "bulkfhir_exports_started_total";
    /// Gauge (read from the database at each scrape): jobs kept, by `level` and `status`
    /// (queued, running, completed, failed, cancelled, expired).
    pub const EXPORT_JOBS: &str = "bulkfhir_export_jobs";
    /// Counters: resources and bytes written to listed files, by `type` (output files only).
    pub const RESOURCES_WRITTEN: &str = "bulkfhir_export_resources_written_total";
    pub const BYTES_WRITTEN: &str = "bulkfhir_export_bytes_written_total";
    /// Histogram: seconds an export task ran, by `outcome` (done, stopped, failed).
    pub const TASK_SECONDS: &str = "bulkfhir_export_task_seconds";
    /// Counter: tasks whose lease passed to another worker while this one held it.
    pub const LEASE_LOSSES: &str = "bulkfhir_export_lease_losses_total";
    /// Counter: tasks claimed again after an earlier claim (a worker died or lost its lease).
    pub const TASK_RERUNS: &str = "bulkfhir_export_task_reruns_total";
    /// Counter: storage requests that failed in a way object_store retries (5xx, 408, 429,
    /// connection errors, timeouts), by `destination` (azure, s3).
    pub const STORAGE_RETRIES: &str = "bulkfhir_storage_retries_total";
    /// Counter and histogram: HTTP requests by `method`, `route` (the matched path pattern) and
    /// `status`.
    pub const HTTP_REQUESTS: &str = "bulkfhir_http_requests_total";
    pub const HTTP_REQUEST_SECONDS: &str = "bulkfhir_http_request_duration_seconds";
    /// Counter: 429 answers, by `reason` (exports, polls).
    pub const THROTTLED: &str = "bulkfhir_http_throttled_total";
    /// Counter: requests refused for authorization, by `reason` (missing_token, invalid_token,
    /// forbidden, invalid_client, ...).
    pub const AUTH_FAILURES: &str = "bulkfhir_auth_failures_total";
}

/// An error and its causes on one line, for the log (clients get their own words).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
