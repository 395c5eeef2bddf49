//! One incoming resource: validated on the way in, stamped with its version on the way to storage.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{compartment, instant, types::ResourceId, ResourceType};

/// A resource that passed validation: a JSON object of a known type with a valid id.
///
/// All JSON work happens here, when the resource is built (on the loader's parsing thread, off
/// the database's path): its compartment patients are found and its text is serialized once,
/// with a gap for the two meta fields only the store can fill in. `render` is then a splice.
#[derive(Debug, Clone)]
pub struct Resource {
    pub resource_type: ResourceType,
    pub id: ResourceId,
    patients: Vec<ResourceId>,
    /// The compact JSON up to where `"versionId":...,"lastUpdated":...` go inside `meta`.
    head: String,
    /// The rest: closes `meta` and continues the resource.
    tail: String,
}

/// Why a body is not an acceptable resource. Each message names the problem for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body must be a JSON object (a FHIR resource)")]
    NotAnObject,
    #[error("the resource has no 'resourceType' string")]
    MissingResourceType,
    #[error("'{0}' is not a known FHIR R4 resource type")]
    UnknownType(String),
    #[error("the resourceType '{found}' does not match the type '{expected}' in the URL")]
    TypeMismatch { expected: String, found: String },
    #[error("the resource has no 'id'")]
    MissingId,
    #[error("the id '{0}' is invalid: ids are 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'")]
    InvalidId(String),
    #[error("the id '{body}' in the body does not match the id '{url}' in the URL")]
    IdMismatch { url: String, body: String },
    #[error("'meta' must be a JSON object")]
    InvalidMeta,
}

impl Resource {
    /// Parses and validates a resource that must carry its own id (loader lines, PUT bodies).
    pub fn parse(bytes: &[u8]) -> Result<Self, ResourceError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ResourceError::InvalidJson(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, ResourceError> {
        let (resource_type, body) = Self::typed_object(value)?;
        let id = match body.get("id") {
            None => return Err(ResourceError::MissingId),
            Some(Value::String(id)) => {
                ResourceId::parse(id).ok_or_else(|| ResourceError::InvalidId(id.clone()))?
            }
            Some(other) => return Err(ResourceError::InvalidId(other.to_string())),
        };
        Self::checked(resource_type, id, body)
    }

    /// A body for `PUT [type]/[id]`: its type and id, when given, must match the URL.
    pub fn for_update(value: Value, url_type: &ResourceType, url_id: &ResourceId) -> Result<Self, ResourceError> {
        let (resource_type, mut body) = Self::typed_object(value)?;
        Self::expect_type(&resource_type, url_type)?;
        match body.get("id") {
            None => {}
            Some(Value::String(id)) if id == url_id.as_str() => {}
            Some(other) => {
                let body_id = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                return Err(ResourceError::IdMismatch { url: url_id.to_string(), body: body_id });
            }
        }
        body.insert("id".into(), Value::String(url_id.to_string()));
        Self::checked(resource_type, url_id.clone(), body)
    }

    /// A body for `POST [type]`: the server assigns the id, replacing any the client sent.
    pub fn for_create(value: Value, url_type: Option<&ResourceType>, id: ResourceId) -> Result<Self, ResourceError> {
        let (resource_type, mut body) = Self::typed_object(value)?;
        if let Some(url_type) = url_type {
            Self::expect_type(&resource_type, url_type)?;
        }
        body.insert("id".into(), Value::String(id.to_string()));
        Self::checked(resource_type, id, body)
    }

    fn typed_object(value: Value) -> Result<(ResourceType, Map<String, Value>), ResourceError> {
        let Value::Object(body) = value else { return Err(ResourceError::NotAnObject) };
        let Some(Value::String(name)) = body.get("resourceType") else {
            return Err(ResourceError::MissingResourceType);
        };
        let resource_type =
            ResourceType::parse(name).ok_or_else(|| ResourceError::UnknownType(name.clone()))?;
        Ok((resource_type, body))
    }

    fn expect_type(found: &ResourceType, expected: &ResourceType) -> Result<(), ResourceError> {
        if found == expected {
            Ok(())
        } else {
            Err(ResourceError::TypeMismatch { expected: expected.to_string(), found: found.to_string() })
        }
    }

    fn checked(resource_type: ResourceType, id: ResourceId, mut body: Map<String, Value>) -> Result<Self, ResourceError> {
        let meta = match body.get_mut("meta") {
            None => None,
            Some(Value::Object(meta)) => {
                // The server sets these two.
                meta.shift_remove("versionId");
                meta.shift_remove("lastUpdated");
                Some(Value::Object(std::mem::take(meta)))
            }
            Some(_) => return Err(ResourceError::InvalidMeta),
        };
        let patients = compartment::patients_of(&resource_type, &id, &body);
        let (head, tail) = split_at_meta(&body, meta.as_ref());
        Ok(Self { resource_type, id, patients, head, tail })
    }

    /// The patients whose compartment holds this resource (R4 Patient CompartmentDefinition).
    pub fn compartment_patients(&self) -> &[ResourceId] {
        &self.patients
    }

    /// The stored and exported text: compact JSON with `meta.versionId` and `meta.lastUpdated`
    /// set by the server (last in `meta`).
    pub fn render(&self, version_id: i64, last_updated: DateTime<Utc>) -> String {
        let version = version_id.to_string();
        let instant = instant::format(last_updated);
        let mut text = String::with_capacity(self.head.len() + self.tail.len() + version.len() + instant.len() + 32);
        text.push_str(&self.head);
        text.push_str("\"versionId\":\"");
        text.push_str(&version);
        text.push_str("\",\"lastUpdated\":\"");
        text.push_str(&instant);
        text.push_str("\"}");
        text.push_str(&self.tail);
        text
    }

    /// The size of the stored text, less the server's two meta fields.
    pub fn text_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The resource as JSON, as it would be stored at version 1 now (for inspection).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.render(1, Utc::now())).expect("rendered text is JSON")
    }
}

