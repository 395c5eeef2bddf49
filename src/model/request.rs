//! The export request as every layer keeps it: level, types, time bounds, filters, and the
//! rest of the kick-off parameters, already parsed (`export::request` parses them).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fhir::{
    compartment,
    elements::ElementSpec,
    references,
    search::{CompiledFilter, FilterError, TypeFilter},
    types::ResourceId,
    ResourceType,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "lowercase")]
pub enum ExportLevel {
    System,
    Patient,
    Group { id: ResourceId },
}

impl ExportLevel {
    /// As stored in a job's request (`system`, `patient`, `group`).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Patient => "patient",
            Self::Group { .. } => "group",
        }
    }

    pub fn is_compartment(&self) -> bool {
        !matches!(self, Self::System)
    }

    /// Whether exports of this level can hold this type: Patient level the Patient compartment,
    /// Group level that and the types its resources reference (Practitioner, Organization, ...).
    pub fn covers(&self, t: &ResourceType) -> bool {
        match self {
            Self::System => true,
            Self::Patient => compartment::is_compartment_type(t),
            Self::Group { .. } => compartment::is_compartment_type(t) || references::is_referenced_type(t),
        }
    }
}

/// How unsupported or unknown parameters are treated (`Prefer: handling=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handling {
    #[default]
    Strict,
    Lenient,
}

/// `includeAssociatedData`: which Provenance goes with the exported resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssociatedData {
    /// For each exported resource, the Provenance that targets it most recently recorded.
    LatestProvenanceResources,
    /// Every Provenance that targets an exported resource.
    RelevantProvenanceResources,
}

/// An output folder name chosen by the client (`_container`). Follows Azure's container name
/// rules, which also make it a safe single path segment on every store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

/// A `_container` value outside Azure's container name rules.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a valid container name: use 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit")]
pub struct InvalidContainerName(pub String);

impl ContainerName {
    pub fn parse(name: &str) -> Result<Self, InvalidContainerName> {
        let bytes = name.as_bytes();
        let valid = (3..=63).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && !name.contains("--");
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidContainerName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContainerName {
    type Error = InvalidContainerName;
    fn try_from(s: String) -> Result<Self, InvalidContainerName> {
        Self::parse(&s)
    }
}

impl From<ContainerName> for String {
    fn from(c: ContainerName) -> Self {
        c.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    #[serde(flatten)]
    pub level: ExportLevel,
    /// The kick-off URL as the client sent it (the manifest's `request`).
    pub request_url: String,
    /// Requested types; None means every type the level covers.
    pub types: Option<Vec<ResourceType>>,
    pub since: Option<DateTime<Utc>>,
    /// `_until`: only resources last updated strictly before this instant.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// `patient` (Patient and Group level): only these patients' compartments. Checked against
    /// the store at kick-off.
    #[serde(default)]
    pub patients: Option<Vec<ResourceId>>,
    /// `_elements`: the elements to keep (None: whole resources).
    #[serde(default)]
    pub elements: Option<Vec<ElementSpec>>,
    /// `allowPartialManifests`: in-progress status responses list the files already complete.
    #[serde(default)]
    pub allow_partial_manifests: bool,
    /// `includeAssociatedData`: Provenance exported with the resources (None: Provenance is an
    /// ordinary type, exported when `_type` allows it).
    #[serde(default)]
    pub associated: Option<AssociatedData>,
    pub container: Option<ContainerName>,
    pub handling: Handling,
    /// Diagnostics for parameters ignored under lenient handling; exported as `error` files.
    pub warnings: Vec<String>,
    /// `_typeFilter` queries, each checked at kick-off (conditions ignored under lenient
    /// handling already removed). Several for one type are OR-ed; a type with none is whole.
    #[serde(default)]
    pub type_filters: Vec<TypeFilter>,
    /// `organizeOutputBy=Patient`: output files hold one block per patient, each behind a
    /// `Parameters` header naming the patient.
    #[serde(default)]
    pub organize_by_patient: bool,
    /// `_anonymizationConfig`: the configuration every resource is de-identified with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymization: Option<Anonymization>,
}

/// Which configuration a de-identified job applies (`_anonymizationConfig`). Kept in the job's
/// request (so in its row and manifest); the configuration itself, keys included, is kept
/// apart, sealed (`export::deid::seal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anonymization {
    /// The configuration's name in the store.
    pub config: String,
    /// At parse: the ETag the client required, if any. Once the job is recorded: the ETag of
    /// the configuration that was read and sealed with it.
    pub etag: Option<String>,
}

/// A stored `_typeFilter` query that no longer compiles (kick-off checked it).
#[derive(Debug, thiserror::Error)]
#[error("_typeFilter {query}")]
pub struct TypeFilterError {
    pub query: String,
    #[source]
    pub source: FilterError,
}

impl ExportRequest {
    /// The compiled `_typeFilter` queries for one type (none: the type is exported whole).
    pub fn filters_for(&self, t: &ResourceType) -> Result<Vec<CompiledFilter>, TypeFilterError> {
        self.type_filters
            .iter()
            .filter(|f| &f.resource_type == t)
            .map(|f| f.compile().map_err(|source| TypeFilterError { query: f.describe(), source }))
            .collect()
    }

    /// The types this export may cover, among those the store holds.
    pub fn types_to_export(&self, present: &[ResourceType]) -> Vec<ResourceType> {
        present
            .iter()
            .filter(|t| self.level.covers(t))
            .filter(|t| {
                self.types.as_ref().is_none_or(|wanted| wanted.contains(t))
                    || (self.associated.is_some() && t.as_str() == "Provenance")
            })
            .cloned()
            .collect()
    }
}

