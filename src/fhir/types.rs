//! The R4 resource types and ids, as types that can only hold valid values.

use std::{collections::HashSet, fmt, sync::LazyLock};

use serde::{Deserialize, Serialize};

/// Derived from the official R4 definitions by `scripts/derive-fhir-tables.py`.
const RESOURCE_TYPES: &str = include_str!("data/resource-types.txt");

static KNOWN: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| RESOURCE_TYPES.lines().map(str::trim).filter(|l| !l.is_empty()).collect());

/// A known R4 resource type name (`Patient`, `Observation`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType(&'static str);

impl Serialize for ResourceType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown resource type '{name}'")))
    }
}

impl ResourceType {
    pub fn parse(name: &str) -> Option<Self> {
        KNOWN.get(name).map(|known| Self(known))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// Every R4 resource type, sorted by name.
    pub fn all() -> Vec<Self> {
        let mut all: Vec<Self> = KNOWN.iter().map(|name| Self(name)).collect();
        all.sort();
        all
    }
}

impl From<ResourceType> for String {
    fn from(t: ResourceType) -> Self {
        t.0.to_owned()
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A logical id: `[A-Za-z0-9\-\.]{1,64}` (FHIR R4 `id` datatype).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId(String);

impl ResourceId {
    pub fn parse(id: &str) -> Option<Self> {
        is_valid_id(id).then(|| Self(id.to_owned()))
    }

    /// A fresh server-assigned id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A text that is not a FHIR id (where serde reads one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id '{0}'")]
pub struct InvalidId(pub String);

impl TryFrom<String> for ResourceId {
    type Error = InvalidId;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        if is_valid_id(&id) { Ok(Self(id)) } else { Err(InvalidId(id)) }
    }
}

impl From<ResourceId> for String {
    fn from(id: ResourceId) -> Self {
        id.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_r4_types_and_rejects_others() {
        assert!(ResourceType::parse("Patient").is_some());
        assert!(ResourceType::parse("ExplanationOfBenefit").is_some());
        assert!(ResourceType::parse("patient").is_none());
        assert!(ResourceType::parse("Resource").is_none());
        assert!(ResourceType::all().len() > 140);
    }

    #[test]
    fn ids_follow_the_r4_id_datatype() {
        assert!(is_valid_id("abc-1.2"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
    }
}
