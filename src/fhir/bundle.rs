//! Batch and transaction Bundles: turning entries into writes, resolving `urn:uuid:` fullUrls.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{types::ResourceId, Resource, ResourceError, ResourceType, Validation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Batch,
    Transaction,
}

impl BundleKind {
    pub fn response_type(self) -> &'static str {
        match self {
            Self::Batch => "batch-response",
            Self::Transaction => "transaction-response",
        }
    }
}

/// What one entry asks for.
#[derive(Debug, Clone)]
pub enum EntryOp {
    /// PUT `Type/id` (create or update) or POST `Type` (with its server-assigned id).
    Save { resource: Resource, created_by_post: bool },
    Delete { resource_type: ResourceType, id: ResourceId },
}

/// A Bundle that could be read, with each entry's operation or the reason it cannot run.
#[derive(Debug)]
pub struct BundleRequest {
    pub kind: BundleKind,
    pub entries: Vec<Result<EntryOp, EntryError>>,
}

/// Why one entry of a Bundle cannot run, with its index.
#[derive(Debug, thiserror::Error)]
#[error("entry {index}: {problem}")]
pub struct EntryError {
    pub index: usize,
    pub problem: EntryProblem,
}

/// What is wrong with an entry, in the words that follow "entry N: ".
#[derive(Debug, thiserror::Error)]
pub enum EntryProblem {
    #[error("has no 'request'")]
    NoRequest,
    #[error("has no request.method")]
    NoMethod,
    #[error("has no request.url")]
    NoUrl,
    #[error("'{0}' in request.url is not a known R4 resource type")]
    UnknownType(String),
    #[error("request.url '{0}' is not of the form Type or Type/id")]
    NotTypeOrTypeId(String),
    #[error("{method} needs request.url Type/id, found '{url}'")]
    NeedsId { method: String, url: String },
    #[error("POST needs request.url Type, found '{0}'")]
    PostWithId(String),
    #[error("request.method '{0}' is not supported in a Bundle here (PUT, POST, DELETE)")]
    UnsupportedMethod(String),
    #[error("the reference '{0}' matches no entry's fullUrl in the transaction")]
    Unresolved(String),
    #[error("is not an object")]
    NotAnObject,
    #[error("has no 'resource'")]
    NoResource,
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("expected a Bundle, found '{0}'")]
    NotABundle(String),
    #[error("Bundle.type must be 'batch' or 'transaction', found '{0}'")]
    UnsupportedType(String),
}

/// Reads a batch or transaction Bundle, checking each entry's resource as `validation` says.
/// In a transaction, `urn:uuid:` fullUrls of POSTed or PUT resources are replaced by their
/// assigned `Type/id` in every reference of the Bundle, and a `urn:uuid:` reference to no entry
/// fails its entry (FHIR R4 http.html#trules: such references must resolve within the Bundle).
pub fn read(value: Value, validation: Validation) -> Result<BundleRequest, BundleError> {
    let Value::Object(bundle) = value else { return Err(ResourceError::NotAnObject.into()) };
    match bundle.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {}
        Some(other) => return Err(BundleError::NotABundle(other.to_owned())),
        None => return Err(ResourceError::MissingResourceType.into()),
    }
    let kind = match bundle.get("type").and_then(Value::as_str) {
        Some("batch") => BundleKind::Batch,
        Some("transaction") => BundleKind::Transaction,
        other => return Err(BundleError::UnsupportedType(other.unwrap_or("").to_owned())),
    };
    let raw: Vec<Value> = match bundle.get("entry") {
        Some(Value::Array(entries)) => entries.clone(),
        _ => vec![],
    };

    // First pass: decide every entry's target, so references can be resolved before validation.
    let targets: Vec<Result<Target, EntryProblem>> = raw.iter().map(target_of).collect();
    let mut entries_json: Vec<Value> = raw;
    let mut unresolved: Vec<Option<String>> = vec![None; entries_json.len()];
    if kind == BundleKind::Transaction {
        let mut aliases = HashMap::new();
        for (entry, target) in entries_json.iter().zip(&targets) {
            let (Some(full_url), Ok(target)) = (entry.get("fullUrl").and_then(Value::as_str), target) else {
                continue;
            };
            if full_url.starts_with("urn:uuid:") || full_url.starts_with("urn:oid:") {
                aliases.insert(full_url.to_owned(), format!("{}/{}", target.resource_type, target.id));
            }
        }
        for (entry, unresolved) in entries_json.iter_mut().zip(&mut unresolved) {
            rewrite_references(entry, &aliases, unresolved);
        }
    }

    let entries = entries_json
        .into_iter()
        .zip(targets)
        .zip(unresolved)
        .enumerate()
        .map(|(i, ((entry, target), unresolved))| {
            let failed = |problem| EntryError { index: i, problem };
            let target = target.map_err(failed)?;
            if let Some(reference) = unresolved {
                return Err(failed(EntryProblem::Unresolved(reference)));
            }
            to_op(entry, target, validation).map_err(failed)
        })
        .collect();
    Ok(BundleRequest { kind, entries })
}

