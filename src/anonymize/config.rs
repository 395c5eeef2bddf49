//! The configuration file: parsing and the reference engine's validation (its configuration
//! validator and each method's settings validator), plus what this server adds: every FHIRPath
//! compiled at load, unknown methods and parameters refused. Errors name the rule and never
//! quote a key.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::ConfigError;
use crate::fhir::fhirpath::{self, Expr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingErrors {
    Raise,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateShiftScope {
    Resource,
    File,
    Folder,
}

/// The `parameters` section, with the reference engine's defaults filled in.
#[derive(Clone)]
pub struct Parameters {
    pub date_shift_key: String,
    pub date_shift_scope: DateShiftScope,
    pub date_shift_fixed_offset_in_days: Option<i32>,
    pub crypto_hash_key: String,
    pub encrypt_key: String,
    pub partial_ages: bool,
    pub partial_dates: bool,
    pub partial_zip_codes: bool,
    pub restricted_zip_codes: Vec<String>,
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameters")
            .field("date_shift_scope", &self.date_shift_scope)
            .field("date_shift_fixed_offset_in_days", &self.date_shift_fixed_offset_in_days)
            .field("partial_ages", &self.partial_ages)
            .field("partial_dates", &self.partial_dates)
            .field("partial_zip_codes", &self.partial_zip_codes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Perturb {
    pub span: f64,
    pub proportional: bool,
    pub round_to: u32,
}

#[derive(Debug, Clone)]
pub struct Generalize {
    /// (condition over `$this`, replacement expression), in the file's order.
    pub cases: Vec<(Expr, Expr)>,
    pub keep_other_values: bool,
}

#[derive(Debug, Clone)]
pub enum Method {
    Keep,
    Redact,
    DateShift,
    CryptoHash,
    Encrypt,
    /// `replaceWith`: a string for primitives, a JSON object (or null) for complex nodes.
    Substitute(Value),
    Perturb(Perturb),
    Generalize(Generalize),
}

/// How a rule finds its nodes (the reference engine's three cases).
#[derive(Debug, Clone)]
pub enum Selector {
    /// `nodesByType('T')` or `nodesByType('T').member`: from the per-resource lookup.
    ByType(String, Option<String>),
    /// `nodesByName('n')` or `nodesByName('n').member`.
    ByName(String, Option<String>),
    /// The path is only a resource type (`Patient`, `Resource`): the resource itself.
    Resource,
    /// Any other path: its expression after the leading type, on the resource.
    Expression(Expr),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub path: String,
    /// The leading type name (`Patient` in `Patient.name`), empty when the path has none.
    pub resource_type: String,
    pub selector: Selector,
    pub method: Method,
}

#[derive(Debug)]
pub struct Config {
    pub processing_errors: ProcessingErrors,
    pub rules: Vec<Rule>,
    pub parameters: Parameters,
}

/// One random key per process where a file leaves `cryptoHashKey` or `encryptKey` empty, as the
/// reference engine does (so two engines of one process hash alike).
static DEFAULT_KEY: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

const TOP_LEVEL: [&str; 4] = ["fhirVersion", "processingErrors", "fhirPathRules", "parameters"];
const PARAMETERS: [&str; 10] = [
    "dateShiftKey",
    "dateShiftScope",
    "dateShiftFixedOffsetInDays",
    "cryptoHashKey",
    "encryptKey",
    "enablePartialAgesForRedact",
    "enablePartialDatesForRedact",
    "enablePartialZipCodesForRedact",
    "restrictedZipCodeTabulationAreas",
    "customSettings",
];

fn err(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| err(format!("the configuration is not valid JSON: {e}")))?;
    let Value::Object(root) = root else { return Err(err("the configuration must be a JSON object")) };
    serde::de::DeserializeSeed::deserialize(NoDuplicates, &mut serde_json::Deserializer::from_slice(bytes))
        .map_err(|e| err(format!("the configuration is refused: {e}")))?;
    if let Some(key) = root.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
        return Err(err(format!("unknown configuration property '{key}' (known: {})", TOP_LEVEL.join(", "))));
    }
    match root.get("fhirVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v.is_empty() || v.eq_ignore_ascii_case("R4") => {}
        Some(other) => {
            return Err(err(format!("Configuration of fhirVersion {} is not supported. Expected fhirVersion: R4", text(other))));
        }
    }
    let processing_errors = match root.get("processingErrors") {
        None | Some(Value::Null) => ProcessingErrors::Raise,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("raise") => ProcessingErrors::Raise,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("skip") => ProcessingErrors::Skip,
        Some(other) => return Err(err(format!("processingErrors {} is not supported: use raise or skip", text(other)))),
    };
    let parameters = parameters(root.get("parameters"))?;
    let Some(Value::Array(rules)) = root.get("fhirPathRules") else {
        return Err(err("The configuration is invalid, please specify any fhirPathRules"));
    };
    let rules = rules.iter().enumerate().map(|(i, r)| rule(i, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(Config { processing_errors, rules, parameters })
}

/// A value as the message shows it: strings bare, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parameters(section: Option<&Value>) -> Result<Parameters, ConfigError> {
    let empty = Map::new();
    let map = match section {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(err("parameters must be a JSON object")),
    };
    if let Some(key) = map.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
        return Err(err(format!("unknown parameter '{key}' (known: {})", PARAMETERS[..9].join(", "))));
    }
    let string = |name: &str| -> Result<String, ConfigError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(format!("parameter {name} must be a string"))),
        }
    };
    let flag = |name: &str| -> Result<bool, ConfigError> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(err(format!("parameter {name} must be true or false"))),
        }
    };
    let date_shift_scope = match map.get("dateShiftScope") {
        None | Some(Value::Null) => DateShiftScope::Resource,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("resource") => DateShiftScope::Resource,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("file") => DateShiftScope::File,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("folder") => DateShiftScope::Folder,
        Some(other) => return Err(err(format!("dateShiftScope {} is not supported: use resource, file or folder", text(other)))),
    };
    let date_shift_fixed_offset_in_days = match map.get("dateShiftFixedOffsetInDays") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(|| err("dateShiftFixedOffsetInDays must be a whole number of days"))?),
        Some(_) => return Err(err("dateShiftFixedOffsetInDays must be a whole number of days")),
    };
    let restricted_zip_codes = match map.get("restrictedZipCodeTabulationAreas") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| err("restrictedZipCodeTabulationAreas must be a list of strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("restrictedZipCodeTabulationAreas must be a list of strings")),
    };
    let encrypt_key = string("encryptKey")?;
    if !encrypt_key.is_empty() {
        let bits = encrypt_key.len() * 8;
        if !matches!(bits, 128 | 192 | 256) {
            return Err(err(format!("Invalid encrypt key size : {bits} bits! Please provide key sizes of 128, 192 or 256 bits.")));
        }
    }
    let or_default = |key: String, default: &str| if key.is_empty() { default.to_owned() } else { key };
    Ok(Parameters {
        date_shift_key: or_default(string("dateShiftKey")?, &uuid::Uuid::new_v4().simple().to_string()),
        date_shift_scope,
        date_shift_fixed_offset_in_days,
        crypto_hash_key: or_default(string("cryptoHashKey")?, &DEFAULT_KEY),
        encrypt_key: or_default(encrypt_key, &DEFAULT_KEY),
        partial_ages: flag("enablePartialAgesForRedact")?,
        partial_dates: flag("enablePartialDatesForRedact")?,
        partial_zip_codes: flag("enablePartialZipCodesForRedact")?,
        restricted_zip_codes,
    })
}

