//! The export request: kick-off parameters parsed into types, with the spec's rules applied.

use std::collections::BTreeSet;

use chrono::Utc;

use super::{params::RawParams, ExportError};
use crate::{
    fhir::{
        elements::ElementSpec,
        instant, references,
        search::{FilterError, TypeFilter},
        types::ResourceId,
        ResourceType,
    },
    model::request::{AssociatedData, ContainerName, ExportLevel, ExportRequest, Handling},
};

const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Spec parameters that a later version of this server implements.
const NOT_YET_SUPPORTED: [&str; 1] = [
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
                "_until" | "patient" | "_elements" | "allowPartialManifests" | "includeAssociatedData" => {}
                "organizeOutputBy" => {}
                _ if super::deid::params::NAMES.contains(&name) => {}
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
            .map(|value| instant::parse(value).map_err(|reason| invalid("_since", reason.to_string())))
            .transpose()?;
        let now = Utc::now();
        if let Some(since) = since
            && since > now {
                return Err(invalid("_since", format!("{} is in the future (the server's time is {}); use an instant in the past", instant::format(since), instant::format(now))));
            }
        let until = single(raw, "_until")?
            .map(|value| instant::parse(value).map_err(|reason| invalid("_until", reason.to_string())))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until)
            && since > until {
                return Err(invalid("_since", format!("{} is after _until {}", instant::format(since), instant::format(until))));
            }
        let patients = parse_patients(&level, raw, &mut refuse)?;
        let anonymization = super::deid::params::parse(raw, &mut refuse)?;
        let elements = parse_elements(raw, &mut refuse)?;
        let mut associated = None;
        for value in raw.values("includeAssociatedData").map(str::trim).filter(|v| !v.is_empty()) {
            match value {
                "RelevantProvenanceResources" => associated = Some(AssociatedData::RelevantProvenanceResources),
                // Relevant is a superset of Latest: it wins when both are asked for.
                "LatestProvenanceResources" => {
                    associated = associated.or(Some(AssociatedData::LatestProvenanceResources));
                }
                other => refuse(invalid(
                    "includeAssociatedData",
                    format!("'{other}' is not supported; use LatestProvenanceResources or RelevantProvenanceResources"),
                ))?,
            }
        }
        let organize_by_patient = match single(raw, "organizeOutputBy")?.map(str::trim) {
            None | Some("") => false,
            Some("Patient") if level.is_compartment() => true,
            Some("Patient") => {
                refuse(invalid("organizeOutputBy", "Patient is supported at Patient and Group level only, not for a system export"))?;
                false
            }
            Some(other) => {
                refuse(invalid("organizeOutputBy", format!("'{other}' is not supported; only Patient is")))?;
                false
            }
        };
        let allow_partial_manifests = match single(raw, "allowPartialManifests")? {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(invalid("allowPartialManifests", format!("'{other}' is not a boolean (true or false)"))),
        };
        let container = single(raw, "_container")?
            .map(|value| ContainerName::parse(value).map_err(|e| invalid("_container", e.to_string())))
            .transpose()?;

        // Types the level does not cover are left out with an OperationOutcome under either
        // handling; only a request left with no type fails (Bulk Data: the server SHOULD).
        let mut types = BTreeSet::new();
        let mut dropped: Vec<(ResourceType, String)> = Vec::new();
        for name in raw.values("_type").map(str::trim).filter(|n| !n.is_empty()) {
            let t = ResourceType::parse(name)
                .ok_or_else(|| invalid("_type", format!("'{name}' is not a known FHIR R4 resource type")))?;
            if level.covers(&t) {
                types.insert(t);
            } else if !dropped.iter().any(|(d, _)| *d == t) {
                let reason = not_covered(&level, &t);
                dropped.push((t, reason));
            }
        }
        if types.is_empty() && !dropped.is_empty() {
            let reasons: Vec<&str> = dropped.iter().map(|(_, reason)| reason.as_str()).collect();
            return Err(invalid("_type", format!("no requested type can be exported: {}", reasons.join("; "))));
        }
        let types = if raw.values("_type").next().is_some() { Some(types.into_iter().collect()) } else { None };

        let mut type_filters = Vec::new();
        let mut dropped_filters = Vec::new();
        for text in raw.values("_typeFilter").map(str::trim).filter(|q| !q.is_empty()) {
            let filtered = text.split_once('?').map_or(text, |(t, _)| t);
            if dropped.iter().any(|(t, _)| t.as_str() == filtered) {
                dropped_filters.push(format!("parameter '_typeFilter': '{text}' left out with its type {filtered}"));
                continue;
            }
            let filter = parse_type_filter(text, &level, types.as_deref(), &mut refuse)?;
            type_filters.push(filter);
        }
        warnings.extend(dropped.into_iter().map(|(_, reason)| format!("parameter '_type': {reason}; left out of this export")));
        warnings.extend(dropped_filters);

        Ok(Self {
            level,
            request_url,
            types,
            since,
            until,
            patients,
            elements,
            allow_partial_manifests,
            associated,
            container,
            handling,
            warnings,
            type_filters,
            organize_by_patient,
            anonymization,
        })
    }
}