#[derive(Debug)]
struct Target {
    method: Method,
    resource_type: ResourceType,
    id: ResourceId,
}

#[derive(Debug, PartialEq)]
enum Method {
    Put,
    Post,
    Delete,
}

/// A `deleted` file line (Bulk Data): a transaction Bundle whose one entry deletes `Type/id`.
pub fn deletion(resource_type: &str, id: &str) -> String {
    serde_json::json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": format!("{resource_type}/{id}")}}],
    })
    .to_string()
}

fn target_of(entry: &Value) -> Result<Target, EntryProblem> {
    let request = entry.get("request").ok_or(EntryProblem::NoRequest)?;
    let method = request.get("method").and_then(Value::as_str).ok_or(EntryProblem::NoMethod)?;
    let url = request.get("url").and_then(Value::as_str).ok_or(EntryProblem::NoUrl)?;
    let path = url.split('?').next().unwrap_or("").trim_matches('/');
    let mut parts = path.split('/');
    let type_name = parts.next().unwrap_or("");
    let resource_type =
        ResourceType::parse(type_name).ok_or_else(|| EntryProblem::UnknownType(type_name.to_owned()))?;
    let url_id = parts.next();
    if parts.next().is_some() {
        return Err(EntryProblem::NotTypeOrTypeId(url.to_owned()));
    }
    let parse_id = |id: &str| ResourceId::parse(id).ok_or_else(|| ResourceError::InvalidId(id.to_owned()));
    match (method, url_id) {
        ("PUT", Some(id)) => Ok(Target { method: Method::Put, resource_type, id: parse_id(id)? }),
        ("DELETE", Some(id)) => Ok(Target { method: Method::Delete, resource_type, id: parse_id(id)? }),
        ("POST", None) => Ok(Target { method: Method::Post, resource_type, id: ResourceId::generate() }),
        ("PUT" | "DELETE", None) => Err(EntryProblem::NeedsId { method: method.to_owned(), url: url.to_owned() }),
        ("POST", Some(_)) => Err(EntryProblem::PostWithId(url.to_owned())),
        (other, _) => Err(EntryProblem::UnsupportedMethod(other.to_owned())),
    }
}

fn to_op(entry: Value, target: Target, validation: Validation) -> Result<EntryOp, EntryProblem> {
    let Target { method, resource_type, id } = target;
    if method == Method::Delete {
        return Ok(EntryOp::Delete { resource_type, id });
    }
    let Value::Object(mut entry) = entry else { return Err(EntryProblem::NotAnObject) };
    let body = entry.remove("resource").ok_or(EntryProblem::NoResource)?;
    let resource = match method {
        Method::Put => Resource::for_update(body, &resource_type, &id, validation),
        _ => Resource::for_create(body, Some(&resource_type), id, validation),
    }?;
    Ok(EntryOp::Save { resource, created_by_post: method == Method::Post })
}

