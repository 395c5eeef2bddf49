//! Which rule decides which node (the reference's AnonymizationVisitorTests): rules apply in
//! order and the first that selects a node decides it and everything under it; a rule naming a
//! resource type applies to resources of that type only, wherever they are (bundle entries,
//! contained resources); `nodesByType` and `nodesByName` select by R4 type and element name.

use serde_json::{Value, json};

use crate::helpers::{anonymized, assert_same, label, rules};

fn observation() -> Value {
    json!({
        "resourceType": "Observation", "status": "final", "code": { "text": "glucose" },
        "referenceRange": [{ "low": { "value": 10, "unit": "TestUnit" }, "high": { "value": 100, "unit": "TestUnit" } }]
    })
}

#[test]
fn a_node_perturbed_first_is_not_redacted_by_a_later_rule() {
    let engine = rules(
        json!([
            { "path": "Observation.referenceRange.low", "method": "perturb", "span": "2" },
            { "path": "Observation.referenceRange.low", "method": "redact" }
        ]),
        json!({}),
    );
    for _ in 0..20 {
        let output = anonymized(&engine, observation());
        let low = &output["referenceRange"][0]["low"];
        let value = low["value"].as_f64().unwrap_or_else(|| panic!("{output}"));
        assert!((9.0..=11.0).contains(&value), "{value}");
        assert_eq!(low["unit"], "TestUnit");
        assert_eq!(output["meta"], label::meta(&[label::perturbed()]));
    }
}

#[test]
fn a_value_redacted_first_is_not_perturbed_by_a_later_rule() {
    let engine = rules(
        json!([
            { "path": "Observation.referenceRange.low.value", "method": "redact" },
            { "path": "Observation.referenceRange.low", "method": "perturb", "span": "2" }
        ]),
        json!({}),
    );
    let mut expected = observation();
    expected["referenceRange"][0]["low"] = json!({ "unit": "TestUnit" });
    expected["meta"] = label::meta(&[label::redacted()]);
    assert_same(&anonymized(&engine, observation()), &expected);
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient", "active": true,
        "address": [{ "city": "patienttestcity1", "country": "patienttestcountry1" }, { "city": "patienttestcity2" }],
        "contact": [{ "address": { "city": "contactcity", "state": "WA" } }]
    })
}

#[test]
fn keeping_a_whole_resource_first_leaves_later_rules_nothing() {
    let engine = rules(json!([{ "path": "Patient", "method": "keep" }, { "path": "Patient.address", "method": "redact" }]), json!({}));
    assert_same(&anonymized(&engine, patient()), &patient());
}

#[test]
fn nodes_by_type_reaches_every_element_of_the_type() {
    let engine = rules(json!([{ "path": "nodesByType('Address')", "method": "redact" }]), json!({}));
    assert_same(
        &anonymized(&engine, patient()),
        &json!({ "resourceType": "Patient", "active": true, "meta": label::meta(&[label::redacted()]) }),
    );
}

#[test]
fn nodes_by_type_under_a_resource_type_leaves_other_resources_alone() {
    let engine = rules(json!([{ "path": "Person.nodesByType('Address')", "method": "redact" }]), json!({}));
    assert_same(&anonymized(&engine, patient()), &patient());
    let person = json!({ "resourceType": "Person", "active": true, "address": [{ "city": "personcity" }] });
    assert_same(
        &anonymized(&engine, person),
        &json!({ "resourceType": "Person", "active": true, "meta": label::meta(&[label::redacted()]) }),
    );
}

