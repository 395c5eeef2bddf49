//! Property tests of the parsers an export runs on stored data and on `_typeFilter` values:
//! instants, dates, decimals, filter queries, FHIRPath, and the matcher on resources whose values
//! are anything at all. Each must return an answer or a clear error, never panic.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{
    fhirpath,
    ranges::{parse_date, parse_decimal},
    FilterError, Narrowing, TypeFilter,
};
use crate::fhir::instant;

/// Characters dates and numbers are made of, a few that break byte slicing (`é` is two bytes,
/// `€` three, `😀` four), and anything else now and then.
fn date_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => proptest::sample::select(vec!['0', '1', '2', '9', '-', 'T', ':', '+', 'Z', '.', 'e', 'E']),
        4 => proptest::sample::select(vec!['é', '€', '😀', ' ', '\0', '%']),
        1 => any::<char>(),
    ]
}

/// Text near a date: a valid one with characters replaced, inserted or cut, or a random run.
fn date_like() -> impl Strategy<Value = String> {
    let valid = proptest::sample::select(vec![
        "2020",
        "2020-01",
        "2020-01-01",
        "2020-01-01T10:00",
        "2020-01-01T10:00:00Z",
        "2011-02-02T16:30:49.825+05:00",
        "2011-02-02T16:30:49-05:00",
        "1e3",
        "-0.25",
    ]);
    let mutated = (valid, proptest::collection::vec((any::<prop::sample::Index>(), date_char(), 0..3u8), 1..4)).prop_map(|(base, edits)| {
        let mut chars: Vec<char> = base.chars().collect();
        for (at, c, how) in edits {
            let i = at.index(chars.len() + 1);
            match how {
                0 if i < chars.len() => chars[i] = c,
                1 => chars.insert(i, c),
                _ => chars.truncate(i),
            }
        }
        chars.into_iter().collect()
    });
    // A date and a `T`, then anything: where the time and zone parsers take over.
    let tail = proptest::collection::vec(date_char(), 0..12).prop_map(|c| format!("2020-01-01T{}", c.into_iter().collect::<String>()));
    prop_oneof![
        3 => mutated,
        2 => tail,
        1 => proptest::collection::vec(date_char(), 0..32).prop_map(|c| c.into_iter().collect()),
    ]
}

/// A JSON value where the matcher expects a date, number, Period, Timing or Quantity.
fn odd_value() -> impl Strategy<Value = Value> {
    let text = || date_like().prop_map(Value::String);
    prop_oneof![
        text(),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        (date_like(), date_like()).prop_map(|(s, e)| json!({"start": s, "end": e})),
        proptest::collection::vec(text(), 0..3).prop_map(|events| json!({"event": events, "repeat": {"boundsPeriod": {"start": 1}}})),
        (any::<f64>(), date_like()).prop_map(|(v, code)| json!({"value": v, "code": code, "low": {"value": "x"}})),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn dates_and_decimals_parse_or_refuse(text in date_like()) {
        if let Some(range) = parse_date(&text) {
            prop_assert!(range.low < range.high, "{text}: {range:?}");
        }
        if let Some(d) = parse_decimal(&text) {
            prop_assert!(d.low <= d.value && d.value <= d.high, "{text}: {d:?}");
        }
    }

    #[test]
    fn instants_parse_or_name_the_value(text in date_like()) {
        if let Err(message) = instant::parse(&text) {
            prop_assert!(message.to_string().contains(&text), "{message}");
        }
    }

    #[test]
    fn filter_values_compile_or_say_why(name in proptest::sample::select(vec!["date", "value-quantity", "code", "subject", "_lastUpdated", "combo-value-quantity"]),
                                         prefix in proptest::sample::select(vec!["", "ge", "lt", "ap", "sa", "eb", "ne"]),
                                         value in date_like()) {
        let encoded: String = percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC).to_string();
        let query = format!("Observation?{name}={prefix}{encoded}");
        match TypeFilter::parse(&query).and_then(|f| f.compile()) {
            // What the store is told to narrow by is computed from it too.
            Ok(filter) => drop(Narrowing::for_filters(&[filter])),
            Err(FilterError::Invalid(m) | FilterError::Unsupported(m)) => prop_assert!(m.contains("Observation"), "{query}: {m}"),
        }
    }

    #[test]
    fn raw_filter_text_parses_or_says_why(text in proptest::collection::vec(prop_oneof![date_char(), proptest::sample::select(vec!['?', '&', '=', ':', ',', '|', '\\', '$', 'a', 'O'])], 0..40)) {
        let text: String = text.into_iter().collect();
        for query in [text.clone(), format!("Observation?{text}"), format!("Patient?birthdate={text}")] {
            if let Err(FilterError::Invalid(m) | FilterError::Unsupported(m)) = TypeFilter::parse(&query).and_then(|f| f.compile()) {
                prop_assert!(!m.is_empty());
            }
        }
    }

    #[test]
    fn fhirpath_parses_or_says_why(text in proptest::collection::vec(prop_oneof![date_char(), proptest::sample::select(vec!['.', '(', ')', '[', ']', '|', '=', '!', '\'', '`', '\\', 'a', 'w', ' '])], 0..40)) {
        let text: String = text.into_iter().collect();
        if let Err(m) = fhirpath::parse(&text) {
            prop_assert!(!m.0.is_empty());
        }
    }

    #[test]
    fn the_matcher_takes_any_stored_value(date in odd_value(), value in odd_value(), period in odd_value(), timing in odd_value()) {
        let observation = json!({
            "resourceType": "Observation", "id": "x",
            "effectiveDateTime": date, "effectivePeriod": period, "effectiveTiming": timing,
            "valueQuantity": value.clone(), "valueRange": value.clone(), "subject": value,
        });
        for query in [
            "Observation?date=ge2000", "Observation?date=ap2020-01-01", "Observation?date=ne2020-01-01T10:00:00Z",
            "Observation?value-quantity=lt5", "Observation?value-quantity=ap5||mg", "Observation?subject=Patient/x",
            "Observation?code:text=abc",
        ] {
            let filter = TypeFilter::parse(query).and_then(|f| f.compile()).expect("a valid filter");
            let _ = filter.matches(&observation);
        }
    }
}

#[test]
fn a_date_with_a_multibyte_character_is_no_date() {
    // Stored by a careless feed; sliced at a byte inside `é` before.
    assert_eq!(parse_date("2020-01-01Té12345"), None);
    assert_eq!(parse_date("2020-01-01T10:00+0é:00"), None);
    assert!(parse_decimal("1e-2147483648").is_none());
    assert!(instant::parse("2020-01-01Té12345").is_err());
}
