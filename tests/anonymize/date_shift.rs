//! `dateShift` (the reference's DateShiftProcessorTests and DateTimeUtilityTests): the offset is
//! derived from the scope prefix and the key, within ±50 days; the time of day becomes zeros, the
//! zone stays; dates without a day, or that say the person is over 89, are redacted instead.

use bulkfhir::anonymize::Scope;
use serde_json::{Value, json};

use crate::helpers::{anonymized, assert_same, engine, label, rules};

fn shift_everything(parameters: Value) -> bulkfhir::anonymize::Engine {
    rules(
        json!([
            { "path": "nodesByType('date')", "method": "dateShift" },
            { "path": "nodesByType('dateTime')", "method": "dateShift" },
            { "path": "nodesByType('instant')", "method": "dateShift" }
        ]),
        parameters,
    )
}

/// An Observation without an id: its key prefix is empty, so the key "dummy" alone gives -21 days.
fn observation(effective: &str, issued: Option<&str>) -> Value {
    let mut resource = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "text": "weight" },
        "effectiveDateTime": effective
    });
    if let Some(issued) = issued {
        resource["issued"] = json!(issued);
    }
    resource
}

#[test]
fn a_date_is_moved_by_the_offset_of_its_key() {
    let engine = shift_everything(json!({ "dateShiftKey": "dummy", "enablePartialDatesForRedact": true }));
    let actual = anonymized(&engine, json!({ "resourceType": "Patient", "birthDate": "2015-02-07" }));
    assert_same(
        &actual,
        &json!({ "resourceType": "Patient", "birthDate": "2015-01-17", "meta": label::meta(&[label::perturbed()]) }),
    );
}

#[test]
fn date_times_keep_their_zone_and_fraction_digits_with_the_time_set_to_zeros() {
    let engine = shift_everything(json!({ "dateShiftKey": "dummy", "enablePartialDatesForRedact": true }));
    for (before, after) in [
        ("2015-02-07", "2015-01-17"),
        ("2015-02-07T13:28:17-05:00", "2015-01-17T00:00:00-05:00"),
        ("2015-02-07T13:28:17+05:00", "2015-01-17T00:00:00+05:00"),
        ("2015-02-07T13:28:17Z", "2015-01-17T00:00:00Z"),
        ("2015-02-07T13:28:17.12345-05:00", "2015-01-17T00:00:00.00000-05:00"),
    ] {
        let actual = anonymized(&engine, observation(before, None));
        let mut expected = observation(after, None);
        expected["meta"] = label::meta(&[label::perturbed()]);
        assert_same(&actual, &expected);
    }
}

#[test]
fn instants_are_shifted_and_a_utc_instant_is_written_with_an_explicit_offset() {
    let engine = shift_everything(json!({ "dateShiftKey": "dummy", "enablePartialDatesForRedact": true }));
    for (before, after) in [
        ("2015-02-07T13:28:17-05:00", "2015-01-17T00:00:00-05:00"),
        ("2015-02-07T13:28:17+05:00", "2015-01-17T00:00:00+05:00"),
        ("2015-02-07T13:28:17.12345-05:00", "2015-01-17T00:00:00.00000-05:00"),
        ("2015-02-07T01:01:01Z", "2015-01-17T00:00:00+00:00"),
    ] {
        let actual = anonymized(&engine, observation("2015-02-07", Some(before)));
        let mut expected = observation("2015-01-17", Some(after));
        expected["meta"] = label::meta(&[label::perturbed()]);
        assert_same(&actual, &expected);
    }
}

#[test]
fn a_fixed_offset_replaces_the_keyed_one() {
    for (days, after) in [
        (0, "2015-02-07T00:00:00-05:00"),
        (11, "2015-02-18T00:00:00-05:00"),
        (-10, "2015-01-28T00:00:00-05:00"),
        (-15, "2015-01-23T00:00:00-05:00"),
    ] {
        let engine = shift_everything(json!({
            "dateShiftKey": "ignored-when-fixed", "dateShiftFixedOffsetInDays": days, "enablePartialDatesForRedact": true
        }));
        let actual = anonymized(&engine, observation("2015-02-07T13:28:47-05:00", None));
        let mut expected = observation(after, None);
        expected["meta"] = label::meta(&[label::perturbed()]);
        assert_same(&actual, &expected);
    }
}

