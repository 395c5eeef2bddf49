//! SMART Backend Services on the HTTP surface: the token endpoint, the discovery document, and
//! the extractor that turns a bearer token into the caller of a protected endpoint.

use axum::{
    body::Bytes,
    extract::{FromRequestParts, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;

use super::{error::ApiError, AppState};
use crate::{
    auth::{AuthError, Caller, TokenError, TokenRequest, TOKEN_PATH},
    fhir::IssueCode,
};

const REALM: &str = "Bearer realm=\"bulkfhir\"";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(TOKEN_PATH, post(issue_token))
        .route("/.well-known/smart-configuration", get(smart_configuration))
}

pub fn root_router() -> Router<AppState> {
    Router::new().route("/.well-known/smart-configuration", get(smart_configuration))
}

/// The caller of a protected endpoint: anyone while the server runs open, otherwise the client
/// of a valid bearer token (401 with `WWW-Authenticate` without one).
pub struct Authorized(pub Caller);

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match app.auth.caller(authorization).await {
            Ok(caller) => Ok(Self(caller)),
            Err(AuthError::MissingToken) => {
                super::metrics::auth_failed("missing_token");
                Err(unauthorized(AuthError::MissingToken.to_string(), REALM.to_owned()))
            }
            Err(AuthError::InvalidToken(reason)) => {
                let reason = reason.to_string();
                super::metrics::auth_failed("invalid_token");
                let challenge = format!("{REALM}, error=\"invalid_token\", error_description=\"{reason}\"");
                Err(unauthorized(reason, challenge))
            }
            Err(AuthError::Store(e)) => Err(e.into()),
        }
    }
}

fn unauthorized(diagnostics: String, challenge: String) -> ApiError {
    let challenge = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static(REALM));
    ApiError::new(StatusCode::UNAUTHORIZED, IssueCode::Security, diagnostics).with_header(header::WWW_AUTHENTICATE, challenge)
}

/// 403 unless the caller's scopes grant this permission letter on the type.
pub fn require(caller: &Caller, resource_type: &str, letter: char) -> Result<(), ApiError> {
    if caller.may(resource_type, letter) {
        Ok(())
    } else {
        super::metrics::auth_failed("scope");
        let what = match letter {
            'c' => "create",
            'r' => "read",
            'u' => "update",
            'd' => "delete",
            _ => "search",
        };
        Err(ApiError::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, format!("the access token's scopes do not allow to {what} {resource_type}")))
    }
}

/// `POST [base]/auth/token`: a form with `grant_type=client_credentials` and a client assertion.
/// Errors are RFC 6749 JSON, not OperationOutcomes: OAuth clients read `error`.
async fn issue_token(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")))
        .ok_or_else(|| TokenError::InvalidRequest("the token request must be application/x-www-form-urlencoded".into()))
        .and_then(|_| token_request(&body));
    let result = match form {
        Ok(request) => app.auth.issue_token(request).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(token) => Json(json!({
            "access_token": token.access_token,
            "token_type": "bearer",
            "expires_in": token.expires_in,
            "scope": token.scope,
        }))
        .into_response(),
        Err(e) => token_error(e),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn token_request(body: &[u8]) -> Result<TokenRequest, TokenError> {
    let mut request = TokenRequest::default();
    for (name, value) in url::form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "grant_type" => &mut request.grant_type,
            "scope" => &mut request.scope,
            "client_assertion_type" => &mut request.client_assertion_type,
            "client_assertion" => &mut request.client_assertion,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(TokenError::InvalidRequest(format!("'{name}' is given more than once")));
        }
    }
    Ok(request)
}

fn token_error(error: TokenError) -> Response {
    let status = match &error {
        TokenError::InvalidClient(_) | TokenError::Assertion(_) | TokenError::Jwks(_) => StatusCode::UNAUTHORIZED,
        TokenError::Store(e) if e.is_transient() => {
            tracing::warn!(error = %e, "the token endpoint could not reach the database");
            StatusCode::SERVICE_UNAVAILABLE
        }
        TokenError::Store(e) => {
            tracing::error!(error = %e, "the token endpoint could not reach the database");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let description = match &error {
        TokenError::Store(_) => "the server could not process the request; its log has the details".to_owned(),
        other => other.to_string(),
    };
    tracing::info!(error = error.code(), %description, "token request refused");
    super::metrics::auth_failed(error.code());
    let mut response = (status, Json(json!({"error": error.code(), "error_description": description}))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5));
    }
    response
}

/// `.well-known/smart-configuration`, under the FHIR base and at the host root.
async fn smart_configuration(State(app): State<AppState>) -> Response {
    let config = Json(json!({
        "token_endpoint": app.auth.token_url(),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.read", "system/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    }));
    // Uncacheable, like the CapabilityStatement (see `metadata::capability_statement`).
    ([(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], config).into_response()
}
