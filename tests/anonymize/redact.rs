//! `redact` (the reference's RedactProcessorTests, PostalCodeUtilityTests and the redaction half of
//! DateTimeUtilityTests): values go, except that partial redaction keeps a date's year, an age up
//! to 89 and a postal code's first three digits (none in a restricted area). Emptied elements are
//! removed, up to the resource itself.

use serde_json::{Value, json};

use crate::helpers::{anonymized, assert_same, label, rules};

fn redact(path: &str, partial: bool, restricted: &[&str]) -> bulkfhir::anonymize::Engine {
    rules(
        json!([{ "path": path, "method": "redact" }]),
        json!({
            "enablePartialDatesForRedact": partial,
            "enablePartialAgesForRedact": partial,
            "enablePartialZipCodesForRedact": partial,
            "restrictedZipCodeTabulationAreas": restricted
        }),
    )
}

#[test]
fn partial_dates_keep_the_year_unless_it_says_the_person_is_over_89() {
    let engine = redact("nodesByType('date')", true, &[]);
    for (before, after) in [("2015", Some("2015")), ("2015-02", Some("2015")), ("2015-02-07", Some("2015")), ("1925-02-07", None)] {
        let actual = anonymized(&engine, json!({ "resourceType": "Patient", "gender": "male", "birthDate": before }));
        let mut expected = json!({ "resourceType": "Patient", "gender": "male", "meta": label::meta(&[label::redacted()]) });
        if let Some(after) = after {
            expected["birthDate"] = json!(after);
        }
        assert_same(&actual, &expected);
    }
}

#[test]
fn without_partial_dates_every_date_goes() {
    let engine = redact("nodesByType('date')", false, &[]);
    for before in ["2015", "2015-02", "2015-02-07", "1925-02-07"] {
        let actual = anonymized(&engine, json!({ "resourceType": "Patient", "gender": "male", "birthDate": before }));
        assert_same(&actual, &json!({ "resourceType": "Patient", "gender": "male", "meta": label::meta(&[label::redacted()]) }));
    }
}

#[test]
fn partial_date_times_and_instants_keep_the_year() {
    let engine = redact("Observation.effective", true, &[]);
    for (before, after) in [
        ("2015", Some("2015")),
        ("2015-02", Some("2015")),
        ("2015-02-07", Some("2015")),
        ("2015-02-07T13:28:17-05:00", Some("2015")),
        ("1925-02-07T13:28:17-05:00", None),
    ] {
        let input = json!({ "resourceType": "Observation", "status": "final", "effectiveDateTime": before });
        let mut expected = json!({ "resourceType": "Observation", "status": "final", "meta": label::meta(&[label::redacted()]) });
        if let Some(after) = after {
            expected["effectiveDateTime"] = json!(after);
        }
        assert_same(&anonymized(&engine, input), &expected);
    }

    let engine = redact("Observation.issued", true, &[]);
    for (before, after) in [("2015-02-07T13:28:17-05:00", Some("2015")), ("1925-02-07T13:28:17-05:00", None)] {
        let input = json!({ "resourceType": "Observation", "status": "final", "issued": before });
        let mut expected = json!({ "resourceType": "Observation", "status": "final", "meta": label::meta(&[label::redacted()]) });
        if let Some(after) = after {
            expected["issued"] = json!(after);
        }
        assert_same(&anonymized(&engine, input), &expected);
    }
}

