//! `$export` kick-off at system, Patient and Group level, by GET or POST.

use axum::{
    extract::{OriginalUri, Path, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::Response,
    routing::get,
    Router,
};

use serde_json::Value;

use super::{
    auth::Authorized,
    error::{fhir_json, ApiError},
    extract::{check_kickoff_accept, kickoff_handling, OptionalJsonBody},
    AppState,
};
use crate::{
    auth::Caller,
    export::params::RawParams,
    fhir::{types::ResourceId, IssueCode, OperationOutcome},
    model::{
        job::JobId,
        request::{ExportLevel, ExportRequest},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/$export", get(system_get).post(system_post))
        .route("/Patient/$export", get(patient_get).post(patient_post))
        .route("/Group/{id}/$export", get(group_get).post(group_post))
}

async fn system_get(State(app): State<AppState>, Authorized(caller): Authorized, headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Result<Response, ApiError> {
    kick_off(app, &caller, ExportLevel::System, &headers, &uri, Method::GET, None).await
}

async fn system_post(State(app): State<AppState>, Authorized(caller): Authorized, headers: HeaderMap, OriginalUri(uri): OriginalUri, OptionalJsonBody(body): OptionalJsonBody) -> Result<Response, ApiError> {
    kick_off(app, &caller, ExportLevel::System, &headers, &uri, Method::POST, body).await
}

async fn patient_get(State(app): State<AppState>, Authorized(caller): Authorized, headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Result<Response, ApiError> {
    kick_off(app, &caller, ExportLevel::Patient, &headers, &uri, Method::GET, None).await
}

async fn patient_post(State(app): State<AppState>, Authorized(caller): Authorized, headers: HeaderMap, OriginalUri(uri): OriginalUri, OptionalJsonBody(body): OptionalJsonBody) -> Result<Response, ApiError> {
    kick_off(app, &caller, ExportLevel::Patient, &headers, &uri, Method::POST, body).await
}

async fn group_get(State(app): State<AppState>, Authorized(caller): Authorized, Path(id): Path<String>, headers: HeaderMap, OriginalUri(uri): OriginalUri) -> Result<Response, ApiError> {
    kick_off(app, &caller, group_level(&id)?, &headers, &uri, Method::GET, None).await
}

async fn group_post(
    State(app): State<AppState>,
    Authorized(caller): Authorized,
    Path(id): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    kick_off(app, &caller, group_level(&id)?, &headers, &uri, Method::POST, body).await
}

fn group_level(id: &str) -> Result<ExportLevel, ApiError> {
    let id = ResourceId::parse(id).ok_or_else(|| ApiError::bad_request(format!("'{id}' is not a valid Group id")))?;
    Ok(ExportLevel::Group { id })
}

/// A POST without a body (or with an empty one) is a Parameters resource without parameters:
/// its parameters are the URL's, as for a GET.
#[tracing::instrument(skip_all, fields(%method))]
async fn kick_off(app: AppState, caller: &Caller, level: ExportLevel, headers: &HeaderMap, uri: &Uri, method: Method, body: Option<Value>) -> Result<Response, ApiError> {
    check_kickoff_accept(headers, app.kickoff_headers)?;
    let handling = kickoff_handling(headers, app.kickoff_headers)?;
    let mut params = RawParams::from_query(uri.query().unwrap_or(""))?;
    if let Some(body) = body {
        params = RawParams::merge(params, RawParams::from_parameters(&body)?)?;
    }
    // The manifest's `request`: the kick-off URL as the client sent it, on the public base.
    let path_and_query = uri.path_and_query().map_or("", |p| p.as_str());
    let request_url = format!("{}{}", app.base_url, path_and_query.strip_prefix("/fhir").unwrap_or(path_and_query));
    let request = ExportRequest::parse(level, request_url, &params, handling)?;
    let job = app.exports.kick_off(request, &caller.requester).await?;
    match accepted(&app, job) {
        Ok(response) => Ok(response),
        Err(e) => {
            // The client will never learn this job's status URL: do not leave it queued.
            app.exports.discard(job).await;
            Err(e)
        }
    }
}

/// The 202 of a recorded job, pointing at its status URL.
fn accepted(app: &AppState, job: JobId) -> Result<Response, ApiError> {
    let status_url = app.status_url(job);
    let location = HeaderValue::from_str(&status_url).map_err(|_| {
        tracing::error!(%status_url, "the status URL is not a valid header value; check base_url");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception, "the server's base URL cannot be sent in a header")
    })?;
    let mut response = fhir_json(
        StatusCode::ACCEPTED,
        OperationOutcome::information(format!("export job {job} accepted; poll {status_url}")).to_json(),
    );
    response.headers_mut().insert(header::CONTENT_LOCATION, location);
    Ok(response)
}