fn compile(text: &str, what: impl Fn() -> String) -> Result<Expr, ConfigError> {
    fhirpath::parse(text).map_err(|e| err(format!("{}: the FHIRPath '{text}' cannot be evaluated: {e}", what())))
}

fn rule(index: usize, rule: &Value) -> Result<Rule, ConfigError> {
    let at = |path: &str| if path.is_empty() { format!("rule {index}") } else { format!("rule {index} (path '{path}')") };
    let Value::Object(settings) = rule else { return Err(err(format!("{}: a rule must be a JSON object", at("")))) };
    let (Some(path), Some(method)) = (settings.get("path"), settings.get("method")) else {
        return Err(err(format!("{}: Missing path or method in Fhir path rule config.", at(""))));
    };
    let (Value::String(path), Value::String(method)) = (path, method) else {
        return Err(err(format!("{}: path and method must be strings", at(""))));
    };
    let at = || at(path);
    // The whole path must compile, as the reference validates it, and so must what runs.
    compile(path, at)?;
    let (resource_type, expression) = split_path(path);
    let selector = if let Some((ty, member)) = lookup_rule(path, "nodesByType") {
        Selector::ByType(ty, member)
    } else if let Some((name, member)) = lookup_rule(path, "nodesByName") {
        Selector::ByName(name, member)
    } else if path == resource_type {
        Selector::Resource
    } else {
        Selector::Expression(compile(expression, at)?)
    };
    let known = |keys: &[&str]| -> Result<(), ConfigError> {
        match settings.keys().find(|k| !["path", "method"].contains(&k.as_str()) && !keys.contains(&k.as_str())) {
            Some(key) => Err(err(format!("{}: unknown setting '{key}' for method {method}", at()))),
            None => Ok(()),
        }
    };
    let method = match method.to_ascii_lowercase().as_str() {
        "keep" => Method::Keep,
        "redact" => Method::Redact,
        "dateshift" => Method::DateShift,
        "cryptohash" => Method::CryptoHash,
        "encrypt" => Method::Encrypt,
        "substitute" => {
            known(&["replaceWith"])?;
            let replace_with = settings
                .get("replaceWith")
                .ok_or_else(|| err(format!("{}: Missing replaceWith value in substitution rule at {path}.", at())))?;
            Method::Substitute(replace_with.clone())
        }
        "perturb" => {
            known(&["span", "rangeType", "roundTo"])?;
            Method::Perturb(perturb(settings, path, at)?)
        }
        "generalize" => {
            known(&["cases", "otherValues"])?;
            Method::Generalize(generalize(settings, at)?)
        }
        _ => {
            return Err(err(format!(
                "{}: anonymization method {method} is not supported (keep, redact, dateShift, cryptoHash, encrypt, substitute, perturb, generalize)",
                at()
            )));
        }
    };
    if !matches!(method, Method::Substitute(_) | Method::Perturb(_) | Method::Generalize(_)) {
        known(&[])?;
    }
    // Where the path names the type, a method that cannot apply to it is known now.
    if let (Method::Generalize(_), Selector::ByType(ty, None)) = (&method, &selector)
        && crate::fhir::element_types::Primitive::parse(ty).is_none()
    {
        return Err(err(format!("{}: generalize applies to primitive values only, not to {ty}", at())));
    }
    Ok(Rule { path: path.clone(), resource_type: resource_type.to_owned(), selector, method })
}