fn condition_with_age(value: u32) -> Value {
    json!({
        "resourceType": "Condition",
        "subject": { "reference": "Patient/1" },
        "onsetAge": { "value": value, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a" }
    })
}

#[test]
fn partial_ages_keep_the_number_up_to_89_and_lose_the_rest_of_the_age() {
    let engine = redact("Condition.onset", true, &[]);
    for (age, kept) in [(57, true), (89, true), (91, false), (92, false)] {
        let mut expected = json!({ "resourceType": "Condition", "subject": { "reference": "Patient/1" }, "meta": label::meta(&[label::redacted()]) });
        if kept {
            expected["onsetAge"] = json!({ "value": age });
        }
        assert_same(&anonymized(&engine, condition_with_age(age)), &expected);
    }
}

#[test]
fn without_partial_ages_every_age_goes() {
    let engine = redact("Condition.onset", false, &[]);
    for age in [35, 101] {
        let expected = json!({ "resourceType": "Condition", "subject": { "reference": "Patient/1" }, "meta": label::meta(&[label::redacted()]) });
        assert_same(&anonymized(&engine, condition_with_age(age)), &expected);
    }
}

fn patient_with_postal_codes(codes: &[&str]) -> Value {
    let addresses: Vec<Value> = codes.iter().map(|c| json!({ "state": "WA", "postalCode": c })).collect();
    json!({ "resourceType": "Patient", "address": addresses })
}

#[test]
fn partial_postal_codes_keep_three_digits_outside_restricted_areas_and_are_labelled_abstracted() {
    let engine = redact("Patient.address.postalCode", true, &["203", "556"]);
    let before = ["98052", "10104", "20301", "55602", "98028-1830", "20301-1830", "12"];
    let after = ["98000", "10100", "00000", "00000", "98000-0000", "00000-0000", "12"];
    let mut expected = patient_with_postal_codes(&after);
    expected["meta"] = label::meta(&[label::abstracted()]);
    assert_same(&anonymized(&engine, patient_with_postal_codes(&before)), &expected);
}

#[test]
fn without_partial_postal_codes_every_postal_code_goes() {
    let engine = redact("Patient.address.postalCode", false, &[]);
    let actual = anonymized(&engine, patient_with_postal_codes(&["98052", "10104", "00000", "98028-1830"]));
    let expected = json!({
        "resourceType": "Patient",
        "address": [{ "state": "WA" }, { "state": "WA" }, { "state": "WA" }, { "state": "WA" }],
        "meta": label::meta(&[label::redacted()])
    });
    assert_same(&actual, &expected);
}

#[test]
fn redacting_a_complex_element_removes_it_and_any_parent_left_empty() {
    let engine = redact("nodesByType('HumanName')", true, &[]);
    let actual = anonymized(
        &engine,
        json!({ "resourceType": "Patient", "name": [{ "family": "Chalmers", "given": ["Peter", "James"] }],
                "contact": [{ "name": { "family": "du Marché", "_family": { "extension": [{ "url": "http://example.org/x", "valueString": "VV" }] } } }] }),
    );
    assert_same(&actual, &json!({ "resourceType": "Patient", "meta": label::meta(&[label::redacted()]) }));
}

#[test]
fn a_rule_already_applied_to_a_node_decides_it_for_later_rules() {
    let engine = rules(
        json!([
            { "path": "Patient.name.family", "method": "keep" },
            { "path": "Patient.name", "method": "redact" }
        ]),
        json!({}),
    );
    let actual = anonymized(&engine, json!({ "resourceType": "Patient", "name": [{ "use": "official", "family": "Chalmers", "given": ["Peter"] }] }));
    assert_same(
        &actual,
        &json!({ "resourceType": "Patient", "name": [{ "family": "Chalmers" }], "meta": label::meta(&[label::redacted()]) }),
    );
}

#[test]
fn existing_security_labels_are_kept_and_not_repeated() {
    let engine = redact("Patient.gender", false, &[]);
    let actual = anonymized(
        &engine,
        json!({ "resourceType": "Patient", "gender": "male", "active": true,
                "meta": { "versionId": "3", "security": [{ "code": "redacted" }, { "system": "urn:x", "code": "OTHER" }] } }),
    );
    assert_same(
        &actual,
        &json!({ "resourceType": "Patient", "active": true,
                 "meta": { "versionId": "3", "security": [{ "code": "redacted" }, { "system": "urn:x", "code": "OTHER" }] } }),
    );
}
