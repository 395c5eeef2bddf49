//! Kick-off parameters as received, before validation: from a GET query string or a POST
//! `Parameters` body. This is the only place that knows the two wire forms.

use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::fhir::ResourceType;

/// List parameters whose items can never hold a comma: decoded first, then split on commas,
/// since Python's `urlencode` and JavaScript's `URLSearchParams` send `,` as `%2C`.
const LIST_PARAMS: [&str; 4] = ["_type", "_elements", "includeAssociatedData", "patient"];

/// `_typeFilter`: a list whose queries may hold commas (OR-ed values) of their own.
const TYPE_FILTER: &str = "_typeFilter";

/// Bounds on a kick-off's parameters: far above what clients send (a long `patient` list, a
/// `_typeFilter` OR-ing many codes), low enough that no value reaches SQL, a job row or a
/// warning at a size no one meant.
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// Values of one parameter, list items counted one by one.
pub const MAX_VALUES: usize = 10_000;
/// Different parameter names in one kick-off.
pub const MAX_NAMES: usize = 64;

/// Name/value pairs in request order, list values already split into one pair per item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawParams(pub Vec<(String, String)>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    #[error("the body must be a FHIR Parameters resource")]
    NotParameters,
    #[error("parameter entry {0} has no name")]
    MissingName(usize),
    #[error("parameter '{0}' has no value[x] this server understands")]
    MissingValue(String),
    #[error("the query string is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error("parameter '{name}' is given in the URL as '{url}' and in the body as '{body}'; give it once")]
    Conflict { name: String, url: String, body: String },
    #[error("parameter name '{0}' contains a control character (such as NUL), which no parameter may hold")]
    ControlCharacterInName(String),
    #[error("parameter '{0}': the value contains a control character (such as NUL), which no parameter value may hold")]
    ControlCharacterInValue(String),
    #[error("parameter name '{0}...' is longer than the {MAX_NAME_BYTES} bytes a name may have")]
    NameTooLong(String),
    #[error("parameter '{name}': a value of {bytes} bytes is longer than the {MAX_VALUE_BYTES} bytes a value may have")]
    ValueTooLong { name: String, bytes: usize },
    #[error("parameter '{name}' has {count} values (list items counted); at most {MAX_VALUES} are accepted")]
    TooManyValues { name: String, count: usize },
    #[error("the kick-off has more than {MAX_NAMES} different parameters (the last is '{0}')")]
    TooManyNames(String),
}

impl RawParams {
    /// Parses a query string. `_typeFilter` is split on literal commas before percent-decoding,
    /// so a comma inside a query arrives as `%2C` and stays inside it (Bulk Data); every other
    /// list is decoded, then split.
    pub fn from_query(query: &str) -> Result<Self, ParamsError> {
        let mut pairs = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode(raw_name)?;
            if name == TYPE_FILTER {
                for item in raw_value.split(',') {
                    pairs.extend(split_type_filters(decode(item)?).into_iter().map(|query| (name.clone(), query)));
                }
            } else if LIST_PARAMS.contains(&name.as_str()) {
                pairs.extend(decode(raw_value)?.split(',').map(|item| (name.clone(), item.to_owned())));
            } else {
                pairs.push((name, decode(raw_value)?));
            }
        }
        Self(pairs).checked()
    }

    /// Parses a `Parameters` body: one entry per value. `_type` may still hold a comma list;
    /// `_typeFilter` entries are one query each and are not split.
    pub fn from_parameters(body: &Value) -> Result<Self, ParamsError> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(ParamsError::NotParameters);
        }
        let mut pairs = Vec::new();
        let entries = body.get("parameter").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, entry) in entries.iter().enumerate() {
            let name = entry.get("name").and_then(Value::as_str).ok_or(ParamsError::MissingName(i))?;
            let value = parameter_value(entry).ok_or_else(|| ParamsError::MissingValue(name.to_owned()))?;
            if LIST_PARAMS.contains(&name) {
                pairs.extend(value.split(',').map(|item| (name.to_owned(), item.trim().to_owned())));
            } else {
                pairs.push((name.to_owned(), value));
            }
        }
        Self(pairs).checked()
    }

    /// The URL's and the body's parameters of one POST kick-off together. List parameters are
    /// joined; a single-valued one given in both must have the same value there.
    pub fn merge(url: Self, body: Self) -> Result<Self, ParamsError> {
        let mut pairs = url.0;
        for (name, value) in body.0 {
            let multi = name == TYPE_FILTER || LIST_PARAMS.contains(&name.as_str());
            if !multi && let Some((_, in_url)) = pairs.iter().find(|(n, _)| *n == name) {
                if *in_url != value {
                    return Err(ParamsError::Conflict { name, url: in_url.clone(), body: value });
                }
                continue;
            }
            pairs.push((name, value));
        }
        Self(pairs).checked()
    }

    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Refuses control characters in names and values: nothing in a kick-off needs them, and
    /// Postgres text cannot hold NUL (a lenient warning names an unknown parameter). Then the
    /// bounds on sizes and counts, so each refusal names the parameter.
    fn checked(self) -> Result<Self, ParamsError> {
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (name, value) in &self.0 {
            if name.chars().any(char::is_control) {
                return Err(ParamsError::ControlCharacterInName(name.escape_debug().to_string()));
            }
            if name.len() > MAX_NAME_BYTES {
                return Err(ParamsError::NameTooLong(name.chars().take(40).collect()));
            }
            if value.chars().any(char::is_control) {
                return Err(ParamsError::ControlCharacterInValue(name.clone()));
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(ParamsError::ValueTooLong { name: name.clone(), bytes: value.len() });
            }
            let count = counts.entry(name).or_default();
            *count += 1;
            if *count > MAX_VALUES {
                return Err(ParamsError::TooManyValues { name: name.clone(), count: self.values(name).count() });
            }
            if counts.len() > MAX_NAMES {
                return Err(ParamsError::TooManyNames(name.clone()));
            }
        }
        Ok(self)
    }
}