/// The reference engine's split of a path into a leading resource type (an upper-case name) and
/// the expression after it; a path that is only a type keeps itself as the expression.
pub fn split_path(path: &str) -> (&str, &str) {
    let type_end = if path.starts_with(|c: char| c.is_ascii_uppercase()) {
        path.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(path.len())
    } else {
        0
    };
    let resource_type = &path[..type_end];
    let expression = path[type_end..].strip_prefix('.').unwrap_or(&path[type_end..]);
    (resource_type, if expression.is_empty() { path } else { expression })
}

/// `nodesByType('T')` or `nodesByType('T').member` exactly (the reference engine's regular
/// expressions: letters and digits only), as (T, member).
fn lookup_rule(path: &str, function: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix(function)?.strip_prefix('(')?;
    let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"' | '|'))?;
    let rest = &rest[1..];
    let end = rest.find(|c: char| !c.is_ascii_alphanumeric())?;
    let (key, rest) = rest.split_at(end);
    let _ = quote;
    let rest = rest.strip_prefix(['\'', '"', '|'])?.strip_prefix(')')?;
    if key.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return Some((key.to_owned(), None));
    }
    let member = rest.strip_prefix('.')?;
    (!member.is_empty() && member.chars().all(|c| c.is_ascii_alphanumeric())).then(|| (key.to_owned(), Some(member.to_owned())))
}

