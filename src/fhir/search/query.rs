//! A `_typeFilter` query (`Observation?category=vital-signs&date=ge2020`) read into its
//! conditions, then compiled against the R4 search-parameter table into tests the matcher runs.
//! Comma = OR inside one parameter; repeated parameters = AND.

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use super::{
    fhirpath::Expr,
    ranges::{parse_date, parse_decimal, DateRange, Decimal},
    table::{self, SearchType},
};
use crate::fhir::{instant, ResourceType};

/// A query as received, split into conditions; what the export request stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeFilter {
    pub resource_type: ResourceType,
    pub conditions: Vec<Condition>,
}

/// One `name[:modifier]=value`, value still holding its commas and escapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub name: String,
    pub modifier: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Malformed: always refused.
    #[error("{0}")]
    Invalid(String),
    /// Valid FHIR search that this server does not evaluate: refused, or under lenient handling
    /// the condition is dropped with a warning.
    #[error("{0}")]
    Unsupported(String),
}

/// Search result parameters and operations that have no meaning inside a filter.
const NOT_FILTERS: [&str; 16] = [
    "_include", "_revinclude", "_sort", "_count", "_elements", "_summary", "_total", "_contained",
    "_containedType", "_format", "_pretty", "_query", "_filter", "_list", "_type", "_has",
];

impl TypeFilter {
    /// Reads `Type?a=b&c=d` (the query's names and values are percent-decoded here; a bare
    /// `Type` has no conditions).
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let (type_name, query) = text.split_once('?').unwrap_or((text, ""));
        let resource_type = ResourceType::parse(type_name.trim())
            .ok_or_else(|| FilterError::Invalid(format!("'{text}': '{type_name}' is not a known FHIR R4 resource type")))?;
        let mut conditions = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = piece
                .split_once('=')
                .ok_or_else(|| FilterError::Invalid(format!("'{text}': '{piece}' has no value")))?;
            let name = decode(raw_name).ok_or_else(|| FilterError::Invalid(format!("'{text}': bad percent-encoding")))?;
            let value = decode(raw_value).ok_or_else(|| FilterError::Invalid(format!("'{text}': bad percent-encoding")))?;
            // Decoded a second time here, so checked again: Postgres text cannot hold NUL.
            if name.chars().chain(value.chars()).any(char::is_control) {
                return Err(FilterError::Invalid(format!("'{text}': a control character (such as NUL) in '{piece}'")));
            }
            let (name, modifier) = match name.split_once(':') {
                Some((n, m)) => (n.to_owned(), Some(m.to_owned())),
                None => (name, None),
            };
            conditions.push(Condition { name, modifier, value });
        }
        Ok(Self { resource_type, conditions })
    }

    /// Compiles every condition; the first that fails names itself.
    pub fn compile(&self) -> Result<CompiledFilter, FilterError> {
        let conditions = self.conditions.iter().map(|c| c.compile(&self.resource_type)).collect::<Result<_, _>>()?;
        Ok(CompiledFilter { resource_type: self.resource_type.clone(), conditions })
    }

    /// The query text again, for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .conditions
            .iter()
            .map(|c| format!("{}{}={}", c.name, c.modifier.as_ref().map(|m| format!(":{m}")).unwrap_or_default(), c.value))
            .collect();
        format!("{}?{}", self.resource_type, parts.join("&"))
    }
}

/// Percent-decoding without `+` as space: inside a filter a `+` is a time-zone sign.
fn decode(raw: &str) -> Option<String> {
    percent_decode_str(raw).decode_utf8().ok().map(|s| s.into_owned())
}

/// A filter ready to run: every condition must hold.
#[derive(Debug)]
pub struct CompiledFilter {
    pub resource_type: ResourceType,
    pub conditions: Vec<CompiledCondition>,
}

#[derive(Debug)]
pub struct CompiledCondition {
    pub code: String,
    pub expression: &'static Expr,
    pub test: Test,
}

