//! `GET [base]/metadata`: the CapabilityStatement, declaring Bulk Data export.

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::Response,
    routing::get,
    Router,
};
use serde_json::{json, Value};

use super::{
    error::{fhir_json, ApiError},
    AppState,
};
use crate::fhir::ResourceType;

const BULK: &str = "http://hl7.org/fhir/uv/bulkdata";

pub fn router() -> Router<AppState> {
    Router::new().route("/metadata", get(capability_statement))
}

async fn capability_statement(State(app): State<AppState>) -> Result<Response, ApiError> {
    let token_url = app.auth.enforced().await?.then(|| app.auth.token_url());
    let mut response = fhir_json(StatusCode::OK, capabilities(&app.base_url, token_url).to_string());
    // Uncacheable, so that clients with a response cache never wait on it: SMART's
    // bulk-data-client (got 11) on Node 20+ never settles a cacheable 200 read in one chunk.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `rest.security`: SMART Backend Services with the token endpoint, or a plain statement that
/// the server runs open.
fn security(token_url: Option<&str>) -> Value {
    match token_url {
        Some(token_url) => json!({
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token_url}],
            }],
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
            "description": "SMART Backend Services: client_credentials with a private_key_jwt assertion (RS384 or ES384); system scopes.",
        }),
        None => json!({
            "description": "Authorization is OFF: this server runs open (no client is registered and auth.allow_open is true). Anyone who can reach it can export all of its data.",
        }),
    }
}

fn capabilities(base_url: &str, token_url: Option<&str>) -> Value {
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
                              includeAssociatedData (LatestProvenanceResources, RelevantProvenanceResources), _container, \
                              _typeFilter (R4 search; composite and phonetic parameters refused). \
                              Patient and Group exports cover the Patient compartment; Group exports also export, once each, \
                              the Endpoint, HealthcareService, Location, Medication, Organization, Practitioner, PractitionerRole \
                              and Substance resources that their exported resources reference, when _type allows them. \
                              organizeOutputBy=Patient (Patient and Group level): blocks of a Parameters header naming the patient \
                              and that patient's resources, a block split across files only when alone larger than a file; \
                              a Group export's referenced resources follow in files without a header. Authorization: see security.",
            "security": security(token_url),
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
            "operation": [export("export", "export")],
            "resource": resources,
        }],
    })
}
