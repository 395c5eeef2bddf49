//! Property tests of the FHIR parsers a request or a stored resource reaches (issue 17):
//! resources, Bundles, `_typeFilter` queries and the FHIRPath they compile to. Whatever the input,
//! each answers Ok or an error that names the problem, and never panics. Instants, dates and
//! ranges have their own properties beside their parsers.

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::validation::Validation;

use super::{
    bundle::{self, BundleError, EntryOp},
    search::{fhirpath, FilterError, Narrowing, TypeFilter},
    types::ResourceId,
    Resource, ResourceError, ResourceType,
};

/// Few cases per property, so the whole set runs in seconds; `PROPTEST_CASES` asks for more.
pub(crate) fn config() -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { defaults.cases } else { 256 };
    ProptestConfig { cases, failure_persistence: None, ..defaults }
}

/// Text as careless clients and data feeds send it: any characters, the separators and escapes
/// the parsers split on, and date-like strings with a stray multi-byte character.
pub(crate) fn messy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        "[a-zA-Z0-9 ,|$%:/?=&.+\\\\-]{0,16}",
        "(ge|le|gt|lt|eq|ne|sa|eb|ap)?[0-9]{0,4}(-[0-9]{1,2}){0,2}(T[0-9:.é]{0,12})?(Z|[+-][0-9:]{0,5})?",
        "(urn:uuid:|http://x/fhir/)?(Patient|Group|Observation)?/?[a-z0-9é.]{0,6}(/_history/[0-9]{0,2})?",
        "-?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{0,4})?",
    ]
}

/// JSON keys: FHIR element names (choice elements with their suffixes) and garbage.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "resourceType", "id", "meta", "lastUpdated", "versionId", "reference", "subject", "patient",
            "code", "coding", "system", "value", "valueQuantity", "valueString", "valueDateTime", "valuePeriod",
            "effectiveDateTime", "effectivePeriod", "effectiveInstant", "start", "end", "status", "category",
            "name", "family", "given", "text", "birthDate", "date", "unit", "low", "high", "identifier",
            "fullUrl", "request", "method", "url", "resource", "entry", "type", "member", "entity", "target",
        ])
        .prop_map(str::to_owned),
        1 => messy_text(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Decimals and extremes whose text reads back exactly (serde_json's float reading is not
        // exact for every double, which would only test serde_json).
        (any::<i32>(), 0..6i32).prop_map(|(m, e)| json!(f64::from(m) / 10f64.powi(e))),
        prop::sample::select(vec![1e300, -1e-300, 5e-324, f64::MAX, f64::MIN_POSITIVE]).prop_map(|f| json!(f)),
        messy_text().prop_map(Value::String),
    ]
}

/// Any JSON, shallow enough to stay fast.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn type_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["Patient", "Observation", "Condition", "Encounter", "Group", "Provenance", "Bundle"])
            .prop_map(str::to_owned),
        1 => messy_text(),
    ]
}

/// Objects shaped like resources: a type, usually a valid id, and any other elements.
pub(crate) fn resource_like() -> impl Strategy<Value = Value> {
    let id = prop_oneof![3 => "[A-Za-z0-9.-]{1,8}".prop_map(Value::String), 1 => leaf()];
    (type_name(), prop::option::of(id), prop::collection::vec((key(), any_json()), 0..8)).prop_map(|(t, id, rest)| {
        let mut map: Map<String, Value> = rest.into_iter().collect();
        map.insert("resourceType".into(), Value::String(t));
        if let Some(id) = id {
            map.insert("id".into(), id);
        }
        Value::Object(map)
    })
}

/// A search parameter of the R4 table: its code, the types it applies to, its search type.
#[derive(Debug, Clone, serde::Deserialize)]
struct Param {
    code: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    search_type: String,
    expression: Option<String>,
}

static PARAMS: LazyLock<Vec<Param>> = LazyLock::new(|| {
    let all: Vec<Param> = serde_json::from_str(include_str!("data/search-parameters.json")).expect("the table is JSON");
    let types = ["Resource", "DomainResource", "Patient", "Observation", "Condition", "Encounter", "Group", "Provenance"];
    all.into_iter().filter(|p| p.base.iter().any(|b| types.contains(&b.as_str()))).collect()
});