/// What a condition asks of the values its expression finds. Each Vec is an OR of values.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Missing(bool),
    Token { values: Vec<TokenValue>, negate: bool },
    TokenText(Vec<String>),
    String { mode: StringMode, values: Vec<String> },
    Date(Vec<(Prefix, DateRange)>),
    Number(Vec<(Prefix, Decimal)>),
    Quantity(Vec<QuantityValue>),
    Reference(Vec<ReferenceValue>),
    Uri(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenValue {
    /// `code`: any system.
    Code(String),
    /// `system|code`; `|code` has system "" (no system).
    SystemCode(String, String),
    /// `system|`: any code in the system.
    System(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    StartsWith,
    Exact,
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantityValue {
    pub prefix: Prefix,
    pub number: Decimal,
    pub system: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceValue {
    /// `Type/id`.
    Typed(String, String),
    /// `id`, of any type the parameter allows.
    Id(String),
    /// An absolute URL or URN, matched as written.
    Absolute(String),
}

impl Condition {
    fn compile(&self, t: &ResourceType) -> Result<CompiledCondition, FilterError> {
        let name = &self.name;
        let invalid = |reason: String| FilterError::Invalid(format!("{t}?{name}: {reason}"));
        let unsupported = |reason: String| FilterError::Unsupported(format!("{t}?{name}: {reason}"));
        if name.contains('.') {
            return Err(unsupported("chained parameters are not supported inside _typeFilter".into()));
        }
        if NOT_FILTERS.contains(&name.as_str()) {
            return Err(unsupported(format!("{name} is not supported inside _typeFilter (only search conditions are)")));
        }
        // Clients send custom and profile parameters: unknown is unsupported, not malformed.
        let param = table::lookup(t, name).ok_or_else(|| unsupported(format!("'{name}' is not an R4 search parameter of {t}")))?;
        let expression = param
            .expression
            .as_ref()
            .map_err(|reason| unsupported(format!("search parameter '{name}' is not supported: {reason}")))?;
        let values = split_values(&self.value);
        if values.iter().any(String::is_empty) {
            return Err(invalid(format!("empty value in '{}'", self.value)));
        }
        let kind = param.search_type;
        let test = match (self.modifier.as_deref(), kind) {
            (Some("missing"), _) => match self.value.as_str() {
                "true" => Test::Missing(true),
                "false" => Test::Missing(false),
                other => return Err(invalid(format!(":missing takes true or false, not '{other}'"))),
            },
            (None | Some("not"), SearchType::Token) => Test::Token {
                values: values.iter().map(|v| token_value(v)).collect(),
                negate: self.modifier.is_some(),
            },
            (Some("text"), SearchType::Token) => Test::TokenText(values.iter().map(|v| unescape(v)).collect()),
            (None, SearchType::String) => Test::String { mode: StringMode::StartsWith, values: unescaped(&values) },
            (Some("exact"), SearchType::String) => Test::String { mode: StringMode::Exact, values: unescaped(&values) },
            (Some("contains"), SearchType::String) => Test::String { mode: StringMode::Contains, values: unescaped(&values) },
            (None, SearchType::Date) => Test::Date(values.iter().map(|v| date_value(v)).collect::<Result<_, _>>().map_err(|e| invalid(e.to_string()))?),
            (None, SearchType::Number) => Test::Number(
                values
                    .iter()
                    .map(|v| {
                        let (prefix, rest) = prefix(v);
                        parse_decimal(rest).map(|d| (prefix, d)).ok_or_else(|| invalid(format!("'{v}' is not a number")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (None, SearchType::Quantity) => {
                Test::Quantity(values.iter().map(|v| quantity_value(v).ok_or_else(|| invalid(format!("'{v}' is not a quantity")))).collect::<Result<_, _>>()?)
            }
            (None, SearchType::Reference) => Test::Reference(values.iter().map(|v| reference_value(&unescape(v), None)).collect::<Result<_, _>>().map_err(|e| invalid(e.to_string()))?),
            (Some(m), SearchType::Reference) if ResourceType::parse(m).is_some() => {
                Test::Reference(values.iter().map(|v| reference_value(&unescape(v), Some(m))).collect::<Result<_, _>>().map_err(|e| invalid(e.to_string()))?)
            }
            (None, SearchType::Uri) => Test::Uri(unescaped(&values)),
            (Some(m @ ("not" | "text" | "exact" | "contains" | "in" | "not-in" | "below" | "above" | "of-type" | "identifier" | "iterate")), _) => {
                return Err(unsupported(format!("the :{m} modifier is not supported on {} parameters", kind.name())));
            }
            (Some(m), _) => return Err(invalid(format!("':{m}' is not a search modifier")) ),
            (None, SearchType::Composite | SearchType::Special) => unreachable!("refused by the table"),
        };
        Ok(CompiledCondition { code: name.clone(), expression, test })
    }
}

/// A condition's value that cannot be read as its parameter's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ValueError {
    #[error("'{0}' is not a FHIR date")]
    NotADate(String),
    #[error("'{0}' is outside the years 0001 to 9999 (UTC) that FHIR dates cover")]
    DateOutOfRange(String),
    #[error("a :Type modifier needs an id, not the URL '{0}'")]
    TypeModifierOnUrl(String),
    #[error("'{value}' contradicts the :{modifier} modifier")]
    ContradictsModifier { value: String, modifier: String },
    #[error("'{0}' is not Type/id, an id, or an absolute URL")]
    NotAReference(String),
}

/// A date condition's value: its prefix and range, within the years the stores hold.
fn date_value(value: &str) -> Result<(Prefix, DateRange), ValueError> {
    let (prefix, rest) = prefix(value);
    // FHIR dates are ASCII; checked first, as the date parser reads fixed byte positions.
    let range = rest.is_ascii().then(|| parse_date(rest)).flatten().ok_or_else(|| ValueError::NotADate(value.to_owned()))?;
    if range.low < instant::MIN_MICROS || range.high > instant::END_MICROS {
        return Err(ValueError::DateOutOfRange(value.to_owned()));
    }
    Ok((prefix, range))
}

/// Splits on commas not escaped with `\`; the parts keep their other escapes.
fn split_values(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
}

fn split_unescaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let last = parts.last_mut().expect("never empty");
            last.push(c);
            if let Some(next) = chars.next() {
                last.push(next);
            }
        } else if c == separator {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// Removes FHIR search escapes (`\,` `\|` `\$` `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescaped(values: &[String]) -> Vec<String> {
    values.iter().map(|v| unescape(v)).collect()
}

fn token_value(value: &str) -> TokenValue {
    let parts = split_unescaped(value, '|');
    match parts.as_slice() {
        [code] => TokenValue::Code(unescape(code)),
        [system, code] if code.is_empty() => TokenValue::System(unescape(system)),
        [system, code] => TokenValue::SystemCode(unescape(system), unescape(code)),
        // More bars than one: the rest belongs to the code.
        [system, rest @ ..] => TokenValue::SystemCode(unescape(system), unescape(&rest.join("|"))),
        [] => unreachable!("split gives at least one part"),
    }
}

fn prefix(value: &str) -> (Prefix, &str) {
    let table = [
        ("eq", Prefix::Eq), ("ne", Prefix::Ne), ("gt", Prefix::Gt), ("lt", Prefix::Lt), ("ge", Prefix::Ge),
        ("le", Prefix::Le), ("sa", Prefix::Sa), ("eb", Prefix::Eb), ("ap", Prefix::Ap),
    ];
    for (text, prefix) in table {
        if let Some(rest) = value.strip_prefix(text) {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

fn quantity_value(value: &str) -> Option<QuantityValue> {
    let parts: Vec<String> = split_unescaped(value, '|').iter().map(|p| unescape(p)).collect();
    let (prefix, number) = prefix(parts.first()?);
    let number = parse_decimal(number)?;
    let non_empty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
    match parts.len() {
        1 => Some(QuantityValue { prefix, number, system: None, code: None }),
        3 => Some(QuantityValue { prefix, number, system: non_empty(parts.get(1)), code: non_empty(parts.get(2)) }),
        _ => None,
    }
}

fn reference_value(value: &str, modifier_type: Option<&str>) -> Result<ReferenceValue, ValueError> {
    if value.contains("://") || value.starts_with("urn:") {
        if modifier_type.is_some() {
            return Err(ValueError::TypeModifierOnUrl(value.to_owned()));
        }
        return Ok(ReferenceValue::Absolute(value.to_owned()));
    }
    match value.split_once('/') {
        Some((ty, id)) if ResourceType::parse(ty).is_some() && !id.is_empty() && !id.contains('/') => {
            if modifier_type.is_some_and(|m| m != ty) {
                return Err(ValueError::ContradictsModifier { value: value.to_owned(), modifier: modifier_type.unwrap_or_default().to_owned() });
            }
            Ok(ReferenceValue::Typed(ty.to_owned(), id.to_owned()))
        }
        Some(_) => Err(ValueError::NotAReference(value.to_owned())),
        None => Ok(match modifier_type {
            Some(ty) => ReferenceValue::Typed(ty.to_owned(), value.to_owned()),
            None => ReferenceValue::Id(value.to_owned()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<CompiledFilter, FilterError> {
        TypeFilter::parse(text)?.compile()
    }

    #[test]
    fn reads_conditions_values_and_escapes() {
        let f = TypeFilter::parse("Observation?code=http%3A%2F%2Floinc.org%7C8302-2,a\\,b&date=ge2020-01-01T00:00:00+05:00").unwrap();
        assert_eq!(f.conditions.len(), 2);
        assert_eq!(f.conditions[0].value, "http://loinc.org|8302-2,a\\,b");
        let c = f.compile().unwrap();
        assert_eq!(
            c.conditions[0].test,
            Test::Token { values: vec![TokenValue::SystemCode("http://loinc.org".into(), "8302-2".into()), TokenValue::Code("a,b".into())], negate: false }
        );
        assert!(matches!(&c.conditions[1].test, Test::Date(v) if v[0].0 == Prefix::Ge));
        assert_eq!(TypeFilter::parse("Patient").unwrap().conditions, vec![]);
    }

    #[test]
    fn dates_at_the_ends_of_the_range_compile() {
        for text in ["Observation?_lastUpdated=ge0001-01-01", "Observation?date=le9999-12-31", "Observation?date=9999"] {
            assert!(compile(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_apply() {
        for (text, unsupported) in [
            ("Observation?patient.name=x", true),
            ("Observation?_has:Observation:patient:code=x", true),
            ("Observation?_include=Observation:patient", true),
            ("Observation?_sort=date", true),
            ("Observation?_count=10", true),
            ("Observation?_elements=id", true),
            ("Observation?code-value-quantity=x$1", true),
            ("Observation?code:in=http://vs", true),
            ("Observation?bogus=1", true),
            ("Patient?status=active", true),
            ("Observation?date=yesterday", false),
            ("Observation?value-quantity=abc", false),
            ("Observation?code:missing=maybe", false),
            ("Observation?code:frobnicate=x", false),
            ("Bogus?x=1", false),
            ("Observation?subject:Patient=Group/1", false),
            ("Observation?date=2020-01-01T\u{e9}12345", false),
            ("Observation?date=2020-01-01T00:00:0\u{e9}", false),
            ("Observation?_lastUpdated=gt0000-01-01", false),
            ("Observation?date=le0001-01-01T00:30:00+01:00", false),
            ("Observation?name%00=x", false),
            ("Observation?code=a%00", false),
        ] {
            match compile(text) {
                Err(FilterError::Unsupported(m)) => assert!(unsupported, "{text}: {m}"),
                Err(FilterError::Invalid(m)) => assert!(!unsupported, "{text}: {m}"),
                Ok(_) => panic!("{text} compiled"),
            }
        }
    }
}
