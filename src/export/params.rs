//! Kick-off parameters as received, before validation: from a GET query string or a POST
//! `Parameters` body. This is the only place that knows the two wire forms.

use percent_encoding::percent_decode_str;
use serde_json::Value;

/// Parameters whose values are comma-separated lists.
const LIST_PARAMS: [&str; 4] = ["_type", "_typeFilter", "_elements", "includeAssociatedData"];

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
}

impl RawParams {
    /// Parses a query string. List values are split on literal commas before percent-decoding,
    /// so a comma inside a value arrives as `%2C` and stays inside it (Bulk Data `_typeFilter`).
    pub fn from_query(query: &str) -> Result<Self, ParamsError> {
        let mut pairs = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
            let name = decode(raw_name)?;
            if LIST_PARAMS.contains(&name.as_str()) {
                for item in raw_value.split(',') {
                    pairs.push((name.clone(), decode(item)?));
                }
            } else {
                pairs.push((name, decode(raw_value)?));
            }
        }
        Ok(Self(pairs))
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
            if name != "_typeFilter" && LIST_PARAMS.contains(&name) {
                pairs.extend(value.split(',').map(|item| (name.to_owned(), item.trim().to_owned())));
            } else {
                pairs.push((name.to_owned(), value));
            }
        }
        Ok(Self(pairs))
    }

    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
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
}
