//! Runs a compiled filter on a resource: evaluates each condition's expression, reads the values
//! it finds as the parameter's search type, and compares them as R4 search defines.

use serde_json::Value;
use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

use super::{
    fhirpath::{evaluate, referenced_type, Item},
    query::{CompiledCondition, CompiledFilter, Prefix, QuantityValue, ReferenceValue, StringMode, Test, TokenValue},
    ranges::{now_micros, parse_date, DateRange, Decimal},
};
use crate::fhir::ResourceType;

impl CompiledFilter {
    /// True when the resource meets every condition.
    pub fn matches(&self, resource: &Value) -> bool {
        self.conditions.iter().all(|c| c.matches(resource, &self.resource_type))
    }
}

impl CompiledCondition {
    fn matches(&self, resource: &Value, t: &ResourceType) -> bool {
        let items = evaluate(self.expression, resource, t);
        match &self.test {
            Test::Missing(missing) => items.is_empty() == *missing,
            Test::Token { values, negate } => {
                let tokens = tokens(&items);
                values.iter().any(|v| tokens.iter().any(|t| token_matches(v, t))) != *negate
            }
            Test::TokenText(values) => {
                let texts: Vec<String> = token_texts(&items).iter().map(|s| normalize(s)).collect();
                values.iter().any(|v| {
                    let v = normalize(v);
                    texts.iter().any(|t| t.starts_with(&v))
                })
            }
            Test::String { mode, values } => {
                let strings = strings(&items);
                values.iter().any(|v| strings.iter().any(|s| string_matches(*mode, s, v)))
            }
            Test::Date(values) => {
                let ranges: Vec<DateRange> = items.iter().filter_map(date_range).collect();
                values.iter().any(|(prefix, p)| ranges.iter().any(|r| date_matches(*prefix, p, r)))
            }
            Test::Number(values) => {
                let numbers: Vec<(f64, f64)> = items.iter().filter_map(number_range).collect();
                values.iter().any(|(prefix, p)| numbers.iter().any(|r| number_matches(*prefix, p, *r)))
            }
            Test::Quantity(values) => {
                let quantities: Vec<Quantity> = items.iter().flat_map(quantities).collect();
                values.iter().any(|v| quantities.iter().any(|q| quantity_matches(v, q)))
            }
            Test::Reference(values) => {
                let refs: Vec<&str> = items.iter().filter_map(reference_text).collect();
                values.iter().any(|v| refs.iter().any(|r| reference_matches(v, r)))
            }
            Test::Uri(values) => {
                let uris: Vec<&str> = items.iter().filter_map(|i| i.value.as_str()).collect();
                values.iter().any(|v| uris.contains(&v.as_str()))
            }
        }
    }
}

// ------------------------------------------------------------------------------------ token

struct Token<'a> {
    /// None: the value has no system (a plain code, a boolean, a ContactPoint).
    system: Option<&'a str>,
    code: String,
}

const CONTACT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

/// Token values of each item: Coding, CodeableConcept, Identifier, ContactPoint, code, boolean.
fn tokens<'a>(items: &'a [Item<'a>]) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    for item in items {
        match item.value.as_ref() {
            Value::String(s) => out.push(Token { system: None, code: s.clone() }),
            Value::Bool(b) => out.push(Token { system: None, code: b.to_string() }),
            Value::Object(map) => {
                if let Some(codings) = map.get("coding").and_then(Value::as_array) {
                    out.extend(codings.iter().filter_map(coding));
                } else if map.contains_key("code") {
                    out.extend(coding(item.value.as_ref()));
                } else if let Some(value) = map.get("value").and_then(Value::as_str) {
                    let system = map.get("system").and_then(Value::as_str);
                    // A ContactPoint's system is a kind of contact, not a namespace for its value.
                    let contact = item.is_type("ContactPoint") || system.is_some_and(|s| CONTACT_SYSTEMS.contains(&s));
                    out.push(Token { system: if contact { None } else { system }, code: value.to_owned() });
                }
            }
            _ => {}
        }
    }
    out
}

fn coding(value: &Value) -> Option<Token<'_>> {
    Some(Token { system: value.get("system").and_then(Value::as_str), code: value.get("code")?.as_str()?.to_owned() })
}

fn token_matches(wanted: &TokenValue, token: &Token) -> bool {
    match wanted {
        TokenValue::Code(code) => &token.code == code,
        TokenValue::SystemCode(system, code) if system.is_empty() => token.system.is_none() && &token.code == code,
        TokenValue::SystemCode(system, code) => token.system == Some(system.as_str()) && &token.code == code,
        TokenValue::System(system) => token.system == Some(system.as_str()),
    }
}

