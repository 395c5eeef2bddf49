//! Request pieces parsed at the edge: JSON bodies, the Accept and Prefer headers.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, HeaderMap, StatusCode},
};
use serde_json::Value;

use super::error::ApiError;
use crate::{export::Handling, fhir::{IssueCode, ResourceError}};

/// A JSON request body. Too large a body is a 413, unreadable JSON a 400, both as
/// OperationOutcomes.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, IssueCode::TooLong, "the request body is larger than the server accepts")
            } else {
                ApiError::new(status, IssueCode::Structure, format!("the request body could not be read: {rejection}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueCode::Required, "the request has no body"));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ResourceError::InvalidJson(e.to_string()))?;
        Ok(Self(value))
    }
}

/// Bulk Data kick-off needs an Accept that admits `application/fhir+json`. Real clients also
/// send `application/json` or `application/fhir+json, */*;q=0.1`, which are fine; a missing
/// Accept admits every type (RFC 9110 §12.5.1), so it is fine too.
pub fn check_kickoff_accept(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(header::ACCEPT) else { return Ok(()) };
    let accept = accept.to_str().unwrap_or("");
    let admits = accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let refused = parts.any(|p| p.replace(' ', "") == "q=0");
        !refused && matches!(media.as_str(), "application/fhir+json" | "application/json" | "application/*" | "*/*")
    });
    if admits {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueCode::NotSupported,
            format!("Accept '{accept}' does not admit application/fhir+json, the only format of $export responses"),
        ))
    }
}

/// Reads `Prefer`. `respond-async` is what $export does anyway, so a missing Prefer is taken
/// as async (Bulk Data allows this); `handling=strict|lenient` picks how unsupported
/// parameters are treated. Unknown preferences are ignored (RFC 7240).
pub fn kickoff_handling(headers: &HeaderMap) -> Result<Handling, ApiError> {
    let mut handling = Handling::Strict;
    for value in headers.get_all("prefer") {
        for preference in value.to_str().unwrap_or("").split([',', ';']).map(str::trim) {
            let Some((name, v)) = preference.split_once('=') else { continue };
            if name.trim().eq_ignore_ascii_case("handling") {
                handling = match v.trim().trim_matches('"') {
                    "strict" => Handling::Strict,
                    "lenient" => Handling::Lenient,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Prefer: handling={other} is not valid; use handling=strict or handling=lenient"
                        )));
                    }
                };
            }
        }
    }
    Ok(handling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn accept_must_admit_fhir_json() {
        assert!(check_kickoff_accept(&headers("accept", "application/fhir+json")).is_ok());
        assert!(check_kickoff_accept(&headers("accept", "application/fhir+json, */*; q=0.1")).is_ok());
        assert!(check_kickoff_accept(&headers("accept", "application/json")).is_ok());
        assert!(check_kickoff_accept(&headers("accept", "text/html")).is_err());
        assert!(check_kickoff_accept(&headers("accept", "application/fhir+json;q=0")).is_err());
        assert!(check_kickoff_accept(&HeaderMap::new()).is_ok());
    }

    #[test]
    fn prefer_sets_handling() {
        assert_eq!(kickoff_handling(&headers("prefer", "respond-async, handling=lenient")).unwrap(), Handling::Lenient);
        assert_eq!(kickoff_handling(&headers("prefer", "respond-async")).unwrap(), Handling::Strict);
        assert!(kickoff_handling(&headers("prefer", "handling=sloppy")).is_err());
    }
}
