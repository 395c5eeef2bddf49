//! The HTTP error: every failure leaves as an OperationOutcome with a status that fits it.
//! Internal causes are logged, never sent.

use axum::{
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{
    export::{params::ParamsError, ExportError},
    fhir::{bundle::{BundleError, EntryError}, IssueCode, OperationOutcome, ResourceError},
    output::OutputError,
    store::StoreError,
    telemetry::error_chain,
};

pub const FHIR_JSON: &str = "application/fhir+json";

/// Seconds a client should wait after a 429 for too many exports.
const TOO_MANY_RETRY_AFTER_SECONDS: u32 = 30;

/// Seconds a client should wait after a 503 while the database is out of reach.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u32 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub outcome: OperationOutcome,
    /// Headers the status calls for (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self { status, outcome: OperationOutcome::error(code, diagnostics), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueCode::Invalid, diagnostics)
    }

    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueCode::NotFound, diagnostics)
    }

    /// A failure of ours: logged in full, reported without internals.
    fn internal(error: &dyn std::error::Error, what: &str) -> Self {
        tracing::error!(error = %error_chain(error), "{what}");
        let (status, code) = (StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception);
        Self::new(status, code, format!("{what}; the server log has the details"))
    }

    /// The database is out of reach for the moment: a 503 the client retries, never a 500 a
    /// polling client would read as a failed export.
    fn unavailable(error: &dyn std::error::Error) -> Self {
        tracing::warn!(error = %error_chain(error), "the database is unreachable");
        let diagnostics = "the database is unreachable for the moment; retry after the Retry-After delay";
        Self::new(StatusCode::SERVICE_UNAVAILABLE, IssueCode::Transient, diagnostics)
            .with_header(header::RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECONDS))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = fhir_json(self.status, self.outcome.to_json());
        response.headers_mut().extend(self.headers);
        response
    }
}

/// A FHIR JSON response.
pub fn fhir_json(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        let text = e.to_string();
        match e {
            ExportError::InvalidParameter { .. } | ExportError::UnknownParameter(_) => Self::bad_request(text),
            ExportError::UnsupportedParameter(_) | ExportError::UnsupportedSearch(_) => Self::new(StatusCode::BAD_REQUEST, IssueCode::NotSupported, text),
            ExportError::GroupNotFound(_) | ExportError::JobNotFound(_) | ExportError::FileNotFound { .. } => {
                Self::not_found(text)
            }
            ExportError::InvalidGroup { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, IssueCode::Processing, text),
            ExportError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, text),
            ExportError::TooManyExports { .. } => {
                super::metrics::throttled("exports");
                Self::new(StatusCode::TOO_MANY_REQUESTS, IssueCode::Throttled, text)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(TOO_MANY_RETRY_AFTER_SECONDS))
            }
            ExportError::Store(e) => e.into(),
            ExportError::Output(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_) => Self::new(StatusCode::CONFLICT, IssueCode::Conflict, e.to_string()),
            _ if e.is_transient() => Self::unavailable(&e),
            StoreError::Database(_) | StoreError::Reader(_) | StoreError::Migration(_) | StoreError::UnsupportedUrl(_) => {
                Self::internal(&e, "the database failed")
            }
        }
    }
}

impl From<OutputError> for ApiError {
    fn from(e: OutputError) -> Self {
        match e {
            OutputError::NotFound { .. } => Self::not_found("the file no longer exists"),
            e => Self::internal(&e, "the output storage failed"),
        }
    }
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> Self {
        let code = match &e {
            ResourceError::InvalidJson(_) | ResourceError::NotAnObject => IssueCode::Structure,
            ResourceError::MissingResourceType | ResourceError::MissingId => IssueCode::Required,
            ResourceError::Invalid(invalid) if invalid.structure => IssueCode::Structure,
            _ => IssueCode::Value,
        };
        let mut error = Self::new(StatusCode::BAD_REQUEST, code, e.to_string());
        if let ResourceError::Invalid(invalid) = e {
            error.outcome.issue[0].expression.push(invalid.path);
        }
        error
    }
}

/// A Bundle entry that cannot run: the client's fault, in its words.
impl From<EntryError> for ApiError {
    fn from(e: EntryError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Resource(e) => e.into(),
            e => Self::bad_request(e.to_string()),
        }
    }
}

impl From<ParamsError> for ApiError {
    fn from(e: ParamsError) -> Self {
        Self::bad_request(e.to_string())
    }
}
