//! Property tests: the FHIRPath additions evaluate on the typed document of any resource-like
//! JSON without panicking, any text parses or says why, and the engine takes any resource.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{
    document::{Document, Item},
    Engine, Scope,
};
use crate::fhir::{
    fhirpath::{self, eval_on, Env},
    props::resource_like,
};

fn atom() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "$this", "%resource", "name", "name.given", "birthDate", "value", "id", "extension", "'a'", "'2020-01-01'", "1", "-2",
        "2.5", "@2020-01-01", "@2020-01-01T10:00:00Z", "@T10:00", "true", "{}", "meta.security.code", "contained",
    ])
    .prop_filter("no empty-collection literal", |a| *a != "{}")
    .prop_map(str::to_owned)
}

fn function() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "nodesByType('HumanName')", "nodesByType('date')", "nodesByName('family')", "descendants()", "children()", "first()",
        "last()", "tail()", "count()", "distinct()", "exists()", "empty()", "hasValue()", "not()", "length()", "upper()",
        "lower()", "trim()", "toString()", "substring(1)", "substring(-1, 2)", "substring(0, 99)", "startsWith('a')",
        "endsWith('')", "contains('é')", "matches('[')", "matches('^a+$')", "replace('', 'x')", "replaceMatches('(', 'x')",
        "indexOf('b')", "extension('http://x')", "ofType(string)", "as(date)", "is(Quantity)", "resolve()", "single()",
    ])
    .prop_map(str::to_owned)
}

fn expression() -> impl Strategy<Value = String> {
    let leaf = (atom(), prop::collection::vec(function(), 0..3)).prop_map(|(a, fs)| fs.into_iter().fold(a, |e, f| format!("{e}.{f}")));
    leaf.prop_recursive(3, 16, 2, |inner| {
        let op = prop::sample::select(vec![
            "+", "-", "*", "/", "div", "mod", "&", "<", "<=", ">", ">=", "=", "!=", "~", "in", "contains", "and", "or", "xor",
            "implies", "|",
        ]);
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}).where({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}).exists({b})")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(a, b, c)| format!("iif({a}, {b}, {c})")),
            inner.clone().prop_map(|a| format!("({a}) is date")),
            inner.prop_map(|a| format!("({a}) as string")),
        ]
    })
}

fn symbols() -> impl Strategy<Value = char> {
    prop::sample::select(vec!['@', '$', '%', '<', '>', '+', '-', '&', '*', '/', '~', '"', '\'', '(', ')', '.', 'a', '1', ' ', 'é', '`', ',', '='])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn new_functions_evaluate_on_any_typed_resource(text in expression(), resource in resource_like()) {
        let expr = fhirpath::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        if let Ok(doc) = Document::from_slice(&serde_json::to_vec(&resource).unwrap()) {
            let root = Item::Node(0);
            let flag = std::cell::Cell::new(false);
            let env = Env { tree: &doc, resource: root.clone(), resource_type: doc.nodes[0].ty, mismatch: Some(&flag) };
            let _ = eval_on(&expr, &env, &[root]);
        }
    }

    #[test]
    fn any_text_parses_or_says_why(chars in prop::collection::vec(symbols(), 0..30)) {
        let text: String = chars.into_iter().collect();
        if let Err(e) = fhirpath::parse(&text) {
            prop_assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn the_engine_takes_any_resource(resource in resource_like(), skip in any::<bool>()) {
        let config = json!({"processingErrors": if skip { "skip" } else { "raise" }, "fhirPathRules": [
            {"path": "nodesByType('Extension')", "method": "redact"},
            {"path": "nodesByType('HumanName').use", "method": "keep"},
            {"path": "Resource.id", "method": "cryptoHash"},
            {"path": "nodesByType('Reference').reference", "method": "cryptoHash"},
            {"path": "Observation.value", "method": "perturb", "span": 1},
            {"path": "nodesByName('family')", "method": "generalize", "cases": {"$this.startsWith('a')": "'a'"}},
            {"path": "Patient.name", "method": "substitute", "replaceWith": {"text": "x"}},
            {"path": "nodesByType('date')", "method": "dateShift"},
            {"path": "nodesByType('dateTime')", "method": "dateShift"},
            {"path": "nodesByName('postalCode')", "method": "redact"},
            {"path": "nodesByType('string')", "method": "encrypt"},
            {"path": "Resource", "method": "redact"}
        ], "parameters": {"enablePartialDatesForRedact": true, "enablePartialZipCodesForRedact": true, "enablePartialAgesForRedact": true}});
        let engine = Engine::from_json(config.to_string().as_bytes()).unwrap();
        let mut r: Value = resource;
        let _ = engine.apply(&mut r, &Scope::default());
    }
}
