//! Request pieces parsed at the edge: JSON bodies, the Accept and Prefer headers.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, HeaderMap, StatusCode},
};
use serde_json::Value;

use super::error::{ApiError, FHIR_JSON};
use crate::{config::KickoffHeaders, fhir::{IssueCode, ResourceError}, model::request::Handling};

/// A JSON request body. Too large a body is a 413, unreadable JSON a 400, both as
/// OperationOutcomes.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let OptionalJsonBody(value) = OptionalJsonBody::from_request(req, state).await?;
        value.map(Self).ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, IssueCode::Required, "the request has no body"))
    }
}

/// A JSON body that may be absent: an empty (or blank) body is None whatever its Content-Type.
/// Medplum's CLI kicks off with `POST` and `Content-Length: 0`, the parameters in the URL.
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
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
        if bytes.trim_ascii().is_empty() {
            return Ok(Self(None));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| ResourceError::InvalidJson(e.to_string()))?;
        Ok(Self(Some(value)))
    }
}

/// Checks a kick-off's Accept. Strict: it must name `application/fhir+json` (beside other types
/// and with q-values, as `application/fhir+json, */*; q=0.1`), as the seed system requires.
/// Lenient: anything that admits JSON (`application/json`, `*/*`) will do, and a missing Accept
/// admits every type (RFC 9110 §12.5.1).
pub fn check_kickoff_accept(headers: &HeaderMap, mode: KickoffHeaders) -> Result<(), ApiError> {
    let values: Vec<&str> = headers.get_all(header::ACCEPT).iter().map(|v| v.to_str().unwrap_or("")).collect();
    if values.is_empty() {
        return match mode {
            KickoffHeaders::Lenient => Ok(()),
            KickoffHeaders::Strict => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Required,
                format!("the Accept header is missing; a kick-off must send Accept: {FHIR_JSON}"),
            )),
        };
    }
    let accept = values.join(", ");
    let admitted: &[&str] = match mode {
        KickoffHeaders::Strict => &[FHIR_JSON],
        KickoffHeaders::Lenient => &[FHIR_JSON, "application/json", "application/*", "*/*"],
    };
    let admits = accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let refused = parts.any(|p| p.replace(' ', "").strip_prefix("q=").is_some_and(|q| q.parse::<f32>() == Ok(0.0)));
        !refused && admitted.contains(&media.as_str())
    });
    if admits {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            IssueCode::NotSupported,
            format!("the Accept header '{accept}' does not name {FHIR_JSON}, the only format of $export responses; send Accept: {FHIR_JSON}"),
        ))
    }
}

/// Reads `Prefer`: `handling=strict|lenient` picks how unsupported parameters are treated;
/// unknown preferences are ignored (RFC 7240). Strict kick-off headers require
/// `respond-async`; lenient ones take its absence as async anyway (Bulk Data allows this).
pub fn kickoff_handling(headers: &HeaderMap, mode: KickoffHeaders) -> Result<Handling, ApiError> {
    let mut handling = Handling::Strict;
    let mut respond_async = false;
    let values: Vec<&str> = headers.get_all("prefer").iter().map(|v| v.to_str().unwrap_or("")).collect();
    for preference in values.iter().flat_map(|v| v.split([',', ';'])).map(str::trim) {
        respond_async |= preference.eq_ignore_ascii_case("respond-async");
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
    if mode == KickoffHeaders::Strict && !respond_async {
        let problem = if values.is_empty() { "the Prefer header is missing".to_owned() } else { format!("the Prefer header '{}' does not ask for respond-async", values.join(", ")) };
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Required,
            format!("{problem}; a kick-off must send Prefer: respond-async (with handling=lenient to have unsupported parameters ignored)"),
        ));
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
    fn strict_accept_must_name_fhir_json() {
        let strict = KickoffHeaders::Strict;
        assert!(check_kickoff_accept(&headers("accept", "application/fhir+json"), strict).is_ok());
        assert!(check_kickoff_accept(&headers("accept", "application/fhir+json, */*; q=0.1"), strict).is_ok());
        assert!(check_kickoff_accept(&headers("accept", "text/html;q=0.9, application/fhir+json;q=0.5"), strict).is_ok());
        for (accept, status) in [("application/json", 406), ("*/*", 406), ("text/html", 406), ("application/fhir+json;q=0", 406), ("application/fhir+json; q=0.0", 406)] {
            assert_eq!(check_kickoff_accept(&headers("accept", accept), strict).unwrap_err().status.as_u16(), status, "{accept}");
        }
        let missing = check_kickoff_accept(&HeaderMap::new(), strict).unwrap_err();
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert!(missing.outcome.to_json().contains("Accept: application/fhir+json"));
    }

    #[test]
    fn lenient_accept_takes_json_and_no_accept() {
        let lenient = KickoffHeaders::Lenient;
        for accept in ["application/fhir+json", "application/json", "*/*", "application/fhir+json, */*; q=0.1"] {
            assert!(check_kickoff_accept(&headers("accept", accept), lenient).is_ok(), "{accept}");
        }
        assert!(check_kickoff_accept(&headers("accept", "text/html"), lenient).is_err());
        assert!(check_kickoff_accept(&headers("accept", "application/fhir+json;q=0"), lenient).is_err());
        assert!(check_kickoff_accept(&HeaderMap::new(), lenient).is_ok());
    }

    #[test]
    fn prefer_sets_handling_and_strict_requires_respond_async() {
        let strict = KickoffHeaders::Strict;
        assert_eq!(kickoff_handling(&headers("prefer", "respond-async, handling=lenient"), strict).unwrap(), Handling::Lenient);
        assert_eq!(kickoff_handling(&headers("prefer", "handling=lenient; respond-async"), strict).unwrap(), Handling::Lenient);
        assert_eq!(kickoff_handling(&headers("prefer", "respond-async"), strict).unwrap(), Handling::Strict);
        assert!(kickoff_handling(&headers("prefer", "respond-async, handling=sloppy"), strict).is_err());
        for missing in [HeaderMap::new(), headers("prefer", "handling=lenient"), headers("prefer", "return=minimal")] {
            let error = kickoff_handling(&missing, strict).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(error.outcome.to_json().contains("Prefer: respond-async"));
        }
        assert_eq!(kickoff_handling(&HeaderMap::new(), KickoffHeaders::Lenient).unwrap(), Handling::Strict);
        assert_eq!(kickoff_handling(&headers("prefer", "handling=lenient"), KickoffHeaders::Lenient).unwrap(), Handling::Lenient);
    }
}