#[test]
fn a_date_without_a_day_is_redacted_to_its_year_or_removed_without_partial_dates() {
    let engine = shift_everything(json!({ "dateShiftKey": "dummy", "enablePartialDatesForRedact": true }));
    let actual = anonymized(&engine, json!({ "resourceType": "Patient", "birthDate": "2015-02" }));
    assert_same(&actual, &json!({ "resourceType": "Patient", "birthDate": "2015", "meta": label::meta(&[label::redacted()]) }));

    let engine = shift_everything(json!({ "dateShiftKey": "dummy", "enablePartialDatesForRedact": false }));
    let actual = anonymized(&engine, json!({ "resourceType": "Patient", "gender": "female", "birthDate": "2015-02" }));
    assert_same(&actual, &json!({ "resourceType": "Patient", "gender": "female", "meta": label::meta(&[label::redacted()]) }));
}

#[test]
fn a_date_of_someone_over_89_is_removed_instead_of_shifted() {
    let engine = shift_everything(json!({ "dateShiftKey": "dummy", "enablePartialDatesForRedact": true }));
    let actual = anonymized(
        &engine,
        json!({ "resourceType": "Patient", "gender": "male", "birthDate": "1925-02-07",
                "deceasedDateTime": "1925-02-07T13:28:17-05:00" }),
    );
    assert_same(&actual, &json!({ "resourceType": "Patient", "gender": "male", "meta": label::meta(&[label::redacted()]) }));

    let actual = anonymized(&engine, observation("2015-02-07", Some("1915-03-07T13:28:17-05:00")));
    let mut expected = observation("2015-01-17", None);
    expected["meta"] = label::meta(&[label::redacted(), label::perturbed()]);
    assert_same(&actual, &expected);
}

#[test]
fn with_resource_scope_the_resource_id_prefixes_the_key() {
    // "a" + "123" gives +19 days; "obs-1" + "123" gives -27.
    let engine = shift_everything(json!({ "dateShiftKey": "123", "dateShiftScope": "resource" }));
    let actual = anonymized(&engine, json!({ "resourceType": "Patient", "id": "a", "birthDate": "2000-01-01" }));
    assert_same(
        &actual,
        &json!({ "resourceType": "Patient", "id": "a", "birthDate": "2000-01-20", "meta": label::meta(&[label::perturbed()]) }),
    );
    let mut input = observation("2000-03-01T10:00:00+01:00", None);
    input["id"] = json!("obs-1");
    let mut expected = observation("2000-02-03T00:00:00+01:00", None);
    expected["id"] = json!("obs-1");
    expected["meta"] = label::meta(&[label::perturbed()]);
    assert_same(&anonymized(&engine, input), &expected);
}

#[test]
fn with_file_or_folder_scope_the_file_or_folder_name_prefixes_the_key_for_every_resource() {
    // "filename" + "123" gives +4 days, "foldername" + "123" +17, whatever the resource id.
    let scope = Scope { file: "filename".into(), folder: "foldername".into() };
    for (scope_name, shifted) in [("file", "2000-01-05"), ("folder", "2000-01-18")] {
        let engine = shift_everything(json!({ "dateShiftKey": "123", "dateShiftScope": scope_name }));
        for id in ["a", "obs-1", "obs-2"] {
            let mut resource = json!({ "resourceType": "Patient", "id": id, "birthDate": "2000-01-01" });
            engine.apply(&mut resource, &scope).expect("the resource is de-identified");
            assert_same(
                &resource,
                &json!({ "resourceType": "Patient", "id": id, "birthDate": shifted, "meta": label::meta(&[label::perturbed()]) }),
            );
        }
    }
}

#[test]
fn dates_in_contained_resources_use_the_containing_resource_id() {
    // "lipid" + "123" gives +42 days; the contained resource's own id plays no part.
    let engine = shift_everything(json!({ "dateShiftKey": "123" }));
    let actual = anonymized(
        &engine,
        json!({
            "resourceType": "ServiceRequest", "id": "lipid", "status": "active", "intent": "order",
            "subject": { "reference": "#p" },
            "authoredOn": "2013-05-02",
            "contained": [{ "resourceType": "Patient", "id": "p", "birthDate": "1970-01-01" }]
        }),
    );
    assert_same(
        &actual,
        &json!({
            "resourceType": "ServiceRequest", "id": "lipid", "status": "active", "intent": "order",
            "meta": label::meta(&[label::perturbed()]),
            "subject": { "reference": "#p" },
            "authoredOn": "2013-06-13",
            "contained": [{ "resourceType": "Patient", "id": "p", "birthDate": "1970-02-12" }]
        }),
    );
}

#[test]
fn a_keep_rule_before_the_shift_protects_a_date() {
    let engine = engine(&json!({
        "fhirPathRules": [
            { "path": "Patient.birthDate", "method": "keep" },
            { "path": "nodesByType('date')", "method": "dateShift" }
        ],
        "parameters": { "dateShiftKey": "dummy" }
    }));
    let input = json!({ "resourceType": "Patient", "birthDate": "2015-02-07" });
    assert_same(&anonymized(&engine, input.clone()), &input);
}
