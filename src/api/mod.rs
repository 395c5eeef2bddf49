//! The HTTP surface: the axum router and thin handlers that parse, call the domain, and shape
//! the reply. Errors become OperationOutcomes in `error`.

mod auth;
mod edges;
mod error;
mod extract;
mod health;
mod jobs;
mod kickoff;
mod metadata;
mod metrics;
mod rest;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use tower::Layer;
use tower_http::{
    catch_panic::CatchPanicLayer,
    normalize_path::{NormalizePath, NormalizePathLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use tokio::sync::Semaphore;

pub use auth::Authorized;
pub use error::ApiError;

use crate::{
    auth::Auth,
    config::KickoffHeaders,
    export::Exports,
    fhir::{IssueCode, Validation},
    output::Output,
    store::Stores,
};

/// Everything a handler needs, cloned per request.
#[derive(Clone)]
pub struct AppState {
    pub exports: Exports,
    pub stores: Stores,
    /// The public URL of the FHIR base, without a trailing slash.
    pub base_url: String,
    pub auth: Auth,
    /// Whether a kick-off must send `Accept: application/fhir+json` and `Prefer: respond-async`.
    pub kickoff_headers: KickoffHeaders,
    /// Where export files go (readiness checks that it takes writes).
    pub output: Output,
    /// How written resources are checked (setting `validation`).
    pub validation: Validation,
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Until the response starts; a file body then streams as long as it needs.
    pub request_timeout: Duration,
    /// Requests with bodies over 1 MiB read at once (each body is parsed whole in memory).
    pub concurrent_large_bodies: usize,
}

impl AppState {
    /// The absolute status URL of a job.
    pub fn status_url(&self, job: crate::model::job::JobId) -> String {
        format!("{}/_jobs/{job}", self.base_url)
    }
}

/// The whole HTTP app, as served.
pub type App = NormalizePath<Router>;

/// The whole HTTP app. Trailing slashes are trimmed before routing, so `[base]/` is `[base]`.
pub fn app(state: AppState, limits: Limits) -> App {
    NormalizePathLayer::trim_trailing_slash().layer(router(state, limits))
}

fn router(state: AppState, limits: Limits) -> Router {
    let fhir = Router::new()
        .merge(auth::router())
        .merge(metadata::router())
        .merge(kickoff::router())
        .merge(jobs::router())
        .merge(rest::router());
    let bodies = edges::BodyLimits { max_body_bytes: limits.max_body_bytes, large: Arc::new(Semaphore::new(limits.concurrent_large_bodies)) };
    Router::new()
        .nest("/fhir", fhir)
        // SMART clients look for their discovery document at the host root as well.
        .merge(auth::root_router())
        // Operators' endpoints: outside the FHIR base and authorization.
        .merge(health::router())
        .merge(metrics::router())
        .fallback(|| async { ApiError::not_found("no such endpoint; the FHIR base is /fhir") })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        // Inside the time limit: a request waiting for a large-body slot waits no longer than it.
        .layer(middleware::from_fn(move |request: Request, next: Next| edges::guard(bodies.clone(), request, next)))
        .layer(middleware::from_fn(move |request: Request, next: Next| time_limit(limits.request_timeout, request, next)))
        .layer(middleware::from_fn(edges::outcomes_only))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception, "internal error; the server log has the details")
                .into_response()
        }))
        .layer(middleware::from_fn(metrics::track))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The span of one request carries its `x-request-id` (set by the outer layer, or the
/// client's own), so every log line of the request, a kick-off's "export job created" with the
/// job id included, can be found by it.
fn request_span(request: &Request) -> tracing::Span {
    let id = request.headers().get("x-request-id").and_then(|v: &HeaderValue| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
}

/// A request that has not started its response within the limit gets a 503 OperationOutcome.
async fn time_limit(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IssueCode::Timeout, format!("the request took longer than {} s", limit.as_secs()))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_request_past_the_time_limit_gets_a_503_outcome() {
        let limit = Duration::from_millis(50);
        let app = Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }))
            .layer(middleware::from_fn(move |request: Request, next: Next| time_limit(limit, request, next)));
        let response = app.oneshot(Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("\"OperationOutcome\""));
    }
}
