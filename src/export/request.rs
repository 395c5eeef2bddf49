//! The export request: kick-off parameters parsed into types, with the spec's rules applied.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{params::RawParams, ExportError};
use crate::fhir::{
    compartment, instant,
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
    pub fn is_compartment(&self) -> bool {
        !matches!(self, Self::System)
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

/// An output folder name chosen by the client (`_container`). Follows Azure's container name
/// rules, which also make it a safe single path segment on every store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

impl ContainerName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let bytes = name.as_bytes();
        let valid = (3..=63).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && !name.contains("--");
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "'{name}' is not a valid container name: use 3 to 63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContainerName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
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
    pub container: Option<ContainerName>,
    pub handling: Handling,
    /// Diagnostics for parameters ignored under lenient handling; exported as `error` files.
    pub warnings: Vec<String>,
    /// `_typeFilter` queries, each checked at kick-off (conditions ignored under lenient
    /// handling already removed). Several for one type are OR-ed; a type with none is whole.
    #[serde(default)]
    pub type_filters: Vec<TypeFilter>,
}

const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Spec parameters that a later version of this server implements.
const NOT_YET_SUPPORTED: [&str; 7] = [
    "_until",
    "_elements",
    "patient",
    "includeAssociatedData",
    "organizeOutputBy",
    "allowPartialManifests",
    "_till",
];

impl ExportRequest {
    pub fn parse(
        level: ExportLevel,
        request_url: String,
        raw: &RawParams,
        handling: Handling,
    ) -> Result<Self, ExportError> {
        let mut warnings = Vec::new();
        let mut refuse = |error: ExportError| match handling {
            Handling::Strict => Err(error),
            Handling::Lenient => {
                warnings.push(format!("{error}; ignored under Prefer: handling=lenient"));
                Ok(())
            }
        };

        for name in raw.0.iter().map(|(n, _)| n.as_str()).collect::<BTreeSet<_>>() {
            match name {
                "_outputFormat" | "_type" | "_since" | "_container" | "_typeFilter" => {}
                _ if NOT_YET_SUPPORTED.contains(&name) => refuse(ExportError::UnsupportedParameter(name.to_owned()))?,
                _ => refuse(ExportError::UnknownParameter(name.to_owned()))?,
            }
        }

        if let Some(format) = single(raw, "_outputFormat")?
            && !OUTPUT_FORMATS.contains(&format) {
                return Err(invalid(
                    "_outputFormat",
                    format!("'{format}' is not supported; use application/fhir+ndjson, application/ndjson or ndjson"),
                ));
            }
        let since = single(raw, "_since")?
            .map(|value| instant::parse(value).map_err(|reason| invalid("_since", reason)))
            .transpose()?;
        let container = single(raw, "_container")?
            .map(|value| ContainerName::parse(value).map_err(|reason| invalid("_container", reason)))
            .transpose()?;

        let mut types = BTreeSet::new();
        for name in raw.values("_type").map(str::trim).filter(|n| !n.is_empty()) {
            let t = ResourceType::parse(name)
                .ok_or_else(|| invalid("_type", format!("'{name}' is not a known FHIR R4 resource type")))?;
            if level.is_compartment() && !compartment::is_compartment_type(&t) {
                refuse(invalid(
                    "_type",
                    format!("{t} is not in the Patient compartment; Patient and Group level exports cover Patient compartment types only"),
                ))?;
                continue;
            }
            types.insert(t);
        }
        let types = if raw.values("_type").next().is_some() { Some(types.into_iter().collect()) } else { None };

        let mut type_filters = Vec::new();
        for text in raw.values("_typeFilter").map(str::trim).filter(|q| !q.is_empty()) {
            let filter = parse_type_filter(text, &level, types.as_deref(), &mut refuse)?;
            type_filters.push(filter);
        }

        Ok(Self { level, request_url, types, since, container, handling, warnings, type_filters })
    }

    /// The compiled `_typeFilter` queries for one type (none: the type is exported whole).
    pub fn filters_for(&self, t: &ResourceType) -> Result<Vec<CompiledFilter>, String> {
        self.type_filters
            .iter()
            .filter(|f| &f.resource_type == t)
            .map(|f| f.compile().map_err(|e| format!("_typeFilter {}: {e}", f.describe())))
            .collect()
    }

    /// The types this export may cover, among those the store holds.
    pub fn types_to_export(&self, present: &[ResourceType]) -> Vec<ResourceType> {
        present
            .iter()
            .filter(|t| !self.level.is_compartment() || compartment::is_compartment_type(t))
            .filter(|t| self.types.as_ref().is_none_or(|wanted| wanted.contains(t)))
            .cloned()
            .collect()
    }
}

/// Reads one `_typeFilter` query and checks each condition compiles: malformed ones and queries
/// on types the export does not cover are refused; conditions outside what we evaluate are
/// refused too, or under lenient handling dropped (through `refuse`) with a warning.
fn parse_type_filter(
    text: &str,
    level: &ExportLevel,
    types: Option<&[ResourceType]>,
    refuse: &mut impl FnMut(ExportError) -> Result<(), ExportError>,
) -> Result<TypeFilter, ExportError> {
    let mut filter = TypeFilter::parse(text).map_err(|e| invalid("_typeFilter", e.to_string()))?;
    let t = &filter.resource_type;
    if types.is_some_and(|types| !types.contains(t)) {
        return Err(invalid("_typeFilter", format!("'{text}' filters {t}, which _type does not export")));
    }
    if level.is_compartment() && !compartment::is_compartment_type(t) {
        return Err(invalid("_typeFilter", format!("'{text}' filters {t}, which is not in the Patient compartment this export covers")));
    }
    let mut kept = Vec::new();
    for condition in std::mem::take(&mut filter.conditions) {
        let single = TypeFilter { resource_type: t.clone(), conditions: vec![condition.clone()] };
        match single.compile() {
            Ok(_) => kept.push(condition),
            Err(FilterError::Invalid(reason)) => return Err(invalid("_typeFilter", format!("'{text}': {reason}"))),
            Err(FilterError::Unsupported(reason)) => refuse(ExportError::UnsupportedSearch(format!("'{text}': {reason}")))?,
        }
    }
    filter.conditions = kept;
    Ok(filter)
}

fn invalid(name: &str, reason: impl Into<String>) -> ExportError {
    ExportError::InvalidParameter { name: name.to_owned(), reason: reason.into() }
}

fn single<'a>(raw: &'a RawParams, name: &'a str) -> Result<Option<&'a str>, ExportError> {
    let mut values = raw.values(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid(name, "may be given only once"));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(level: ExportLevel, query: &str, handling: Handling) -> Result<ExportRequest, ExportError> {
        ExportRequest::parse(level, "http://x/fhir/$export".into(), &RawParams::from_query(query).unwrap(), handling)
    }

    #[test]
    fn accepts_the_supported_parameters() {
        let r = parse(ExportLevel::System, "_type=Patient,Observation&_since=2024-01-01T00:00:00Z&_outputFormat=ndjson&_container=my-exports", Handling::Strict).unwrap();
        assert_eq!(r.types.unwrap().len(), 2);
        assert!(r.since.is_some());
        assert_eq!(r.container.unwrap().as_str(), "my-exports");
    }

    #[test]
    fn refuses_bad_values_naming_the_parameter() {
        for (query, name) in [
            ("_type=Bogus", "_type"),
            ("_since=yesterday", "_since"),
            ("_outputFormat=text/csv", "_outputFormat"),
            ("_container=../etc", "_container"),
            ("_container=UPPER", "_container"),
            ("_since=2024-01-01&_since=2024-01-02", "_since"),
        ] {
            match parse(ExportLevel::System, query, Handling::Strict) {
                Err(ExportError::InvalidParameter { name: n, .. }) => assert_eq!(n, name, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn unsupported_parameters_fail_strict_and_warn_lenient() {
        assert!(matches!(
            parse(ExportLevel::System, "_elements=id", Handling::Strict),
            Err(ExportError::UnsupportedParameter(n)) if n == "_elements"
        ));
        let r = parse(ExportLevel::System, "_elements=id&foo=bar", Handling::Lenient).unwrap();
        assert_eq!(r.warnings.len(), 2);
        assert!(r.warnings.iter().any(|w| w.contains("_elements")));
        assert!(r.warnings.iter().any(|w| w.contains("foo")));
    }

    #[test]
    fn type_filters_are_checked_at_kick_off() {
        let r = parse(ExportLevel::System, "_type=Patient,Observation&_typeFilter=Patient%3Fgender%3Dmale,Observation%3Fcode%3Da%252Cb", Handling::Strict).unwrap();
        assert_eq!(r.type_filters.len(), 2);
        assert_eq!(r.type_filters[1].conditions[0].value, "a,b");
        let obs = ResourceType::parse("Observation").unwrap();
        assert_eq!(r.filters_for(&obs).unwrap().len(), 1);
        for (query, why) in [
            ("_type=Patient&_typeFilter=Observation%3Fcode%3Da", "_type does not export"),
            ("_typeFilter=Observation%3Fdate%3Dsoon", "is not a FHIR date"),
            ("_typeFilter=Observation%3Fbogus%3D1", "not an R4 search parameter"),
        ] {
            match parse(ExportLevel::System, query, Handling::Lenient) {
                Err(ExportError::InvalidParameter { name, reason }) => assert!(name == "_typeFilter" && reason.contains(why), "{query}: {reason}"),
                other => panic!("{query}: {other:?}"),
            }
        }
        assert!(parse(ExportLevel::Patient, "_typeFilter=Organization%3Fname%3Dx", Handling::Strict).is_err());
        let chained = "_typeFilter=Observation%3Fpatient.name%3Dx%26status%3Dfinal";
        assert!(matches!(parse(ExportLevel::System, chained, Handling::Strict), Err(ExportError::UnsupportedSearch(m)) if m.contains("chained")));
        let r = parse(ExportLevel::System, chained, Handling::Lenient).unwrap();
        assert_eq!(r.type_filters[0].conditions.len(), 1, "the chain is dropped, status kept");
        assert!(r.warnings[0].contains("chained") && r.warnings[0].contains("lenient"));
    }

    #[test]
    fn compartment_levels_keep_to_compartment_types() {
        assert!(parse(ExportLevel::Patient, "_type=Organization", Handling::Strict).is_err());
        let r = parse(ExportLevel::Patient, "_type=Organization,Observation", Handling::Lenient).unwrap();
        assert_eq!(r.types.unwrap(), vec![ResourceType::parse("Observation").unwrap()]);
    }
}
