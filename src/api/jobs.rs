//! The status URL of a job (poll, cancel) and its files.

use std::time::SystemTime;

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures::TryStreamExt;
use tower_http::compression::CompressionLayer;

use super::{
    auth::Authorized,
    error::{fhir_json, ApiError},
    AppState,
};
use crate::{
    auth::Caller,
    export::{manifest::manifest, service::ExportState},
    fhir::{IssueCode, OperationOutcome},
    model::job::{FileRecord, JobId, JobRecord},
};

/// Seconds a client should wait between polls.
const RETRY_AFTER_SECONDS: u32 = 2;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_jobs/{id}", get(export_status).delete(cancel_export))
        .route("/_jobs/{id}/files/{name}", get(download_file).layer(CompressionLayer::new().gzip(true)))
}

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(format!("no export job {raw}")))
}

async fn export_status(State(app): State<AppState>, Authorized(caller): Authorized, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    if !app.auth.poll_allowed(&caller) {
        super::metrics::throttled("polls");
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, IssueCode::Throttled, "status polled too often; wait as Retry-After asks")
            .with_header(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS)));
    }
    let mut response = match app.exports.status(id, &caller.requester).await? {
        ExportState::InProgress(job, files) => {
            let mut response = if job.request.allow_partial_manifests {
                (StatusCode::ACCEPTED, Json(file_manifest(&app, &caller, id, &job, &files).await?)).into_response()
            } else {
                StatusCode::ACCEPTED.into_response()
            };
            let headers = response.headers_mut();
            let progress = job.progress.describe(job.status);
            headers.insert("x-progress", HeaderValue::from_str(&progress).unwrap_or(HeaderValue::from_static("in progress")));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            response
        }
        ExportState::Completed(job, files) => {
            let mut response = Json(file_manifest(&app, &caller, id, &job, &files).await?).into_response();
            if let Some(expires) = job.expires_at {
                let date = httpdate::fmt_http_date(SystemTime::from(expires));
                response.headers_mut().insert(header::EXPIRES, HeaderValue::from_str(&date).expect("an HTTP date is a valid header"));
            }
            response
        }
        ExportState::Failed(job) => {
            let outcome = job.error.unwrap_or_else(|| {
                OperationOutcome::error(crate::fhir::IssueCode::Exception, "the export failed").to_json()
            });
            fhir_json(StatusCode::INTERNAL_SERVER_ERROR, outcome)
        }
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The manifest of the files listed so far, each with its URL: signed by the store, or this
/// server's own file URL, which needs a token only when authorization is on.
async fn file_manifest(app: &AppState, caller: &Caller, id: JobId, job: &JobRecord, files: &[FileRecord]) -> Result<serde_json::Value, ApiError> {
    Ok(match app.exports.signed_urls(job, files, &caller.requester).await? {
        Some(signed) => manifest(job, files, false, |f| signed.get(&f.key).cloned().unwrap_or_default()),
        None => manifest(job, files, caller.scopes.is_some(), |f| format!("{}/files/{}", app.status_url(id), f.name)),
    })
}

async fn cancel_export(State(app): State<AppState>, Authorized(caller): Authorized, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    app.exports.cancel(id, &caller.requester.owner).await?;
    Ok(fhir_json(
        StatusCode::ACCEPTED,
        OperationOutcome::information(format!("export job {id} cancelled; its files are being deleted")).to_json(),
    ))
}

async fn download_file(
    State(app): State<AppState>,
    Authorized(caller): Authorized,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let (_, size, content) = app.exports.open_file(id, &name, &caller.requester).await?;
    let mut response = Body::from_stream(content.map_err(std::io::Error::other)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Health records: never rendered, framed or stored along the way.
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    Ok(response)
}
