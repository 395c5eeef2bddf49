//! One incoming resource: validated on the way in, stamped with its version on the way to storage.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{compartment, instant, types::ResourceId, ResourceType};

/// A resource that passed validation: a JSON object of a known type with a valid id.
#[derive(Debug, Clone)]
pub struct Resource {
    pub resource_type: ResourceType,
    pub id: ResourceId,
    body: Map<String, Value>,
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

    fn checked(resource_type: ResourceType, id: ResourceId, body: Map<String, Value>) -> Result<Self, ResourceError> {
        if body.get("meta").is_some_and(|m| !m.is_object()) {
            return Err(ResourceError::InvalidMeta);
        }
        Ok(Self { resource_type, id, body })
    }

    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    pub fn body_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.body
    }

    /// The patients whose compartment holds this resource (R4 Patient CompartmentDefinition).
    pub fn compartment_patients(&self) -> Vec<ResourceId> {
        compartment::patients_of(&self.resource_type, &self.id, &self.body)
    }

    /// The stored and exported text: compact JSON with `meta.versionId` and `meta.lastUpdated`
    /// set by the server.
    pub fn render(&mut self, version_id: i64, last_updated: DateTime<Utc>) -> String {
        let meta = self.body.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            meta.insert("versionId".into(), Value::String(version_id.to_string()));
            meta.insert("lastUpdated".into(), Value::String(instant::format(last_updated)));
        }
        serde_json::to_string(&self.body).expect("a JSON map serializes")
    }
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
    fn render_stamps_version_and_last_updated() {
        let mut r = Resource::parse(br#"{"resourceType":"Patient","id":"p1","meta":{"source":"x"}}"#).unwrap();
        let t = instant::parse("2024-01-02T03:04:05Z").unwrap();
        let text = r.render(3, t);
        assert_eq!(
            text,
            r#"{"resourceType":"Patient","id":"p1","meta":{"source":"x","versionId":"3","lastUpdated":"2024-01-02T03:04:05.000000Z"}}"#
        );
    }
}