/// A value of the kind a search type takes, or garbage.
fn search_value(search_type: &str) -> BoxedStrategy<String> {
    let fitting = match search_type {
        "date" => "(ge|le|gt|lt|eq|ne|sa|eb|ap)?[0-9]{4}(-[01][0-9](-[0-3][0-9](T[0-2][0-9]:[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?)?(Z|[+-][01][0-9]:[0-5][0-9])?)?)?)?",
        "number" | "quantity" => "(ge|le|gt|lt|eq|ne|sa|eb|ap)?-?[0-9]{1,6}(\\.[0-9]{1,6})?(e[+-]?[0-9]{1,3})?(\\|[a-z:/.]{0,8}\\|[a-zA-Z/]{0,4})?",
        "reference" => "(Patient/|Group/|http://x/fhir/Patient/|urn:uuid:)?[a-z0-9]{1,6}",
        _ => "[a-z:/.]{0,8}\\|?[a-zA-Z0-9-]{1,8}",
    };
    prop_oneof![6 => fitting.prop_map(|s| s), 1 => messy_text()].boxed()
}

/// A `_typeFilter` query of real parameters of a few types, with modifiers and OR-ed values;
/// and the element names its parameters' expressions reach, to build resources from.
fn type_filter_query() -> impl Strategy<Value = (String, Vec<String>)> {
    let t = prop::sample::select(vec!["Patient", "Observation", "Condition", "Encounter", "Group", "Provenance"]);
    t.prop_flat_map(|t| {
        let params: Vec<Param> =
            PARAMS.iter().filter(|p| p.base.iter().any(|b| [t, "Resource", "DomainResource"].contains(&b.as_str()))).cloned().collect();
        // Dates weighted up: stored dates are the most varied text a filter reads.
        let dates: Vec<Param> = params.iter().filter(|p| p.search_type == "date").cloned().collect();
        let condition = prop_oneof![prop::sample::select(params), prop::sample::select(dates)].prop_flat_map(|p| {
            let modifier = prop::option::weighted(
                0.2,
                prop::sample::select(vec!["missing", "not", "text", "exact", "contains", "Patient", "below", "bogus", ""]),
            );
            (Just(p.code), Just(p.expression.unwrap_or_default()), modifier, prop::collection::vec(search_value(&p.search_type), 1..3))
        });
        (Just(t), prop::collection::vec(condition, 0..3))
    })
    .prop_map(|(t, conditions)| {
        let mut vocabulary = element_names("", t);
        let parts: Vec<String> = conditions
            .into_iter()
            .map(|(code, expression, modifier, values)| {
                vocabulary.extend(element_names(&expression, t));
                let name = modifier.map_or(code.clone(), |m| format!("{code}:{m}"));
                let encoded: Vec<String> = values.iter().map(|v| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()).collect();
                format!("{name}={}", encoded.join(","))
            })
            .collect();
        (format!("{t}?{}", parts.join("&")), vocabulary)
    })
}

/// The element names a FHIRPath expression may reach: its lower-case names, choice elements
/// with each suffix, and the members of the data types search reads.
fn element_names(expression: &str, t: &str) -> Vec<String> {
    const SUFFIXES: [&str; 12] =
        ["", "DateTime", "Period", "Instant", "Date", "Quantity", "String", "Reference", "CodeableConcept", "Range", "Timing", "Decimal"];
    const MEMBERS: [&str; 16] = [
        "start", "end", "event", "value", "system", "code", "coding", "reference", "text", "unit", "low", "high",
        "family", "given", "display", "lastUpdated",
    ];
    let mut names: Vec<String> = MEMBERS.iter().map(|m| m.to_string()).collect();
    // Only the branches of a shared parameter that apply to this type.
    let branches = expression.split('|').map(str::trim).filter(|b| !b.starts_with(|c: char| c.is_ascii_uppercase()) || b.starts_with(&format!("{t}.")) || b.starts_with("Resource."));
    let words: Vec<&str> = branches.flat_map(|b| b.split(|c: char| !c.is_ascii_alphanumeric())).collect();
    for word in words.into_iter().filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase())) {
        names.extend(SUFFIXES.iter().map(|s| format!("{word}{s}")));
    }
    names
}