/// Serializes the resource with `meta` (without the server's fields) in its place, or last
/// when absent, and splits the text where the server's meta fields go.
fn split_at_meta(body: &Map<String, Value>, meta: Option<&Value>) -> (String, String) {
    let json = |v: &Value| serde_json::to_string(v).expect("JSON values serialize");
    let key = |k: &str| serde_json::to_string(k).expect("strings serialize");
    let mut head = String::from("{");
    let mut tail = String::new();
    let mut after_meta = false;
    for (k, v) in body {
        if k == "meta" {
            after_meta = true;
            continue;
        }
        let out = if after_meta { &mut tail } else { &mut head };
        if out.len() > 1 || after_meta {
            out.push(',');
        }
        out.push_str(&key(k));
        out.push(':');
        out.push_str(&json(v));
    }
    if head.len() > 1 {
        head.push(',');
    }
    head.push_str("\"meta\":");
    match meta.map(json) {
        // `{"source":"x"}` -> `{"source":"x",` then the server's fields and `}`.
        Some(text) if text != "{}" => {
            head.push_str(&text[..text.len() - 1]);
            head.push(',');
        }
        _ => head.push('{'),
    }
    tail.push('}');
    (head, tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_bodies_that_are_not_resources() {
        assert_eq!(Resource::parse(b"[1]").unwrap_err(), ResourceError::NotAnObject);
        assert_eq!(Resource::parse(b"{\"id\":\"a\"}").unwrap_err(), ResourceError::MissingResourceType);
        assert_eq!(
            Resource::parse(br#"{"resourceType":"Bogus","id":"a"}"#).unwrap_err(),
            ResourceError::UnknownType("Bogus".into())
        );
        assert_eq!(Resource::parse(br#"{"resourceType":"Patient"}"#).unwrap_err(), ResourceError::MissingId);
        assert!(matches!(Resource::parse(br#"{"resourceType":"Patient","id":"a b"}"#), Err(ResourceError::InvalidId(_))));
        assert!(matches!(Resource::parse(b"{"), Err(ResourceError::InvalidJson(_))));
    }

    #[test]
    fn update_requires_matching_type_and_id() {
        let t = ResourceType::parse("Patient").unwrap();
        let id = ResourceId::parse("p1").unwrap();
        assert!(Resource::for_update(json!({"resourceType":"Patient"}), &t, &id).is_ok());
        assert!(matches!(
            Resource::for_update(json!({"resourceType":"Patient","id":"p2"}), &t, &id),
            Err(ResourceError::IdMismatch { .. })
        ));
        assert!(matches!(
            Resource::for_update(json!({"resourceType":"Observation","id":"p1"}), &t, &id),
            Err(ResourceError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn render_stamps_version_and_last_updated_in_place() {
        let t = instant::parse("2024-01-02T03:04:05Z").unwrap();
        let cases = [
            (
                r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"9","source":"x"},"active":true}"#,
                r#"{"resourceType":"Patient","id":"p1","meta":{"source":"x","versionId":"3","lastUpdated":"2024-01-02T03:04:05.000000Z"},"active":true}"#,
            ),
            (
                r#"{"resourceType":"Patient","id":"p1","active":true}"#,
                r#"{"resourceType":"Patient","id":"p1","active":true,"meta":{"versionId":"3","lastUpdated":"2024-01-02T03:04:05.000000Z"}}"#,
            ),
            (
                r#"{"meta":{},"resourceType":"Patient","id":"p1"}"#,
                r#"{"meta":{"versionId":"3","lastUpdated":"2024-01-02T03:04:05.000000Z"},"resourceType":"Patient","id":"p1"}"#,
            ),
        ];
        for (input, expected) in cases {
            let r = Resource::parse(input.as_bytes()).unwrap();
            assert_eq!(r.render(3, t), expected);
        }
    }
}