/// `Convert.ToInt32(value.ToString())` / `ToDouble` as the reference reads numbers: a JSON number
/// or a string holding one.
fn number_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    }
}

fn perturb(settings: &Map<String, Value>, path: &str, at: impl Fn() -> String) -> Result<Perturb, ConfigError> {
    let round_to = match settings.get("roundTo") {
        None => 2,
        Some(v) => match number_text(v).parse::<i64>() {
            Ok(n) if (0..=28).contains(&n) => n as u32,
            _ => return Err(err(format!("{}: RoundTo value is invalid at {path}.", at()))),
        },
    };
    let span = match settings.get("span") {
        None => return Err(err(format!("{}: Span value is required in perturb rule at {path}.", at()))),
        Some(v) => match number_text(v).parse::<f64>() {
            Ok(n) if n >= 0.0 && n.is_finite() => n,
            _ => return Err(err(format!("{}: Span value is invalid at {path}.", at()))),
        },
    };
    let proportional = match settings.get("rangeType") {
        None => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("fixed") => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("proportional") => true,
        Some(_) => return Err(err(format!("{}: RangeType value is invalid at {path}.", at()))),
    };
    Ok(Perturb { span, proportional, round_to })
}

fn generalize(settings: &Map<String, Value>, at: impl Fn() -> String) -> Result<Generalize, ConfigError> {
    let cases = match settings.get("cases") {
        None => return Err(err(format!("{}: Missing cases in FHIR path rule config.", at()))),
        Some(Value::Object(cases)) => cases.clone(),
        // The reference parses the setting's text, so a string holding a JSON object works too.
        Some(Value::String(s)) => match serde_json::from_str(s) {
            Ok(Value::Object(cases)) => cases,
            _ => return Err(err(format!("{}: Invalid Json format of cases", at()))),
        },
        Some(_) => return Err(err(format!("{}: Invalid Json format of cases", at()))),
    };
    let cases = cases
        .iter()
        .map(|(condition, value)| {
            let value_text = text(value);
            let what = || format!("{}: invalid cases expression", at());
            Ok((compile(condition, what)?, compile(&value_text, what)?))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let keep_other_values = match settings.get("otherValues") {
        None => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("redact") => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("keep") => true,
        Some(other) => return Err(err(format!("{}: OtherValues setting is invalid at {}.", at(), text(other)))),
    };
    Ok(Generalize { cases, keep_other_values })
}

/// The configuration as it can be shown (a manifest, a log): keys replaced by whether they
/// were set.
pub fn without_keys(bytes: &[u8]) -> Value {
    let mut value: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    if let Some(Value::Object(parameters)) = value.get_mut("parameters") {
        for key in ["dateShiftKey", "cryptoHashKey", "encryptKey"] {
            if let Some(v) = parameters.get_mut(key) {
                let set = v.as_str().is_some_and(|s| !s.is_empty());
                *v = Value::String(if set { "(set)".into() } else { String::new() });
            }
        }
        parameters.remove("customSettings");
    }
    value
}

/// Walks JSON refusing an object that names a property twice, as the reference engine's reader
/// does (serde_json keeps the last one silently).
struct NoDuplicates;

impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicates {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("the property '{key}' is given twice")));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}