/// The texts `:text` searches: CodeableConcept.text, Coding.display, Identifier.type.text.
fn token_texts(items: &[Item]) -> Vec<String> {
    let mut out = Vec::new();
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    for item in items {
        let v = item.value.as_ref();
        out.extend(text(v, "text"));
        out.extend(text(v, "display"));
        if let Some(codings) = v.get("coding").and_then(Value::as_array) {
            out.extend(codings.iter().filter_map(|c| text(c, "display")));
        }
        if let Some(ty) = v.get("type") {
            out.extend(text(ty, "text"));
        }
    }
    out
}

// ----------------------------------------------------------------------------------- string

/// Strings of each item: a string, or the parts of a HumanName or an Address.
fn strings(items: &[Item]) -> Vec<String> {
    const PARTS: [&str; 11] = ["family", "given", "prefix", "suffix", "text", "line", "city", "district", "state", "postalCode", "country"];
    let mut out = Vec::new();
    for item in items {
        match item.value.as_ref() {
            Value::String(s) => out.push(s.clone()),
            Value::Object(map) => {
                for part in PARTS {
                    match map.get(part) {
                        Some(Value::String(s)) => out.push(s.clone()),
                        Some(Value::Array(values)) => out.extend(values.iter().filter_map(Value::as_str).map(str::to_owned)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Case- and accent-insensitive form: decomposed, combining marks dropped, lower case.
fn normalize(s: &str) -> String {
    s.nfd().filter(|c| !is_combining_mark(*c)).collect::<String>().to_lowercase()
}

fn string_matches(mode: StringMode, value: &str, wanted: &str) -> bool {
    match mode {
        StringMode::Exact => value == wanted,
        StringMode::StartsWith => normalize(value).starts_with(&normalize(wanted)),
        StringMode::Contains => normalize(value).contains(&normalize(wanted)),
    }
}

// ------------------------------------------------------------------------------------- date

/// The range an item covers: a date, dateTime or instant; a Period; a Timing's outer limits.
fn date_range(item: &Item) -> Option<DateRange> {
    let value = item.value.as_ref();
    match value {
        Value::String(s) => parse_date(s),
        Value::Object(map) if map.contains_key("start") || map.contains_key("end") => period(value),
        Value::Object(map) if map.contains_key("event") || map.contains_key("repeat") => {
            let mut ranges: Vec<DateRange> = map
                .get("event")
                .and_then(Value::as_array)
                .map(|events| events.iter().filter_map(Value::as_str).filter_map(parse_date).collect())
                .unwrap_or_default();
            ranges.extend(value.pointer("/repeat/boundsPeriod").and_then(period));
            let low = ranges.iter().map(|r| r.low).min()?;
            let high = ranges.iter().map(|r| r.high).max()?;
            Some(DateRange { low, high })
        }
        _ => None,
    }
}

fn period(value: &Value) -> Option<DateRange> {
    let bound = |key: &str| value.get(key).and_then(Value::as_str).map(parse_date);
    let low = match bound("start") {
        Some(range) => range?.low,
        None => DateRange::UNBOUNDED_LOW,
    };
    let high = match bound("end") {
        Some(range) => range?.high,
        None => DateRange::UNBOUNDED_HIGH,
    };
    Some(DateRange { low, high })
}

/// R4 search, "prefixes": `p` is the parameter's range, `r` the resource value's.
fn date_matches(prefix: Prefix, p: &DateRange, r: &DateRange) -> bool {
    let eq = p.low <= r.low && r.high <= p.high;
    match prefix {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Gt => r.high > p.high,
        Prefix::Lt => r.low < p.low,
        Prefix::Ge => r.high > p.high || eq,
        Prefix::Le => r.low < p.low || eq,
        Prefix::Sa => r.low >= p.high,
        Prefix::Eb => r.high <= p.low,
        Prefix::Ap => {
            // The spec leaves "approximately" to the server; as it suggests, 10% of the gap
            // between the value and now, on each side.
            let slack = (now_micros().saturating_sub(p.low)).unsigned_abs() / 10;
            let slack = i64::try_from(slack).unwrap_or(i64::MAX);
            r.low < p.high.saturating_add(slack) && r.high > p.low.saturating_sub(slack)
        }
    }
}

// ------------------------------------------------------------------------- number, quantity

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// A number as `[v, v]`, a Range by its bounds (a missing bound is unbounded).
fn number_range(item: &Item) -> Option<(f64, f64)> {
    let v = item.value.as_ref();
    if let Some(n) = number(v) {
        return Some((n, n));
    }
    let bound = |key: &str| v.get(key).map(|q| q.get("value").and_then(number));
    match (bound("low"), bound("high")) {
        (None, None) => None,
        (low, high) => Some((low.flatten().unwrap_or(f64::NEG_INFINITY), high.flatten().unwrap_or(f64::INFINITY))),
    }
}

/// `r` is the resource's value as a closed range (a number is `[v, v]`, a Range its bounds).
fn number_matches(prefix: Prefix, p: &Decimal, (low, high): (f64, f64)) -> bool {
    match prefix {
        Prefix::Eq => p.low <= low && high < p.high,
        Prefix::Ne => !(p.low <= low && high < p.high),
        Prefix::Gt => high > p.value,
        Prefix::Lt => low < p.value,
        Prefix::Ge => high >= p.value,
        Prefix::Le => low <= p.value,
        Prefix::Sa => low > p.value,
        Prefix::Eb => high < p.value,
        Prefix::Ap => {
            let slack = p.value.abs() / 10.0;
            low <= p.value + slack && high >= p.value - slack
        }
    }
}

struct Quantity<'a> {
    low: f64,
    high: f64,
    system: Option<&'a str>,
    code: Option<&'a str>,
    unit: Option<&'a str>,
}

/// A Quantity (or Age, Duration, Money ...) as a point, a Range as its bounds.
fn quantities<'a>(item: &'a Item<'a>) -> Vec<Quantity<'a>> {
    let v = item.value.as_ref();
    let unit = |q: &'a Value| Quantity {
        low: f64::NEG_INFINITY,
        high: f64::INFINITY,
        system: q.get("system").and_then(Value::as_str),
        code: q.get("code").and_then(Value::as_str).or_else(|| q.get("currency").and_then(Value::as_str)),
        unit: q.get("unit").and_then(Value::as_str),
    };
    if let Some(n) = v.get("value").and_then(number) {
        return vec![Quantity { low: n, high: n, ..unit(v) }];
    }
    let (low, high) = (v.get("low"), v.get("high"));
    if low.is_none() && high.is_none() {
        return Vec::new();
    }
    let side = low.or(high).expect("one is present");
    vec![Quantity {
        low: low.and_then(|q| q.get("value")).and_then(number).unwrap_or(f64::NEG_INFINITY),
        high: high.and_then(|q| q.get("value")).and_then(number).unwrap_or(f64::INFINITY),
        ..unit(side)
    }]
}

fn quantity_matches(wanted: &QuantityValue, q: &Quantity) -> bool {
    let system_ok = wanted.system.as_deref().is_none_or(|s| q.system == Some(s));
    let code_ok = wanted.code.as_deref().is_none_or(|c| {
        // Without a system the code may name the unit as written (R4 search, quantity).
        q.code == Some(c) || (wanted.system.is_none() && q.unit == Some(c))
    });
    system_ok && code_ok && number_matches(wanted.prefix, &wanted.number, (q.low, q.high))
}

// -------------------------------------------------------------------------------- reference

/// A Reference's `reference`, or a canonical or uri value.
fn reference_text<'a>(item: &'a Item<'a>) -> Option<&'a str> {
    match item.value.as_ref() {
        Value::String(s) => Some(s.as_str()),
        v => v.get("reference").and_then(Value::as_str),
    }
}

fn reference_matches(wanted: &ReferenceValue, reference: &str) -> bool {
    let reference = reference.split("/_history/").next().unwrap_or(reference);
    match wanted {
        ReferenceValue::Absolute(url) => reference == url,
        ReferenceValue::Typed(ty, id) => {
            reference.split_once('/').is_some_and(|(t, i)| t == ty && i == id)
        }
        ReferenceValue::Id(id) => {
            referenced_type(reference).is_some() && reference.rsplit('/').next() == Some(id.as_str()) && !reference.contains("://")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_accents() {
        assert_eq!(normalize("Zoë ÉLAN"), "zoe elan");
        assert!(string_matches(StringMode::StartsWith, "Gonçalves", "GONCA"));
        assert!(!string_matches(StringMode::Exact, "Gonçalves", "goncalves"));
        assert!(string_matches(StringMode::Contains, "Gonçalves", "ALV"));
    }
}
