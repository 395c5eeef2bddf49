//! The HTTP surface: the axum router and thin handlers that parse, call the domain, and shape
//! the reply. Errors become OperationOutcomes in `error`.

mod error;
mod extract;
mod jobs;
mod kickoff;
mod metadata;
mod rest;

use axum::{extract::DefaultBodyLimit, http::StatusCode, response::IntoResponse, Router};
use tower::Layer;
use tower_http::{
    catch_panic::CatchPanicLayer,
    normalize_path::{NormalizePath, NormalizePathLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use error::ApiError;

use crate::{export::Exports, fhir::IssueCode, store::Stores};

/// Everything a handler needs, cloned per request.
#[derive(Clone)]
pub struct AppState {
    pub exports: Exports,
    pub stores: Stores,
    /// The public URL of the FHIR base, without a trailing slash.
    pub base_url: String,
}

impl AppState {
    /// The absolute status URL of a job.
    pub fn status_url(&self, job: crate::export::JobId) -> String {
        format!("{}/_jobs/{job}", self.base_url)
    }
}

/// The whole HTTP app. Trailing slashes are trimmed before routing, so `[base]/` is `[base]`.
pub fn app(state: AppState, max_body_bytes: usize) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router(state, max_body_bytes))
}

fn router(state: AppState, max_body_bytes: usize) -> Router {
    let fhir = Router::new()
        .merge(metadata::router())
        .merge(kickoff::router())
        .merge(jobs::router())
        .merge(rest::router());
    Router::new()
        .nest("/fhir", fhir)
        .fallback(|| async { ApiError::not_found("no such endpoint; the FHIR base is /fhir") })
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception, "internal error; the server log has the details")
                .into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