#[test]
fn nodes_by_type_with_a_child_or_a_filter_selects_only_that() {
    let engine = rules(json!([{ "path": "nodesByType('Address').city", "method": "redact" }]), json!({}));
    let mut expected = patient();
    expected["address"] = json!([{ "country": "patienttestcountry1" }]);
    expected["contact"] = json!([{ "address": { "state": "WA" } }]);
    expected["meta"] = label::meta(&[label::redacted()]);
    assert_same(&anonymized(&engine, patient()), &expected);

    let engine = rules(json!([{ "path": "nodesByType('Address').where(city='patienttestcity1').city", "method": "redact" }]), json!({}));
    let mut expected = patient();
    expected["address"][0] = json!({ "country": "patienttestcountry1" });
    expected["meta"] = label::meta(&[label::redacted()]);
    assert_same(&anonymized(&engine, patient()), &expected);
}

#[test]
fn a_keep_rule_before_nodes_by_type_protects_its_node_only() {
    let engine = rules(
        json!([
            { "path": "Patient.address.country", "method": "keep" },
            { "path": "nodesByType('Address')", "method": "redact" }
        ]),
        json!({}),
    );
    let expected = json!({
        "resourceType": "Patient", "active": true,
        "address": [{ "country": "patienttestcountry1" }],
        "meta": label::meta(&[label::redacted()])
    });
    assert_same(&anonymized(&engine, patient()), &expected);
}

#[test]
fn nodes_by_name_reaches_every_element_of_the_name() {
    let engine = rules(json!([{ "path": "nodesByName('city')", "method": "redact" }]), json!({}));
    assert_same(&anonymized(&engine, patient()), &patient_without_cities());
}

#[test]
fn a_resource_type_rule_applies_to_bundle_entries_and_contained_resources_of_that_type() {
    let engine = rules(json!([{ "path": "Person.address.city", "method": "redact" }, { "path": "Person", "method": "redact" }]), json!({}));
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            { "resource": { "resourceType": "Person", "active": true, "address": [{ "city": "personcity" }] } },
            { "resource": { "resourceType": "Patient", "active": true,
                            "contained": [{ "resourceType": "Person", "id": "p", "active": false }],
                            "link": [{ "other": { "reference": "#p" }, "type": "seealso" }] } }
        ]
    });
    let expected = json!({
        "resourceType": "Bundle", "type": "collection",
        "meta": label::meta(&[label::redacted()]),
        "entry": [
            { "resource": { "resourceType": "Person", "meta": label::meta(&[label::redacted()]) } },
            { "resource": { "resourceType": "Patient", "active": true,
                            "meta": label::meta(&[label::redacted()]),
                            "contained": [{ "resourceType": "Person" }],
                            "link": [{ "other": { "reference": "#p" }, "type": "seealso" }] } }
        ]
    });
    assert_same(&anonymized(&engine, bundle), &expected);
}

#[test]
fn nodes_by_type_takes_the_type_in_single_or_double_quotes() {
    for path in ["nodesByType('Address').city", "nodesByType(\"Address\").city", "nodesByName(\"city\")"] {
        let engine = rules(json!([{ "path": path, "method": "redact" }]), json!({}));
        assert_same(&anonymized(&engine, patient()), &patient_without_cities());
    }
}

#[test]
fn new_labels_follow_the_labels_a_resource_already_has() {
    let engine = rules(json!([{ "path": "Patient.address", "method": "redact" }]), json!({}));
    let mut input = patient();
    input["meta"] = json!({ "versionId": "Test", "security": [{ "system": "urn:x", "code": "MASKED" }] });
    let mut expected = patient();
    expected.as_object_mut().unwrap().remove("address");
    expected["meta"] = json!({ "versionId": "Test", "security": [{ "system": "urn:x", "code": "MASKED" }, label::redacted()] });
    assert_same(&anonymized(&engine, input), &expected);
}

/// The test Patient after a redaction of every `city`, labelled redacted.
fn patient_without_cities() -> Value {
    let mut expected = patient();
    expected["address"] = json!([{ "country": "patienttestcountry1" }]);
    expected["contact"] = json!([{ "address": { "state": "WA" } }]);
    expected["meta"] = label::meta(&[label::redacted()]);
    expected
}
