//! `GET [base]/metadata`: the CapabilityStatement, declaring Bulk Data export.

use axum::{extract::State, http::StatusCode, response::Response, routing::get, Router};
use serde_json::{json, Value};

use super::{error::fhir_json, AppState};
use crate::fhir::ResourceType;

const BULK: &str = "http://hl7.org/fhir/uv/bulkdata";

pub fn router() -> Router<AppState> {
    Router::new().route("/metadata", get(capability_statement))
}

async fn capability_statement(State(app): State<AppState>) -> Response {
    fhir_json(StatusCode::OK, capabilities(&app.base_url).to_string())
}

fn capabilities(base_url: &str) -> Value {
    let export = |name: &str, definition: &str| json!({"name": name, "definition": format!("{BULK}/OperationDefinition/{definition}")});
    let resources: Vec<Value> = ResourceType::all()
        .into_iter()
        .map(|t| {
            let mut resource = json!({
                "type": t.as_str(),
                "interaction": [{"code": "read"}, {"code": "create"}, {"code": "update"}, {"code": "delete"}],
                "versioning": "versioned",
            });
            // v2.0.0 named these patient-export / group-export, later versions export: list both.
            match t.as_str() {
                "Patient" => resource["operation"] = json!([export("export", "patient-export"), export("patient-export", "patient-export")]),
                "Group" => resource["operation"] = json!([export("export", "group-export"), export("group-export", "group-export")]),
                _ => {}
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "instantiates": [format!("{BULK}/CapabilityStatement/bulk-data")],
        "software": {"name": "bulkfhir", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "bulkfhir FHIR Bulk Data export server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Bulk Data $export at system, Patient and Group level. Parameters: _outputFormat, _type, _since (with deleted files), \
                              _until, patient (Patient and Group level), _elements, allowPartialManifests, \
                              includeAssociatedData (LatestProvenanceResources, RelevantProvenanceResources), _container. \
                              Patient and Group exports cover the Patient compartment; Group exports also export, once each, \
                              the Endpoint, HealthcareService, Location, Medication, Organization, Practitioner, PractitionerRole \
                              and Substance resources that their exported resources reference, when _type allows them. Not supported yet: _typeFilter, \
                              organizeOutputBy. Authorization is not enabled.",
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
            "operation": [export("export", "export")],
            "resource": resources,
        }],
    })
}
