//! The HTTP surface: the axum router and thin handlers that parse, call the domain, and shape
//! the reply. Errors become OperationOutcomes in `error`.

mod auth;
mod error;
mod extract;
mod jobs;
mod kickoff;
mod metadata;
mod rest;

use std::time::Duration;

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::StatusCode,
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

pub use auth::Authorized;
pub use error::ApiError;

use crate::{
    auth::Auth,
    export::Exports,
    fhir::{IssueCode, Validation},
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
    /// How written resources are checked (setting `validation`).
    pub validation: Validation,
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Until the response starts; a file body then streams as long as it needs.
    pub request_timeout: Duration,
}

impl AppState {
    /// The absolute status URL of a job.
    pub fn status_url(&self, job: crate::export::JobId) -> String {
        format!("{}/_jobs/{job}", self.base_url)
    }
}

/// The whole HTTP app. Trailing slashes are trimmed before routing, so `[base]/` is `[base]`.
pub fn app(state: AppState, limits: Limits) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router(state, limits))
}

fn router(state: AppState, limits: Limits) -> Router {
    let fhir = Router::new()
        .merge(auth::router())
        .merge(metadata::router())
        .merge(kickoff::router())
        .merge(jobs::router())
        .merge(rest::router());
    Router::new()
        .nest("/fhir", fhir)
        // SMART clients look for their discovery document at the host root as well.
        .merge(auth::root_router())
        .fallback(|| async { ApiError::not_found("no such endpoint; the FHIR base is /fhir") })
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn(move |request: Request, next: Next| time_limit(limits.request_timeout, request, next)))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception, "internal error; the server log has the details")
                .into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
