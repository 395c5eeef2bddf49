//! `substitute` (the reference's SubstituteProcessorTests and SubstituteSettingTests): a primitive
//! takes `replaceWith` as its value, a complex element becomes `replaceWith` (elements it lacks go),
//! except for the parts an earlier rule already decided, which stay as that rule left them.

use serde_json::{Value, json};

use crate::helpers::{anonymized, assert_same, label, refusal, rules};

fn patient() -> Value {
    json!({
        "resourceType": "Patient", "id": "123", "active": true, "birthDate": "2000",
        "name": [{ "use": "official", "family": "Green", "given": ["Chris", "Jason"],
                   "period": { "start": "2020-01-01T00:00:00.000Z", "end": "2022-01-01T14:01:01.000Z" } }],
        "address": [{ "state": "DC" }],
        "telecom": [{ "use": "home", "system": "email", "value": "test@example.com",
                      "period": { "start": "2018-01-01", "end": "2019-12-30" } }]
    })
}

fn substitute(earlier: &[Value], path: &str, replace_with: Value) -> bulkfhir::anonymize::Engine {
    let mut all: Vec<Value> = earlier.to_vec();
    all.push(json!({ "path": path, "method": "substitute", "replaceWith": replace_with }));
    rules(Value::Array(all), json!({}))
}

fn with(mut resource: Value, pointer_field: &str, value: Option<Value>, labelled: bool) -> Value {
    let object = resource.as_object_mut().unwrap();
    match value {
        Some(v) => object.insert(pointer_field.to_owned(), v),
        None => object.remove(pointer_field),
    };
    if labelled {
        resource["meta"] = label::meta(&[label::substituted()]);
    }
    resource
}

#[test]
fn a_primitive_takes_the_replacement_as_its_value() {
    let engine = substitute(&[], "Patient.id", json!("abc"));
    assert_same(&anonymized(&engine, patient()), &with(patient(), "id", Some(json!("abc")), true));
    let engine = substitute(&[], "Patient.birthDate", json!("2000"));
    assert_same(&anonymized(&engine, patient()), &with(patient(), "birthDate", Some(json!("2000")), true));
    let engine = substitute(&[], "Patient.active", Value::Null);
    assert_same(&anonymized(&engine, patient()), &with(patient(), "active", None, true));
}

#[test]
fn a_complex_element_becomes_the_replacement() {
    let engine = substitute(&[], "Patient.address", Value::Null);
    assert_same(&anonymized(&engine, patient()), &with(patient(), "address", None, true));

    let address = json!({ "use": "home", "type": "both", "text": "room", "city": "Beijing", "district": "Haidian",
                          "state": "Beijing", "postalCode": "100871", "period": { "start": "1974-12-25" } });
    let engine = substitute(&[], "Patient.address", address.clone());
    assert_same(&anonymized(&engine, patient()), &with(patient(), "address", Some(json!([address])), true));

    let name = json!({ "use": "nickname", "family": "Harry", "given": ["Jim"] });
    let engine = substitute(&[], "Patient.name", name.clone());
    assert_same(&anonymized(&engine, patient()), &with(patient(), "name", Some(json!([name])), true));

    let engine = substitute(
        &[],
        "Patient.telecom",
        json!({ "use": "work", "system": "phone", "value": "12345678", "period": { "start": "2020", "end": "" } }),
    );
    let telecom = json!([{ "system": "phone", "value": "12345678", "use": "work", "period": { "start": "2020" } }]);
    assert_same(&anonymized(&engine, patient()), &with(patient(), "telecom", Some(telecom), true));
}

#[test]
fn a_primitive_an_earlier_rule_decided_is_not_substituted() {
    let engine = substitute(&[json!({ "path": "Patient.id", "method": "keep" })], "Patient.id", json!("abv"));
    assert_same(&anonymized(&engine, patient()), &patient());
}

#[test]
fn parts_an_earlier_rule_decided_survive_the_substitution_of_their_parent() {
    let keep_first_given = json!({ "path": "Patient.name.given[0]", "method": "keep" });
    let engine = substitute(&[keep_first_given], "Patient.name", json!({ "use": "nickname", "family": "Harry", "given": ["Jim", "Cook"] }));
    let name = json!([{ "use": "nickname", "family": "Harry", "given": ["Chris", "Cook"] }]);
    assert_same(&anonymized(&engine, patient()), &with(patient(), "name", Some(name), true));

    let keep_start = json!({ "path": "Patient.name.period.start", "method": "keep" });
    let engine = substitute(&[keep_start], "Patient.name", json!({}));
    let name = json!([{ "period": { "start": "2020-01-01T00:00:00.000Z" } }]);
    assert_same(&anonymized(&engine, patient()), &with(patient(), "name", Some(name), true));
}

#[test]
fn a_replacement_that_does_not_fit_the_element_is_refused() {
    let rule = |path: &str, replace_with: Value| json!({ "fhirPathRules": [{ "path": path, "method": "substitute", "replaceWith": replace_with }] });
    refusal(&rule("Patient.address", json!("")), patient());
    refusal(&rule("Patient.name", json!("2019-01-01")), patient());
    refusal(&rule("Patient.telecom", json!({ "use": "nickname", "family": "Harry", "given": ["Jim"] })), patient());
}
