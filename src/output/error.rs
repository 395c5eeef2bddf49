//! Output errors in plain words. Their text reaches OperationOutcomes and logs, so it names the
//! destination and what the storage said (kind, HTTP status, the service's error code) and never
//! a URL, a key, a SAS token or a raw XML body.

use object_store::client::{HttpError, HttpErrorKind};

use super::settings::OutputSettingsError;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{destination}: {what} was not found")]
    NotFound { destination: String, what: String },
    #[error("{destination}: {action} failed: {reason}")]
    Storage { destination: String, action: String, reason: String },
    #[error("cannot use output directory '{path}': {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("output configuration: {0}")]
    Config(String),
    #[error("output configuration: {0}")]
    Settings(#[from] OutputSettingsError),
}

impl OutputError {
    /// Wraps an object_store error from `action` (e.g. "writing Patient-1.ndjson").
    pub fn store(destination: &str, action: impl Into<String>, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => {
                Self::NotFound { destination: destination.to_owned(), what: action.into() }
            }
            error => Self::Storage { destination: destination.to_owned(), action: action.into(), reason: plain_reason(&error) },
        }
    }
}

/// What went wrong, from the error's source chain: the HTTP status and the service's error
/// code, or the transport failure, plus how many retries were spent. object_store keeps its
/// retry error private, so the status is read from its message (never copied whole: it holds
/// the request URL and the response body).
pub fn plain_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut retries = String::new();
    while let Some(e) = current {
        let text = e.to_string();
        if let Some(n) = retries_of(&text) {
            retries = format!(" (after {n} retries)");
        }
        if let Some(status) = status_of(&text) {
            let code = service_error_code(&text).map(|c| format!(" {c}")).unwrap_or_default();
            return format!("the storage service answered {status}{code}{retries}");
        }
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return format!("{}{retries}", transport(http.kind()));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
        current = e.source();
    }
    sanitize(&error.to_string())
}

/// `403 Forbidden` from "... status code: 403 Forbidden: body".
fn status_of(text: &str) -> Option<String> {
    let start = text.find("status code: ")? + "status code: ".len();
    let rest = &text[start..];
    let status = &rest[..rest.find(':').unwrap_or(rest.len())];
    (status.len() >= 3 && status[..3].bytes().all(|b| b.is_ascii_digit())).then(|| status.trim().to_owned())
}

fn transport(kind: HttpErrorKind) -> &'static str {
    match kind {
        HttpErrorKind::Connect => "the storage service could not be reached (connection failed)",
        HttpErrorKind::Timeout => "the storage service did not answer in time",
        HttpErrorKind::Request => "the request could not be sent",
        HttpErrorKind::Interrupted => "the connection was interrupted",
        HttpErrorKind::Decode => "the answer could not be read",
        _ => "the request failed",
    }
}

/// `after N retries` from object_store's message (the count is not exposed otherwise).
fn retries_of(text: &str) -> Option<usize> {
    let start = text.find("after ")? + 6;
    let rest = &text[start..];
    let end = rest.find(' ')?;
    rest[..end].parse().ok().filter(|n| *n > 0)
}

/// The `<Code>` of an Azure or S3 XML error body, which is a plain identifier.
fn service_error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + 6;
    let end = start + body[start..].find("</Code>")?;
    let code = &body[start..end];
    code.chars().all(|c| c.is_ascii_alphanumeric()).then(|| format!("({code})"))
}

/// Other errors (configuration, credentials): their text, cut before any URL query or XML.
fn sanitize(text: &str) -> String {
    let cut = text.find(['<', '?']).unwrap_or(text.len());
    text[..cut].trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_error_codes_are_read_from_xml_bodies() {
        let body = "<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code><Message>The specified container does not exist.</Message></Error>";
        assert_eq!(service_error_code(body).as_deref(), Some("(ContainerNotFound)"));
        assert_eq!(service_error_code("<Code>a<b</Code>"), None);
    }

    #[test]
    fn other_errors_lose_queries_and_xml() {
        assert_eq!(sanitize("bad url http://x/c?sv=1&sig=SECRET"), "bad url http://x/c");
        assert_eq!(sanitize("failed: <Error>raw</Error>"), "failed:");
    }

    #[test]
    fn statuses_are_read_from_the_message() {
        let text = "Error performing PUT http://h/c/b?sig=X in 1s - Server returned non-2xx status code: 403 Forbidden: <?xml?><Error><Code>AuthenticationFailed</Code></Error>";
        assert_eq!(status_of(text).as_deref(), Some("403 Forbidden"));
        assert_eq!(service_error_code(text).as_deref(), Some("(AuthenticationFailed)"));
    }

    #[test]
    fn retry_counts_are_read_from_the_message() {
        assert_eq!(retries_of("Error performing PUT in 3s, after 4 retries, max_retries: 5"), Some(4));
        assert_eq!(retries_of("Error performing PUT in 3s - boom"), None);
    }
}
