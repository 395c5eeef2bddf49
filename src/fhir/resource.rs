//! One incoming resource: validated on the way in, stamped with its version on the way to storage.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::{value::RawValue, Map, Value};

use super::{compartment, instant, types::ResourceId, validation, ResourceType, Validation};

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
    /// An element that is not what its R4 definition says.
    #[error(transparent)]
    Invalid(#[from] validation::Invalid),
}

impl Resource {
    /// Parses and validates a resource that must carry its own id (loader lines).
    ///
    /// Without building the JSON tree of the whole resource, which cost about half of the
    /// loader's CPU: only `meta` and the elements that can name a patient become values; the
    /// other top-level elements are copied as text, minus whitespace between tokens. So numbers
    /// and string escapes are kept as written (a decimal's precision with them), where
    /// `from_value` writes serde_json's forms: the same JSON, and for Synthea's compact lines
    /// the same bytes except numbers serde_json shortens (112.41600000000001 -> 112.416, one
    /// double). Anything unusual (not an object, a repeated key, an escaped type or id, a bad
    /// meta) takes `from_value`, for the same result and errors as before.
    /// Its elements are checked against their R4 definitions as `validation` says, from the
    /// same text.
    pub fn parse(bytes: &[u8], validation: Validation) -> Result<Self, ResourceError> {
        if let Some(resource) = Self::parse_fields(bytes, validation) {
            return resource;
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ResourceError::InvalidJson(e.to_string()))?;
        Self::from_value(value, validation)
    }