/// Why a type requested in `_type` is not exported at this level.
fn not_covered(level: &ExportLevel, t: &ResourceType) -> String {
    match level {
        ExportLevel::Group { .. } => format!(
            "{t} is not in the Patient compartment; Group level exports cover Patient compartment types and the types their resources reference ({})",
            references::REFERENCED_TYPES.join(", ")
        ),
        _ => format!("{t} is not in the Patient compartment; Patient level exports cover Patient compartment types only"),
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
    if !level.covers(t) {
        let covered = match level {
            ExportLevel::Group { .. } => "Patient compartment types and the types their resources reference",
            _ => "Patient compartment types only",
        };
        return Err(invalid("_typeFilter", format!("'{text}' filters {t}, which this export does not cover ({covered})")));
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

/// The `patient` references (`Patient/id`), for Patient and Group level only. Whether each
/// patient exists (and is a Group member) is checked at kick-off, against the store.
fn parse_patients(
    level: &ExportLevel,
    raw: &RawParams,
    refuse: &mut impl FnMut(ExportError) -> Result<(), ExportError>,
) -> Result<Option<Vec<ResourceId>>, ExportError> {
    if raw.values("patient").next().is_none() {
        return Ok(None);
    }
    if !level.is_compartment() {
        refuse(invalid("patient", "applies to Patient and Group level exports only"))?;
        return Ok(None);
    }
    let mut patients = BTreeSet::new();
    for reference in raw.values("patient") {
        let id = reference.trim().strip_prefix("Patient/").and_then(ResourceId::parse);
        match id {
            Some(id) => {
                patients.insert(id);
            }
            None => refuse(invalid("patient", format!("'{reference}' is not a Patient reference (Patient/id)")))?,
        }
    }
    Ok(Some(patients.into_iter().collect()))
}

/// The `_elements` items; a malformed one is a 400 naming it, or (lenient) left out.
fn parse_elements(
    raw: &RawParams,
    refuse: &mut impl FnMut(ExportError) -> Result<(), ExportError>,
) -> Result<Option<Vec<ElementSpec>>, ExportError> {
    let mut specs = Vec::new();
    let mut any = false;
    for item in raw.values("_elements").filter(|i| !i.trim().is_empty()) {
        any = true;
        match ElementSpec::parse(item) {
            Ok(spec) if !specs.contains(&spec) => specs.push(spec),
            Ok(_) => {}
            Err(reason) => refuse(invalid("_elements", reason.to_string()))?,
        }
    }
    Ok((any && !specs.is_empty()).then_some(specs))
}

/// A refused parameter; shared with the other parameter parsers of the export (`deid`).
pub(super) fn invalid(name: &str, reason: impl Into<String>) -> ExportError {
    ExportError::InvalidParameter { name: name.to_owned(), reason: reason.into() }
}

pub(super) fn single<'a>(raw: &'a RawParams, name: &'a str) -> Result<Option<&'a str>, ExportError> {
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
            ("_until=soon", "_until"),
            ("_elements=name.given", "_elements"),
            ("_elements=Bogus.id", "_elements"),
            ("allowPartialManifests=yes", "allowPartialManifests"),
            ("includeAssociatedData=_custom", "includeAssociatedData"),
            ("_since=2024-02-01&_until=2024-01-01", "_since"),
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
            parse(ExportLevel::System, "_till=2024", Handling::Strict),
            Err(ExportError::UnsupportedParameter(n)) if n == "_till"
        ));
        let r = parse(ExportLevel::System, "_till=2024&foo=bar", Handling::Lenient).unwrap();
        assert_eq!(r.warnings.len(), 2);
        assert!(r.warnings.iter().any(|w| w.contains("_till")));
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
            ("_typeFilter=Observation%3Fdate%3D2020-01-01T%25C3%25A912345", "is not a FHIR date"),
            ("_typeFilter=Observation%3F_lastUpdated%3Dgt0000-01-01", "0001 to 9999"),
            ("_typeFilter=Observation%3Fcode%3Da%2500", "control character"),
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
    fn unknown_search_parameters_fail_strict_and_are_dropped_lenient() {
        let query = "_typeFilter=Patient%3Fstatus%3Dactive%26gender%3Dfemale";
        assert!(matches!(parse(ExportLevel::System, query, Handling::Strict), Err(ExportError::UnsupportedSearch(m)) if m.contains("'status'")));
        let r = parse(ExportLevel::System, query, Handling::Lenient).unwrap();
        assert_eq!(r.type_filters[0].conditions.len(), 1, "status is dropped, gender kept");
        assert_eq!(r.type_filters[0].conditions[0].name, "gender");
        assert!(r.warnings[0].contains("status") && r.warnings[0].contains("lenient"), "{:?}", r.warnings);
    }

    #[test]
    fn since_in_the_future_and_instants_outside_the_stored_years_are_refused() {
        for query in ["_since=2999-01-01T00:00:00Z", "_since=0000-01-01T00:00:00Z", "_until=0000-12-31"] {
            for handling in [Handling::Strict, Handling::Lenient] {
                match parse(ExportLevel::System, query, handling) {
                    Err(ExportError::InvalidParameter { name, .. }) => assert_eq!(name, query[..6].trim_end_matches('='), "{query}"),
                    other => panic!("{query}: {other:?}"),
                }
            }
        }
        let past = (Utc::now() - chrono::Duration::seconds(5)).to_rfc3339().replace('+', "%2B");
        assert!(parse(ExportLevel::System, &format!("_since={past}"), Handling::Strict).is_ok());
    }

    #[test]
    fn until_and_patient_parse() {
        let r = parse(ExportLevel::System, "_since=2024-01-01&_until=2024-01-01T00%3A00%3A01Z", Handling::Strict).unwrap();
        assert_eq!(r.until.unwrap() - r.since.unwrap(), chrono::Duration::seconds(1));
        let r = parse(ExportLevel::Patient, "patient=Patient/b&patient=Patient/a&patient=Patient/b", Handling::Strict).unwrap();
        let ids: Vec<String> = r.patients.unwrap().iter().map(|p| p.to_string()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(parse(ExportLevel::System, "patient=Patient/a", Handling::Strict).is_err());
        assert!(parse(ExportLevel::Patient, "patient=Observation/a", Handling::Strict).is_err());
        let r = parse(ExportLevel::Patient, "patient=Observation/a&patient=Patient/c", Handling::Lenient).unwrap();
        assert_eq!(r.patients.unwrap().len(), 1);
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn organize_output_by_patient_only_at_compartment_levels() {
        assert!(parse(ExportLevel::Patient, "organizeOutputBy=Patient", Handling::Strict).unwrap().organize_by_patient);
        assert!(!parse(ExportLevel::Patient, "", Handling::Strict).unwrap().organize_by_patient);
        for (level, query) in [(ExportLevel::System, "organizeOutputBy=Patient"), (ExportLevel::Patient, "organizeOutputBy=Practitioner")] {
            assert!(matches!(
                parse(level.clone(), query, Handling::Strict),
                Err(ExportError::InvalidParameter { name, .. }) if name == "organizeOutputBy"
            ));
            let r = parse(level, query, Handling::Lenient).unwrap();
            assert!(!r.organize_by_patient && r.warnings[0].contains("organizeOutputBy"));
        }
    }

    #[test]
    fn compartment_levels_keep_to_compartment_types() {
        assert!(parse(ExportLevel::Patient, "_type=Organization", Handling::Strict).is_err());
        assert!(parse(ExportLevel::Patient, "_type=Organization,Device", Handling::Lenient).is_err(), "nothing would remain");
        for handling in [Handling::Strict, Handling::Lenient] {
            let r = parse(ExportLevel::Patient, "_type=Organization,Observation&_typeFilter=Organization%3Fname%3Dx", handling).unwrap();
            assert_eq!(r.types.unwrap(), vec![ResourceType::parse("Observation").unwrap()]);
            assert!(r.type_filters.is_empty());
            assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
            assert!(r.warnings[0].contains("Organization is not in the Patient compartment"), "{:?}", r.warnings);
        }
        let r = parse(ExportLevel::Group { id: ResourceId::parse("g").unwrap() }, "_type=Device&_type=Patient", Handling::Strict).unwrap();
        assert_eq!(r.types.unwrap(), vec![ResourceType::parse("Patient").unwrap()]);
        assert!(r.warnings[0].contains("Device"));
    }
}