/// Replaces references to entries' fullUrls; the first `urn:` reference that names no entry
/// goes to `unresolved`.
fn rewrite_references(value: &mut Value, aliases: &HashMap<String, String>, unresolved: &mut Option<String>) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, aliases, unresolved)),
        Value::Object(map) => rewrite_in_object(map, aliases, unresolved),
        _ => {}
    }
}

fn rewrite_in_object(map: &mut Map<String, Value>, aliases: &HashMap<String, String>, unresolved: &mut Option<String>) {
    for (key, child) in map.iter_mut() {
        if key == "reference"
            && let Some(reference) = child.as_str()
        {
            if let Some(resolved) = aliases.get(reference) {
                *child = Value::String(resolved.clone());
            } else if (reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:")) && unresolved.is_none() {
                *unresolved = Some(reference.to_owned());
            }
            continue;
        }
        if key != "fullUrl" {
            rewrite_references(child, aliases, unresolved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn transaction_resolves_urn_uuid_references_to_assigned_ids() {
        let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
            {"fullUrl":"urn:uuid:aaa","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
            {"fullUrl":"urn:uuid:bbb","resource":{"resourceType":"Observation","subject":{"reference":"urn:uuid:aaa"}},
             "request":{"method":"POST","url":"Observation"}}
        ]});
        let read = read(bundle, Validation::Strict).unwrap();
        let ops: Vec<EntryOp> = read.entries.into_iter().map(Result::unwrap).collect();
        let EntryOp::Save { resource: patient, .. } = &ops[0] else { panic!() };
        let EntryOp::Save { resource: obs, .. } = &ops[1] else { panic!() };
        assert_eq!(obs.to_value()["subject"]["reference"], json!(format!("Patient/{}", patient.id)));
        assert_eq!(obs.compartment_patients(), std::slice::from_ref(&patient.id));
    }

    #[test]
    fn bad_entries_are_named_by_index() {
        let bundle = json!({"resourceType":"Bundle","type":"batch","entry":[
            {"resource":{"resourceType":"Patient","id":"x"},"request":{"method":"PUT","url":"Patient/y"}},
            {"request":{"method":"GET","url":"Patient/y"}}
        ]});
        let read = read(bundle, Validation::Strict).unwrap();
        assert!(read.entries[0].as_ref().unwrap_err().to_string().starts_with("entry 0: the id 'x'"));
        assert!(read.entries[1].as_ref().unwrap_err().to_string().contains("GET"));
    }

    #[test]
    fn a_transaction_reference_to_no_entry_fails_its_entry() {
        let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
            {"fullUrl":"urn:uuid:6d2a1f9c-0000-4000-8000-000000000001","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
            {"resource":{"resourceType":"Observation","status":"final","code":{"text":"t"},
                "subject":{"reference":"urn:uuid:6d2a1f9c-0000-4000-8000-000000000002"}},
             "request":{"method":"POST","url":"Observation"}}
        ]});
        let read = read(bundle, Validation::Strict).unwrap();
        assert!(read.entries[0].is_ok());
        assert_eq!(
            read.entries[1].as_ref().unwrap_err().to_string(),
            "entry 1: the reference 'urn:uuid:6d2a1f9c-0000-4000-8000-000000000002' matches no entry's fullUrl in the transaction"
        );
    }

    #[test]
    fn entries_are_validated() {
        let bundle = json!({"resourceType":"Bundle","type":"batch","entry":[
            {"resource":{"resourceType":"Observation","effectiveDateTime":"2020-01-01Té"},"request":{"method":"PUT","url":"Observation/o"}},
        ]});
        let read = read(bundle, Validation::Strict).unwrap();
        assert_eq!(read.entries[0].as_ref().unwrap_err().to_string(), "entry 0: Observation.effectiveDateTime: '2020-01-01Té' is not a valid dateTime");
    }
}
