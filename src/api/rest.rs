//! FHIR REST on the base: read, create, update, delete, and batch/transaction Bundles.

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde_json::{json, Value};

use super::{
    auth::{require, Authorized},
    error::{fhir_json, ApiError},
    extract::JsonBody,
    AppState,
};
use crate::{
    auth::Caller,
    fhir::{
        bundle::{self, BundleKind, EntryOp},
        instant,
        types::ResourceId,
        IssueCode, Resource, ResourceType,
    },
    store::{Applied, Write},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", post(process_bundle))
        .route("/{type}", post(create_resource))
        .route("/{type}/{id}", get(read_resource).put(update_resource).delete(delete_resource))
}

fn resource_type(name: &str) -> Result<ResourceType, ApiError> {
    ResourceType::parse(name).ok_or_else(|| ApiError::bad_request(format!("'{name}' is not a known FHIR R4 resource type")))
}

fn resource_id(id: &str) -> Result<ResourceId, ApiError> {
    if id.starts_with('$') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::NotSupported,
            format!("operation '{id}' is not supported here; $export runs at [base], [base]/Patient and [base]/Group/[id]"),
        ));
    }
    ResourceId::parse(id).ok_or_else(|| ApiError::bad_request(format!("'{id}' is not a valid id")))
}

async fn read_resource(State(app): State<AppState>, Authorized(caller): Authorized, Path((t, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    let (t, id) = (resource_type(&t)?, resource_id(&id)?);
    require(&caller, t.as_str(), 'r')?;
    match app.stores.resources.read(&t, &id).await? {
        None => Err(ApiError::not_found(format!("{t}/{id} does not exist"))),
        Some(stored) if stored.deleted => {
            Err(ApiError::new(StatusCode::GONE, IssueCode::Deleted, format!("{t}/{id} was deleted")))
        }
        Some(stored) => {
            let mut response = fhir_json(StatusCode::OK, stored.body.unwrap_or_default());
            version_headers(&mut response, stored.version_id, stored.last_updated);
            Ok(response)
        }
    }
}

async fn update_resource(
    State(app): State<AppState>,
    Authorized(caller): Authorized,
    Path((t, id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (t, id) = (resource_type(&t)?, resource_id(&id)?);
    require(&caller, t.as_str(), 'u')?;
    let resource = Resource::for_update(body, &t, &id, app.validation)?;
    save(app, resource).await
}

async fn create_resource(
    State(app): State<AppState>,
    Authorized(caller): Authorized,
    Path(t): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let t = resource_type(&t)?;
    require(&caller, t.as_str(), 'c')?;
    let resource = Resource::for_create(body, Some(&t), ResourceId::generate(), app.validation)?;
    save(app, resource).await
}

async fn save(app: AppState, resource: Resource) -> Result<Response, ApiError> {
    let applied = single(app.stores.resources.apply(vec![Write::Save(resource)]).await?);
    let status = if applied.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut response = fhir_json(status, applied.body.clone().unwrap_or_default());
    version_headers(&mut response, applied.version_id, applied.last_updated);
    let location = format!("{}/{}", app.base_url, location(&applied));
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).expect("ids are header-safe"));
    Ok(response)
}

async fn delete_resource(State(app): State<AppState>, Authorized(caller): Authorized, Path((t, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    let (t, id) = (resource_type(&t)?, resource_id(&id)?);
    require(&caller, t.as_str(), 'd')?;
    single(app.stores.resources.apply(vec![Write::Delete { resource_type: t, id }]).await?);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST [base]` with a batch (entries independent) or transaction (all or nothing) Bundle.
async fn process_bundle(State(app): State<AppState>, Authorized(caller): Authorized, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    let request = bundle::read(body, app.validation)?;
    let entries: Vec<Value> = match request.kind {
        BundleKind::Transaction => {
            // A transaction runs only if the caller may do every one of its operations.
            request.entries.iter().flatten().try_for_each(|op| permitted(&caller, op))?;
            let writes = request
                .entries
                .into_iter()
                .map(|entry| entry.map(to_write))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request(format!("transaction rejected, nothing was written: {e}")))?;
            app.stores.resources.apply(writes).await?.iter().map(response_entry).collect()
        }
        BundleKind::Batch => {
            let mut entries = Vec::with_capacity(request.entries.len());
            for entry in request.entries {
                let op = entry.map_err(ApiError::from).and_then(|op| permitted(&caller, &op).map(|()| op));
                entries.push(match op {
                    Ok(op) => match app.stores.resources.apply(vec![to_write(op)]).await {
                        Ok(applied) => response_entry(&single(applied)),
                        Err(e) => error_entry(ApiError::from(e)),
                    },
                    Err(error) => error_entry(error),
                });
            }
            entries
        }
    };
    let bundle = json!({"resourceType": "Bundle", "type": request.kind.response_type(), "entry": entries});
    Ok(fhir_json(StatusCode::OK, bundle.to_string()))
}

/// Each Bundle entry needs the scope of its own operation.
fn permitted(caller: &Caller, op: &EntryOp) -> Result<(), ApiError> {
    let (resource_type, letter) = match op {
        EntryOp::Save { resource, created_by_post: true } => (resource.resource_type.as_str(), 'c'),
        EntryOp::Save { resource, created_by_post: false } => (resource.resource_type.as_str(), 'u'),
        EntryOp::Delete { resource_type, .. } => (resource_type.as_str(), 'd'),
    };
    require(caller, resource_type, letter)
}

fn to_write(op: EntryOp) -> Write {
    match op {
        EntryOp::Save { resource, .. } => Write::Save(resource),
        EntryOp::Delete { resource_type, id } => Write::Delete { resource_type, id },
    }
}

fn single(mut applied: Vec<Applied>) -> Applied {
    applied.pop().expect("one write gives one result")
}

fn location(applied: &Applied) -> String {
    format!("{}/{}/_history/{}", applied.resource_type, applied.id, applied.version_id)
}

fn response_entry(applied: &Applied) -> Value {
    let status = match (&applied.body, applied.created) {
        (None, _) => "204 No Content",
        (Some(_), true) => "201 Created",
        (Some(_), false) => "200 OK",
    };
    let mut response = json!({"status": status});
    if applied.body.is_some() {
        response["location"] = json!(location(applied));
        response["etag"] = json!(format!("W/\"{}\"", applied.version_id));
        response["lastModified"] = json!(instant::format(applied.last_updated));
    }
    json!({"response": response})
}

fn error_entry(error: ApiError) -> Value {
    let outcome: Value = serde_json::to_value(&error.outcome).unwrap_or(Value::Null);
    json!({"response": {"status": error.status.to_string(), "outcome": outcome}})
}

fn version_headers(response: &mut Response, version_id: i64, last_updated: chrono::DateTime<chrono::Utc>) {
    let headers = response.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_str(&format!("W/\"{version_id}\"")).expect("a version is header-safe"));
    let modified = httpdate::fmt_http_date(std::time::SystemTime::from(last_updated));
    headers.insert(header::LAST_MODIFIED, HeaderValue::from_str(&modified).expect("an HTTP date is header-safe"));
}

