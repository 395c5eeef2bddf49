//! OperationOutcome: the one shape every error and warning takes on the wire.

use serde::Serialize;

/// The subset of the R4 `issue-type` value set this server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    NotSupported,
    NotFound,
    Deleted,
    TooLong,
    Conflict,
    Exception,
    Transient,
    Timeout,
    Throttled,
    Security,
    Forbidden,
    Informational,
    Processing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub diagnostics: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    resource_type: &'static str,
    pub issue: Vec<Issue>,
}

impl OperationOutcome {
    pub fn new(severity: Severity, code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self {
            resource_type: "OperationOutcome",
            issue: vec![Issue { severity, code, diagnostics: diagnostics.into(), expression: vec![] }],
        }
    }

    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, diagnostics)
    }

    pub fn warning(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, diagnostics)
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Information, IssueCode::Informational, diagnostics)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("OperationOutcome serializes")
    }
}