/// A decoded `_typeFilter` item whose queries were separated by `%2C` instead of a literal
/// comma: split when every piece starts with `Type?` of a known type; otherwise its commas
/// belong to the query (OR-ed values) and it stays whole.
fn split_type_filters(item: String) -> Vec<String> {
    let starts_query = |piece: &str| piece.split_once('?').is_some_and(|(t, _)| ResourceType::parse(t).is_some());
    if item.contains(',') && item.split(',').all(starts_query) {
        item.split(',').map(str::to_owned).collect()
    } else {
        vec![item]
    }
}

fn decode(raw: &str) -> Result<String, ParamsError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|s| s.into_owned()).map_err(|_| ParamsError::BadEncoding)
}

/// The value of a `Parameters.parameter` entry as text; references as their `reference`.
fn parameter_value(entry: &Value) -> Option<String> {
    let map = entry.as_object()?;
    map.iter().find(|(k, _)| k.starts_with("value")).and_then(|(k, v)| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) if k == "valueReference" => o.get("reference").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_splits_lists_before_decoding() {
        let p = RawParams::from_query("_type=Patient,Observation&_typeFilter=Observation%3Fcode%3Da%2Cb,Patient%3Fgender%3Dmale&_since=2020-01-01T00%3A00%3A00Z").unwrap();
        assert_eq!(p.values("_type").collect::<Vec<_>>(), vec!["Patient", "Observation"]);
        assert_eq!(p.values("_typeFilter").collect::<Vec<_>>(), vec!["Observation?code=a,b", "Patient?gender=male"]);
        assert_eq!(p.values("_since").collect::<Vec<_>>(), vec!["2020-01-01T00:00:00Z"]);
    }

    #[test]
    fn parameters_body_gives_one_pair_per_entry() {
        let body = json!({"resourceType":"Parameters","parameter":[
            {"name":"_type","valueString":"Patient,Observation"},
            {"name":"_typeFilter","valueString":"Observation?code=a,b"},
            {"name":"patient","valueReference":{"reference":"Patient/1"}}]});
        let p = RawParams::from_parameters(&body).unwrap();
        assert_eq!(p.values("_type").count(), 2);
        assert_eq!(p.values("_typeFilter").collect::<Vec<_>>(), vec!["Observation?code=a,b"]);
        assert_eq!(p.values("patient").collect::<Vec<_>>(), vec!["Patient/1"]);
        assert_eq!(RawParams::from_parameters(&json!({"resourceType":"Patient"})), Err(ParamsError::NotParameters));
    }

    #[test]
    fn encoded_commas_split_every_list_but_inside_type_filter_queries() {
        let p = RawParams::from_query(
            "_type=AllergyIntolerance%2CCondition&_elements=id%2Cmeta&includeAssociatedData=LatestProvenanceResources%2CRelevantProvenanceResources&patient=Patient%2Fa%2CPatient%2Fb",
        )
        .unwrap();
        assert_eq!(p.values("_type").collect::<Vec<_>>(), ["AllergyIntolerance", "Condition"]);
        assert_eq!(p.values("_elements").collect::<Vec<_>>(), ["id", "meta"]);
        assert_eq!(p.values("includeAssociatedData").count(), 2);
        assert_eq!(p.values("patient").collect::<Vec<_>>(), ["Patient/a", "Patient/b"]);
        // `%2C` between whole queries splits them; a `%2C` between OR-ed values does not.
        let p = RawParams::from_query("_typeFilter=Patient%3Fgender%3Dmale%2CObservation%3Fcode%3Da%2Cb").unwrap();
        // Ambiguous (the last piece is no query): left whole.
        assert_eq!(p.values("_typeFilter").collect::<Vec<_>>(), ["Patient?gender=male,Observation?code=a,b"]);
        let p = RawParams::from_query("_typeFilter=Patient%3Fgender%3Dmale%2CObservation%3Fcode%3Da").unwrap();
        assert_eq!(p.values("_typeFilter").collect::<Vec<_>>(), ["Patient?gender=male", "Observation?code=a"]);
        // smart-fetch: each query's own commas encoded once more, the queries joined by commas.
        let p = RawParams::from_query("_typeFilter=Observation%3Fstatus%3Dfinal%252Cpreliminary%2CPatient%3Fgender%3Dfemale").unwrap();
        assert_eq!(p.values("_typeFilter").collect::<Vec<_>>(), ["Observation?status=final%2Cpreliminary", "Patient?gender=female"]);
        let p = RawParams::from_query("_typeFilter=Observation%3Fcode%3Da%2Cb").unwrap();
        assert_eq!(p.values("_typeFilter").collect::<Vec<_>>(), ["Observation?code=a,b"]);
        // Other single values keep their commas.
        assert_eq!(RawParams::from_query("_container=a%2Cb").unwrap().values("_container").collect::<Vec<_>>(), ["a,b"]);
    }

    #[test]
    fn url_and_body_merge_and_conflicts_name_the_parameter() {
        let url = RawParams::from_query("_type=Patient&_since=2024-01-01&_outputFormat=ndjson").unwrap();
        let body = RawParams::from_parameters(&json!({"resourceType":"Parameters","parameter":[
            {"name":"_type","valueString":"Observation"},
            {"name":"_since","valueInstant":"2024-01-01"}]}))
        .unwrap();
        let merged = RawParams::merge(url.clone(), body).unwrap();
        assert_eq!(merged.values("_type").collect::<Vec<_>>(), ["Patient", "Observation"]);
        assert_eq!(merged.values("_since").count(), 1);
        let body = RawParams::from_parameters(&json!({"resourceType":"Parameters","parameter":[
            {"name":"_outputFormat","valueString":"application/fhir+ndjson"}]}))
        .unwrap();
        assert!(matches!(RawParams::merge(url, body), Err(ParamsError::Conflict { name, .. }) if name == "_outputFormat"));
    }

    #[test]
    fn control_characters_are_refused_in_names_and_values() {
        assert_eq!(RawParams::from_query("_type=Patient%00"), Err(ParamsError::ControlCharacterInValue("_type".into())));
        assert_eq!(RawParams::from_query("_typeFilter=Patient%3Fname%3D%01"), Err(ParamsError::ControlCharacterInValue("_typeFilter".into())));
        assert!(matches!(RawParams::from_query("fo%00o=1"), Err(ParamsError::ControlCharacterInName(n)) if n == "fo\\0o"));
        let body = json!({"resourceType":"Parameters","parameter":[{"name":"_since","valueString":"2024\u{0}"}]});
        assert_eq!(RawParams::from_parameters(&body), Err(ParamsError::ControlCharacterInValue("_since".into())));
    }

    #[test]
    fn oversized_names_values_and_lists_are_refused_naming_the_parameter() {
        let long = "a".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            RawParams::from_query(&format!("_container={long}")),
            Err(ParamsError::ValueTooLong { name: "_container".into(), bytes: MAX_VALUE_BYTES + 1 })
        );
        assert!(RawParams::from_query(&format!("_container={}", &long[1..])).is_ok(), "the bound itself is accepted");
        assert!(matches!(RawParams::from_query(&format!("{}=1", "n".repeat(MAX_NAME_BYTES + 1))), Err(ParamsError::NameTooLong(n)) if n.len() == 40));
        let patients = vec!["Patient/p"; MAX_VALUES + 1].join(",");
        assert_eq!(
            RawParams::from_query(&format!("patient={patients}")),
            Err(ParamsError::TooManyValues { name: "patient".into(), count: MAX_VALUES + 1 })
        );
        let names: Vec<String> = (0..=MAX_NAMES).map(|i| format!("p{i}=1")).collect();
        assert_eq!(RawParams::from_query(&names.join("&")), Err(ParamsError::TooManyNames(format!("p{MAX_NAMES}"))));
        // The URL and the body of one POST are bounded together.
        let half = RawParams(vec![("patient".into(), "Patient/p".into()); MAX_VALUES / 2 + 1]);
        assert!(matches!(RawParams::merge(half.clone(), half), Err(ParamsError::TooManyValues { name, .. }) if name == "patient"));
    }
}