/// JSON under the given element names, its leaves the values search reads and garbage.
fn stored_value(names: Vec<String>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        // `é` in the time part: `2020-01-01Té12345` once panicked in ranges.rs split_zone
        // (issue 17); this property found it.
        2 => "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9:.Z+é-]{0,14})?)?)?".prop_map(Value::String),
        1 => leaf(),
        1 => search_value("reference").prop_map(Value::String),
    ];
    let names = prop::sample::select(names);
    leaf.prop_recursive(4, 32, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((names.clone(), inner), 1..5).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Every validation setting: parsing must be total under each.
fn validations() -> impl Strategy<Value = Validation> {
    prop_oneof![Just(Validation::Strict), Just(Validation::AllowUnknownElements), Just(Validation::Off)]
}

proptest! {
    #![proptest_config(config())]

    /// Resource parsing is total, and the fast path (text copied) and the general one (a JSON
    /// tree) store the same resource, however the JSON is spaced.
    #[test]
    fn resources_parse_or_say_why_and_both_paths_agree(value in resource_like(), pretty in any::<bool>(), validation in validations()) {
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { value.to_string() };
        let parsed = Resource::parse(text.as_bytes(), validation);
        let general = Resource::from_value(serde_json::from_str(&text).unwrap(), validation);
        match (&parsed, &general) {
            (Ok(fast), Ok(slow)) => {
                let now = chrono::Utc::now();
                let rendered: Value = serde_json::from_str(&fast.render(1, now)).expect("rendered text is JSON");
                prop_assert_eq!(&rendered["meta"]["versionId"], &json!("1"));
                prop_assert_eq!(rendered, serde_json::from_str::<Value>(&slow.render(1, now)).unwrap());
                prop_assert_eq!(fast.compartment_patients(), slow.compartment_patients());
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a, b);
                prop_assert!(!a.to_string().is_empty());
            }
            _ => prop_assert!(false, "the two paths disagree: {:?} / {:?}", parsed.map(|r| r.id), general.map(|r| r.id)),
        }
    }

    /// Arbitrary bytes: never a panic, and garbage is reported as JSON trouble.
    #[test]
    fn resource_bytes_parse_or_say_why(bytes in prop::collection::vec(any::<u8>(), 0..64), validation in validations()) {
        if let Err(e) = Resource::parse(&bytes, validation) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// PUT and POST bodies: the URL's type and id win or the mismatch is named.
    #[test]
    fn update_and_create_bodies_are_checked_against_the_url(value in prop_oneof![resource_like(), any_json()], validation in validations()) {
        let t = ResourceType::parse("Observation").unwrap();
        let id = ResourceId::parse("u1").unwrap();
        match Resource::for_update(value.clone(), &t, &id, validation) {
            Ok(r) => prop_assert!(r.resource_type == t && r.id == id),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if let Ok(r) = Resource::for_create(value, Some(&t), id.clone(), validation) {
            prop_assert_eq!(&r.to_value()["id"], &json!("u1"));
        }
    }

    /// Bundles of any shape: read or refused as a whole with a reason; each entry an operation
    /// or a reason that names the entry.
    #[test]
    fn bundles_read_or_say_why(bundle in bundle_like(), validation in validations()) {
        match bundle::read(bundle, validation) {
            Ok(request) => {
                for (i, entry) in request.entries.iter().enumerate() {
                    match entry {
                        Ok(EntryOp::Save { resource, .. }) => prop_assert!(serde_json::from_str::<Value>(&resource.render(1, chrono::Utc::now())).is_ok()),
                        Ok(EntryOp::Delete { .. }) => {}
                        Err(reason) => prop_assert!(reason.index == i && reason.to_string().starts_with(&format!("entry {i}: ")), "{}", reason),
                    }
                }
            }
            Err(BundleError::Resource(e)) => prop_assert!(matches!(e, ResourceError::NotAnObject | ResourceError::MissingResourceType)),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Any text as a `_typeFilter` query: parsed and compiled, or refused with a reason.
    #[test]
    fn type_filter_text_parses_or_says_why(text in prop_oneof![messy_text(), "(Observation|Patient)\\?.{0,30}"]) {
        match TypeFilter::parse(&text) {
            Ok(filter) => {
                if let Err(FilterError::Invalid(m) | FilterError::Unsupported(m)) = filter.compile() {
                    prop_assert!(m.starts_with(&format!("{}?", filter.resource_type)), "{}", m);
                }
            }
            Err(FilterError::Invalid(m) | FilterError::Unsupported(m)) => prop_assert!(!m.is_empty()),
        }
    }

    /// Real parameters with fitting and unfitting values: a compiled filter runs on any stored
    /// resource of its type, whatever the elements its expression reaches hold, and its store
    /// narrowing is built.
    #[test]
    fn compiled_filters_run_on_any_stored_resource((query, bodies) in type_filter_query().prop_flat_map(|(query, vocabulary)| {
        let body = prop::collection::vec((prop::sample::select(vocabulary.clone()), stored_value(vocabulary)), 1..6);
        (Just(query), prop::collection::vec(body.prop_map(|pairs| Value::Object(pairs.into_iter().collect())), 1..4))
    })) {
        let Ok(mut filter) = TypeFilter::parse(&query) else { return Ok(()) };
        // As a lenient kick-off does: the conditions that compile alone are kept, and compile together.
        let t = filter.resource_type.clone();
        filter.conditions.retain(|c| TypeFilter { resource_type: t.clone(), conditions: vec![c.clone()] }.compile().is_ok());
        let compiled = filter.compile().expect("conditions that compile alone compile together");
        let _ = Narrowing::for_filters(std::slice::from_ref(&compiled));
        for body in bodies {
            let mut resource = match body { Value::Object(map) => map, other => Map::from_iter([("value".to_owned(), other)]) };
            resource.insert("resourceType".into(), Value::String(filter.resource_type.to_string()));
            let _ = compiled.matches(&Value::Object(resource));
        }
    }

    /// FHIRPath: any text parses or is refused, and any parsed expression evaluates on any JSON.
    #[test]
    fn fhirpath_parses_or_says_why_and_evaluates_on_anything(
        text in prop_oneof![
            "[a-zA-Z. ()\\[\\]|=!,'`0-9]{0,40}",
            "(Observation|Patient)\\.[a-z]{1,8}(\\.(where|ofType|exists|first|resolve|not|empty)\\([a-zA-Z '=]{0,12}\\))?( (is|as|and|or|\\|) [a-zA-Z.]{1,10})?",
            ".{0,20}",
        ],
        resource in any_json(),
    ) {
        let observation = ResourceType::parse("Observation").unwrap();
        match fhirpath::parse(&text) {
            Ok(expr) => {
                let _ = fhirpath::evaluate(&expr, &resource, &observation);
            }
            Err(reason) => prop_assert!(!reason.0.is_empty()),
        }
    }
}

/// Bundles: sometimes a proper batch or transaction whose entries use `urn:uuid:` aliases,
/// sometimes any JSON.
fn bundle_like() -> impl Strategy<Value = Value> {
    let entry = (
        prop::option::of(prop_oneof!["urn:uuid:alias-[0-9]".prop_map(Value::String), leaf()]),
        prop::sample::select(vec!["PUT", "POST", "DELETE", "GET", ""]),
        prop_oneof![
            "(Patient|Observation|Bogus)(/[a-z0-9é]{0,4}){0,2}(\\?x=1)?".prop_map(Value::String),
            leaf()
        ],
        prop_oneof![resource_like(), any_json()],
        "urn:uuid:alias-[0-9]",
    )
        .prop_map(|(full_url, method, url, mut resource, alias)| {
            if let Value::Object(map) = &mut resource {
                map.insert("subject".into(), json!({"reference": alias}));
            }
            let mut entry = json!({"request": {"method": method, "url": url}, "resource": resource});
            if let Some(full_url) = full_url {
                entry["fullUrl"] = full_url;
            }
            entry
        });
    prop_oneof![
        3 => (prop::sample::select(vec!["transaction", "batch", "collection"]), prop::collection::vec(prop_oneof![4 => entry, 1 => any_json()], 0..5))
            .prop_map(|(kind, entries)| json!({"resourceType": "Bundle", "type": kind, "entry": entries})),
        1 => any_json(),
    ]
}


