//! Liveness and readiness for orchestrators, at the host root: outside the FHIR base and
//! outside authorization (a probe has no token).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::Response, routing::get, Router};

use super::{error::fhir_json, AppState};
use crate::fhir::{
    outcome::{Issue, Severity},
    IssueCode, OperationOutcome,
};

/// How long the database and the output destination each get to answer a readiness probe.
const PROBE_BOUND: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/livez", get(live)).route("/readyz", get(ready))
}

/// The process answers requests.
async fn live() -> Response {
    fhir_json(StatusCode::OK, OperationOutcome::information("alive").to_json())
}

/// The database answers within the bound with every migration applied, and the output
/// destination takes a write. Otherwise a 503 whose issues say which failed.
async fn ready(State(app): State<AppState>) -> Response {
    let mut problems = Vec::new();
    match tokio::time::timeout(PROBE_BOUND, app.stores.jobs.schema_current()).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => problems.push("the database schema is older than this server: migrations are not all applied".to_owned()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database failed");
            problems.push("the database does not answer".to_owned());
        }
        Err(_) => problems.push(format!("the database did not answer within {} s", PROBE_BOUND.as_secs())),
    }
    match tokio::time::timeout(PROBE_BOUND, app.output.probe_writable()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the output destination refused a write");
            problems.push("the output destination is not writable".to_owned());
        }
        Err(_) => problems.push(format!("the output destination did not take a write within {} s", PROBE_BOUND.as_secs())),
    }
    if problems.is_empty() {
        return fhir_json(StatusCode::OK, OperationOutcome::information("ready").to_json());
    }
    let mut outcome = OperationOutcome::error(IssueCode::Transient, problems.remove(0));
    outcome.issue.extend(problems.into_iter().map(|diagnostics| Issue {
        severity: Severity::Error,
        code: IssueCode::Transient,
        diagnostics,
        expression: vec![],
    }));
    fhir_json(StatusCode::SERVICE_UNAVAILABLE, outcome.to_json())
}
