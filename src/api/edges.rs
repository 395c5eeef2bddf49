//! The HTTP edge's own refusals, all as OperationOutcomes: a URL too long (414), a declared body
//! too large (413 at once, not after reading it), and the bare error responses the framework
//! makes (405 from the router, 406 from compression, 400 from path extraction). Also a bound on
//! how many large bodies are read at once: each is parsed whole into memory.

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use super::error::{ApiError, FHIR_JSON};
use crate::fhir::IssueCode;

/// Longest URL taken (path and query). hyper refuses longer than 64 KiB itself, with a bare 414
/// before any of our code runs; below that limit the refusal is ours.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Bodies above this size take a slot of [`BodyLimits::large`] while their request runs.
pub const LARGE_BODY_BYTES: u64 = 1024 * 1024;
/// How much of a bare error body is kept as the diagnostics.
const KEPT_ERROR_TEXT: usize = 512;

#[derive(Debug, Clone)]
pub struct BodyLimits {
    pub max_body_bytes: usize,
    /// Slots for requests with large (or undeclared) bodies.
    pub large: Arc<Semaphore>,
}

/// Refuses long URLs and over-large declared bodies before any work, and queues requests with
/// large bodies for a slot.
pub async fn guard(limits: BodyLimits, request: Request, next: Next) -> Response {
    let uri_length = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_length > MAX_URI_BYTES {
        return ApiError::new(StatusCode::URI_TOO_LONG, IssueCode::TooLong, format!("the URL is longer than the {MAX_URI_BYTES} bytes this server accepts"))
            .into_response();
    }
    let declared = declared_length(request.headers());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return too_large(limits.max_body_bytes);
    }
    // A chunked body has no declared length: it may be large.
    let large = declared.map_or(request.headers().contains_key(header::TRANSFER_ENCODING), |n| n > LARGE_BODY_BYTES);
    if !large {
        return next.run(request).await;
    }
    let Ok(_slot) = limits.large.acquire().await else {
        return next.run(request).await; // never closed
    };
    next.run(request).await
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn too_large(limit: usize) -> Response {
    let mut response =
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, IssueCode::TooLong, format!("the request body is larger than the {limit} bytes this server accepts"))
            .into_response();
    // The body is not read: the connection cannot be reused.
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Turns an error response that is not already FHIR (or OAuth) JSON into an OperationOutcome,
/// keeping its status and its `Allow`, `Retry-After` and `WWW-Authenticate` headers.
pub async fn outcomes_only(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let diagnostics = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            format!("{method} is not allowed on this URL; allowed: {allow}")
        }
        StatusCode::NOT_ACCEPTABLE => {
            "none of the codings Accept-Encoding admits can be served: files come gzip-compressed or as they are (identity)".to_owned()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the server accepts".to_owned(),
        // Text from the framework's own rejections (path and query extraction): plain words.
        _ if is_text(&parts.headers) => match axum::body::to_bytes(body, KEPT_ERROR_TEXT * 4).await {
            Ok(text) if !text.is_empty() => String::from_utf8_lossy(&text).chars().take(KEPT_ERROR_TEXT).collect(),
            _ => status.canonical_reason().unwrap_or("the request failed").to_owned(),
        },
        _ => status.canonical_reason().unwrap_or("the request failed").to_owned(),
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_ACCEPTABLE => IssueCode::NotSupported,
        StatusCode::NOT_FOUND => IssueCode::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::URI_TOO_LONG => IssueCode::TooLong,
        s if s.is_server_error() => IssueCode::Exception,
        _ => IssueCode::Invalid,
    };
    let mut error = ApiError::new(status, code, diagnostics);
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::CONNECTION] {
        if let Some(value) = parts.headers.get(&name) {
            error = error.with_header(name, value.clone());
        }
    }
    error.into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = media.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(FHIR_JSON) || media.eq_ignore_ascii_case("application/json")
}

fn is_text(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/plain"))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get, Router};
    use tower::ServiceExt;

    use super::*;

    async fn outcome_of(app: Router, request: Request) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app.oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_wrong_method_gets_a_405_outcome_with_allow() {
        let app = Router::new().route("/x", get(|| async { "ok" })).layer(axum::middleware::from_fn(outcomes_only));
        let (status, headers, body) = outcome_of(app, Request::delete("/x").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::CONTENT_TYPE], FHIR_JSON);
        assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
        assert!(body["issue"][0]["diagnostics"].as_str().unwrap().starts_with("DELETE is not allowed"), "{body}");
    }

    #[tokio::test]
    async fn large_bodies_wait_for_a_slot_and_small_ones_do_not() {
        let limits = BodyLimits { max_body_bytes: 16 << 20, large: Arc::new(Semaphore::new(1)) };
        let guarded = limits.clone();
        let app = Router::new()
            .route("/x", axum::routing::put(|| async { "ok" }))
            .layer(axum::middleware::from_fn(move |request: Request, next: Next| guard(guarded.clone(), request, next)));
        let put = |length: u64| Request::put("/x").header(header::CONTENT_LENGTH, length).body(Body::empty()).unwrap();
        let held = limits.large.clone().acquire_owned().await.unwrap();
        let wait = std::time::Duration::from_millis(200);
        assert!(tokio::time::timeout(wait, app.clone().oneshot(put(10))).await.is_ok(), "a small body goes on");
        assert!(tokio::time::timeout(wait, app.clone().oneshot(put(2 << 20))).await.is_err(), "a large one waits");
        drop(held);
        assert!(tokio::time::timeout(wait, app.oneshot(put(2 << 20))).await.is_ok(), "and goes on once a slot is free");
    }
}
