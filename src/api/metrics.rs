//! `GET /metrics` (Prometheus text format) and the layer that counts and times every request by
//! its route pattern, never its raw URL (ids in URLs would make a series per job).

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use super::AppState;
use crate::telemetry::{self, names};

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

/// The process's counters and histograms, plus the jobs in the database by level and status.
async fn render(State(app): State<AppState>) -> Response {
    match app.stores.jobs.job_counts().await {
        Ok(counts) => {
            for count in counts {
                let labels = [("level", count.level), ("status", count.status)];
                metrics::gauge!(names::EXPORT_JOBS, &labels).set(count.count as f64);
            }
        }
        // The rest is still worth a scrape; the gauge keeps its last value.
        Err(e) => tracing::warn!(error = %e, "metrics: could not count the jobs"),
    }
    let mut response = (StatusCode::OK, telemetry::metrics().render()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// Counts and times a request under its matched route (`unmatched` for unknown URLs).
pub async fn track(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [("method", method.to_owned()), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!(names::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(names::HTTP_REQUEST_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Standard methods by name; anything else in one series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A 429, by why it was sent.
pub fn throttled(reason: &'static str) {
    metrics::counter!(names::THROTTLED, "reason" => reason).increment(1);
}

/// A request refused for its authorization, by why.
pub fn auth_failed(reason: &'static str) {
    metrics::counter!(names::AUTH_FAILURES, "reason" => reason).increment(1);
}