    /// The fast path of `parse`, or None to take the general one.
    fn parse_fields(bytes: &[u8], validation: Validation) -> Option<Result<Self, ResourceError>> {
        let Fields(fields) = serde_json::from_slice(bytes).ok()?;
        let raw = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.get());
        let resource_type = ResourceType::parse(serde_json::from_str::<&str>(raw("resourceType")?).ok()?)?;
        let id = ResourceId::parse(serde_json::from_str::<&str>(raw("id")?).ok()?)?;
        let mut meta = match raw("meta") {
            None => None,
            Some(text) => Some(serde_json::from_str::<Map<String, Value>>(text).ok()?),
        };
        let mut roots = Map::new();
        for (i, (key, value)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(earlier, _)| earlier == key) {
                return None; // serde_json keeps the last of repeated keys: leave that to it
            }
            if compartment::is_root(&resource_type, key) {
                roots.insert(key.to_string(), serde_json::from_str(value.get()).ok()?);
            }
        }
        if let Err(invalid) = validation.check_raw_fields(&resource_type, fields.iter().map(|(k, v)| (k.as_ref(), *v))) {
            return Some(Err(invalid.into()));
        }
        if let Some(meta) = meta.as_mut() {
            meta.shift_remove("versionId");
            meta.shift_remove("lastUpdated");
        }
        let patients = compartment::patients_of(&resource_type, &id, &roots);
        let meta = meta.map(Value::Object);
        let elements = fields.iter().map(|(key, value)| (key.as_ref(), Element::Text(value.get())));
        let (head, tail) = split_at_meta(elements, meta.as_ref(), bytes.len());
        Some(Ok(Self { resource_type, id, patients, head, tail }))
    }

    pub fn from_value(value: Value, validation: Validation) -> Result<Self, ResourceError> {
        let (resource_type, body) = Self::typed_object(value)?;
        let id = match body.get("id") {
            None => return Err(ResourceError::MissingId),
            Some(Value::String(id)) => {
                ResourceId::parse(id).ok_or_else(|| ResourceError::InvalidId(id.clone()))?
            }
            Some(other) => return Err(ResourceError::InvalidId(other.to_string())),
        };
        Self::checked(resource_type, id, body, validation)
    }

    /// A body for `PUT [type]/[id]`: its type and id, when given, must match the URL.
    pub fn for_update(value: Value, url_type: &ResourceType, url_id: &ResourceId, validation: Validation) -> Result<Self, ResourceError> {
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
        Self::checked(resource_type, url_id.clone(), body, validation)
    }

    /// A body for `POST [type]`: the server assigns the id, replacing any the client sent.
    pub fn for_create(value: Value, url_type: Option<&ResourceType>, id: ResourceId, validation: Validation) -> Result<Self, ResourceError> {
        let (resource_type, mut body) = Self::typed_object(value)?;
        if let Some(url_type) = url_type {
            Self::expect_type(&resource_type, url_type)?;
        }
        body.insert("id".into(), Value::String(id.to_string()));
        Self::checked(resource_type, id, body, validation)
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

    fn checked(resource_type: ResourceType, id: ResourceId, mut body: Map<String, Value>, validation: Validation) -> Result<Self, ResourceError> {
        validation.check_object(&resource_type, &body)?;
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
        let elements = body.iter().map(|(key, value)| (key.as_str(), Element::Value(value)));
        let (head, tail) = split_at_meta(elements, meta.as_ref(), 1024);
        Ok(Self { resource_type, id, patients, head, tail })
    }

    /// The patients whose compartment holds this resource (R4 Patient CompartmentDefinition).
    pub fn compartment_patients(&self) -> &[ResourceId] {
        &self.patients
    }

    /// The stored and exported text: compact JSON with `meta.versionId` and `meta.lastUpdated`
    /// set by the server (last in `meta`).
    pub fn render(&self, version_id: i64, last_updated: DateTime<Utc>) -> String {
        let mut text = Vec::with_capacity(self.head.len() + self.tail.len() + 64);
        self.render_into(&mut text, &version_id.to_string(), &instant::format(last_updated));
        String::from_utf8(text).expect("the parts are text")
    }

    /// `render` appended to a buffer, with the version and instant already formatted (a bulk
    /// writer formats them once per batch).
    pub fn render_into(&self, out: &mut Vec<u8>, version_id: &str, last_updated: &str) {
        for part in [&self.head, "\"versionId\":\"", version_id, "\",\"lastUpdated\":\"", last_updated, "\"}", &self.tail] {
            out.extend_from_slice(part.as_bytes());
        }
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

/// The top-level elements of a JSON object in order, each value as its JSON text, keys decoded
/// (borrowed when they had no escapes). Not a map: a repeated key stays visible.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(16);
                while let Some((Key(key), value)) = map.next_entry()? {
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// An object key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// A top-level element's value: parsed, or JSON text from the input.
enum Element<'a> {
    Value(&'a Value),
    Text(&'a str),
}

/// Serializes the resource with `meta` (without the server's fields) in its place, or last
/// when absent, and splits the text where the server's meta fields go. `meta` in `elements`
/// is skipped: the cleaned `meta` is what is written.
fn split_at_meta<'a>(elements: impl Iterator<Item = (&'a str, Element<'a>)>, meta: Option<&Value>, size: usize) -> (String, String) {
    let json = |v: &Value| serde_json::to_string(v).expect("JSON values serialize");
    let mut head = String::with_capacity(size);
    head.push('{');
    let mut tail = String::new();
    let mut after_meta = false;
    for (k, v) in elements {
        if k == "meta" {
            after_meta = true;
            tail.reserve(size.saturating_sub(head.len()));
            continue;
        }
        let out = if after_meta { &mut tail } else { &mut head };
        if out.len() > 1 || after_meta {
            out.push(',');
        }
        push_key(out, k);
        match v {
            Element::Value(v) => out.push_str(&json(v)),
            Element::Text(text) => push_compact(out, text),
        }
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

/// Appends `"key":`, escaped as serde_json escapes it.
fn push_key(out: &mut String, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(key).expect("strings serialize"));
    }
    out.push(':');
}

/// Appends JSON text without the whitespace between its tokens, as serde_json writes it.
fn push_compact(out: &mut String, json: &str) {
    let (mut run, mut in_string, mut escaped) = (0, false, false);
    for (i, b) in json.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push_str(&json[run..i]);
            run = i + 1;
        }
    }
    out.push_str(&json[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fast_parse_stores_what_the_value_parse_stores_for_the_synthea_sample() {
        use std::io::{BufRead, BufReader};
        let t = Utc::now();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/synthea-r4-100");
        for path in std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().path()) {
            if !path.to_string_lossy().ends_with(".ndjson.gz") {
                continue;
            }
            let file = std::fs::File::open(path).unwrap();
            for line in BufReader::new(flate2::read::MultiGzDecoder::new(file)).split(b'\n').take(300) {
                let line = line.unwrap();
                let fast = Resource::parse_fields(&line, Validation::Strict).expect("a Synthea line takes the fast path").unwrap();
                let slow = Resource::from_value(serde_json::from_slice(&line).unwrap(), Validation::Strict).unwrap();
                assert_eq!(fast.patients, slow.patients);
                // The same JSON, though not always the same bytes: serde_json writes a number
                // as the shortest text of its double (112.41600000000001 as 112.416).
                let json = |r: &Resource| serde_json::from_str::<Value>(&r.render(1, t)).unwrap();
                assert_eq!(json(&fast), json(&slow));
            }
        }
    }

    #[test]
    fn the_fast_parse_drops_whitespace_and_keeps_numbers_as_written() {
        let t = instant::parse("2024-01-02T03:04:05Z").unwrap();
        let r = Resource::parse(
            br#"{ "resourceType" : "Observation", "id":"o", "meta": {"versionId":"9"},
                 "subject": { "reference": "Patient/p1" }, "note": [ {"text": "a \"b\" c"} ], "valueQuantity": {"value": 1.50} }"#,
            Validation::Strict,
        )
        .unwrap();
        assert_eq!(
            r.render(1, t),
            r#"{"resourceType":"Observation","id":"o","meta":{"versionId":"1","lastUpdated":"2024-01-02T03:04:05.000000Z"},"subject":{"reference":"Patient/p1"},"note":[{"text":"a \"b\" c"}],"valueQuantity":{"value":1.50}}"#
        );
        assert_eq!(r.compartment_patients(), [ResourceId::parse("p1").unwrap()]);
        // A repeated key: the last one counts, as in serde_json.
        let r = Resource::parse(br#"{"resourceType":"Patient","id":"a","id":"b"}"#, Validation::Strict).unwrap();
        assert_eq!(r.id.as_str(), "b");
    }

    #[test]
    fn rejects_bodies_that_are_not_resources() {
        assert_eq!(Resource::parse(b"[1]", Validation::Strict).unwrap_err(), ResourceError::NotAnObject);
        assert_eq!(Resource::parse(b"{\"id\":\"a\"}", Validation::Strict).unwrap_err(), ResourceError::MissingResourceType);
        assert_eq!(
            Resource::parse(br#"{"resourceType":"Bogus","id":"a"}"#, Validation::Strict).unwrap_err(),
            ResourceError::UnknownType("Bogus".into())
        );
        assert_eq!(Resource::parse(br#"{"resourceType":"Patient"}"#, Validation::Strict).unwrap_err(), ResourceError::MissingId);
        assert!(matches!(Resource::parse(br#"{"resourceType":"Patient","id":"a b"}"#, Validation::Strict), Err(ResourceError::InvalidId(_))));
        assert!(matches!(Resource::parse(b"{", Validation::Strict), Err(ResourceError::InvalidJson(_))));
    }

    #[test]
    fn update_requires_matching_type_and_id() {
        let t = ResourceType::parse("Patient").unwrap();
        let id = ResourceId::parse("p1").unwrap();
        assert!(Resource::for_update(json!({"resourceType":"Patient"}), &t, &id, Validation::Strict).is_ok());
        assert!(matches!(
            Resource::for_update(json!({"resourceType":"Patient","id":"p2"}), &t, &id, Validation::Strict),
            Err(ResourceError::IdMismatch { .. })
        ));
        assert!(matches!(
            Resource::for_update(json!({"resourceType":"Observation","id":"p1"}), &t, &id, Validation::Strict),
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
            let r = Resource::parse(input.as_bytes(), Validation::Strict).unwrap();
            assert_eq!(r.render(3, t), expected);
        }
    }
}
