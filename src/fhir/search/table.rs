//! The R4 search parameters, derived from the official definitions by
//! `scripts/derive-fhir-tables.py`: which parameters each type has, of which search type, with
//! which FHIRPath expression, and whether our evaluator handles that expression.

use std::{collections::HashMap, sync::LazyLock};

use serde::Deserialize;

use super::fhirpath::{self, Expr};
use crate::fhir::ResourceType;

const TABLE: &str = include_str!("../data/search-parameters.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl SearchType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Date => "date",
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Composite => "composite",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
            Self::Special => "special",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Row {
    code: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    search_type: SearchType,
    expression: Option<String>,
}

/// One search parameter as our evaluator sees it.
#[derive(Debug)]
pub struct SearchParam {
    pub code: String,
    pub search_type: SearchType,
    /// The parsed expression, or why this parameter is outside what we evaluate.
    pub expression: Result<Expr, Unevaluable>,
}

/// Why a search parameter is outside what this server evaluates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unevaluable {
    #[error("phonetic matching is not implemented")]
    Phonetic,
    #[error("{0} parameters are not supported")]
    Kind(&'static str),
    #[error("it has no FHIRPath expression to evaluate")]
    NoExpression,
    #[error("its expression '{expression}' is not supported: {reason}")]
    Expression { expression: String, reason: crate::fhir::fhirpath::ParseError },
}

struct Table {
    rows: Vec<SearchParam>,
    /// (base type, code) -> index in `rows`; base may be `Resource` or `DomainResource`.
    index: HashMap<(String, String), usize>,
}

static TABLE_DATA: LazyLock<Table> = LazyLock::new(|| {
    let rows: Vec<Row> = serde_json::from_str(TABLE).expect("search-parameters.json is valid");
    let mut index = HashMap::new();
    let mut params = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        for base in &row.base {
            index.insert((base.clone(), row.code.clone()), i);
        }
        params.push(SearchParam { expression: compile(&row), code: row.code, search_type: row.search_type });
    }
    Table { rows: params, index }
});

fn compile(row: &Row) -> Result<Expr, Unevaluable> {
    if row.code == "phonetic" {
        // R4 leaves the phonetic algorithm to the server; a plain string match would not be it.
        return Err(Unevaluable::Phonetic);
    }
    match (row.search_type, &row.expression) {
        (SearchType::Composite | SearchType::Special, _) => Err(Unevaluable::Kind(row.search_type.name())),
        (_, None) => Err(Unevaluable::NoExpression),
        (_, Some(text)) => fhirpath::parse(text).map_err(|reason| Unevaluable::Expression { expression: text.clone(), reason }),
    }
}

/// Types that are not DomainResources: they have the `Resource` parameters only.
const PLAIN_RESOURCES: [&str; 3] = ["Bundle", "Binary", "Parameters"];

/// The parameter `code` of type `t`, if R4 defines one.
pub fn lookup(t: &ResourceType, code: &str) -> Option<&'static SearchParam> {
    let table = &*TABLE_DATA;
    let key = |base: &str| table.index.get(&(base.to_owned(), code.to_owned()));
    let found = key(t.as_str())
        .or_else(|| key("Resource"))
        .or_else(|| if PLAIN_RESOURCES.contains(&t.as_str()) { None } else { key("DomainResource") })?;
    Some(&table.rows[*found])
}

/// How many (type, parameter) pairs R4 defines, and how many of them we evaluate.
pub fn coverage() -> (usize, usize) {
    let table = &*TABLE_DATA;
    let total = table.index.len();
    let handled = table.index.values().filter(|i| table.rows[**i].expression.is_ok()).count();
    (total, handled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_type_and_common_parameters() {
        let obs = ResourceType::parse("Observation").unwrap();
        assert_eq!(lookup(&obs, "code").unwrap().search_type, SearchType::Token);
        assert_eq!(lookup(&obs, "_lastUpdated").unwrap().search_type, SearchType::Date);
        assert!(lookup(&obs, "code-value-quantity").unwrap().expression.is_err());
        assert!(lookup(&obs, "bogus").is_none());
        let bundle = ResourceType::parse("Bundle").unwrap();
        assert!(lookup(&bundle, "_text").is_none());
    }

    #[test]
    fn coverage_of_r4_parameters() {
        let (total, handled) = coverage();
        // docs/export.md states these figures; the rest are composite, special or expression-less.
        println!("search parameters handled: {handled} of {total}");
        assert!(total > 1500, "{total}");
        assert_eq!((handled, total), (1627, 1709), "update the figures in docs/export.md");
    }
}
