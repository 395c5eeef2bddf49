//! Configurations the reference's validator refuses (its AnonymizerConfigurationValidatorTests,
//! AnonymizerConfigurationManagerTests and the settings tests), each refused here with a message
//! that names the problem, and the ones it accepts. Where the reference only warns and fails
//! later (an unknown method), bulkfhir refuses at once: an export must not fail halfway.

use serde_json::{Value, json};

use crate::helpers::{config_error, config_error_of_bytes, engine};

fn rules_only(rules: Value) -> Value {
    json!({ "fhirVersion": "R4", "fhirPathRules": rules })
}

/// The configuration is refused and the message mentions each of `words` (case aside).
fn assert_refused_naming(config: &Value, words: &[&str]) {
    let message = config_error(config).to_string();
    for word in words {
        assert!(message.to_lowercase().contains(&word.to_lowercase()), "{message:?} does not name {word:?}\n{config}");
    }
}

const PERTURB_AGE: &str = "Condition.onset as Age";

#[test]
fn a_configuration_without_rules_is_refused() {
    assert_refused_naming(&json!({ "fhirVersion": "R4" }), &["fhirPathRules"]);
}

#[test]
fn a_rule_without_path_or_method_is_refused() {
    assert_refused_naming(&rules_only(json!([{ "method": "redact" }])), &["path"]);
    assert_refused_naming(&rules_only(json!([{ "path": "Patient.name" }])), &["method"]);
}

#[test]
fn a_path_that_is_not_fhirpath_is_refused_by_name() {
    assert_refused_naming(&rules_only(json!([{ "path": "invalid()", "method": "redact" }])), &["invalid()"]);
    assert_refused_naming(&rules_only(json!([{ "path": "Patient.name.where(", "method": "redact" }])), &["Patient.name.where("]);
    for path in ["nodesByType(", "nodesByType().", ".nodesByType()", "nodesByType('Address)", "nodesByType('Address')..."] {
        assert_refused_naming(&rules_only(json!([{ "path": path, "method": "redact" }])), &[path]);
    }
}

#[test]
fn an_unknown_method_is_refused_by_name() {
    assert_refused_naming(&rules_only(json!([{ "path": "Patient", "method": "skip" }])), &["skip"]);
    assert_refused_naming(&rules_only(json!([{ "path": "Patient.name", "method": "mask" }])), &["mask"]);
}

#[test]
fn an_encrypt_key_of_a_size_aes_has_not_is_refused_without_showing_the_key() {
    for key in ["01234567890123456789", "short", "0123456789abcdef0123456789abcdef0"] {
        let config = json!({
            "fhirPathRules": [{ "path": "Patient.name", "method": "redact" }],
            "parameters": { "encryptKey": key }
        });
        let message = config_error(&config).to_string();
        assert!(message.to_lowercase().replace(' ', "").contains("encryptkey"), "{message:?}");
        assert!(!message.contains(key), "the key is a secret: {message:?}");
    }
}

#[test]
fn a_substitution_without_replacement_is_refused() {
    assert_refused_naming(&rules_only(json!([{ "path": "Patient", "method": "substitute" }])), &["replaceWith"]);
}

#[test]
fn perturb_settings_out_of_their_ranges_are_refused_by_name() {
    let perturb = |settings: Value| {
        let mut rule = json!({ "path": PERTURB_AGE, "method": "perturb" });
        rule.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
        rules_only(json!([rule]))
    };
    assert_refused_naming(&perturb(json!({ "span": 3, "rangeType": "unknown" })), &["rangeType"]);
    assert_refused_naming(&perturb(json!({})), &["span"]);
    assert_refused_naming(&perturb(json!({ "span": "-1" })), &["span"]);
    assert_refused_naming(&perturb(json!({ "span": -1 })), &["span"]);
    assert_refused_naming(&perturb(json!({ "span": 3, "roundTo": "abc" })), &["roundTo"]);
    assert_refused_naming(&perturb(json!({ "span": 3, "roundTo": -1 })), &["roundTo"]);
    assert_refused_naming(&perturb(json!({ "span": 3, "roundTo": "29" })), &["roundTo"]);
    assert_refused_naming(&perturb(json!({ "span": 3, "roundTo": 29 })), &["roundTo"]);
}

#[test]
fn perturb_settings_within_their_ranges_are_accepted() {
    for settings in [
        json!({ "span": 3 }),
        json!({ "span": "2.5", "roundTo": "28", "rangeType": "Proportional" }),
        json!({ "span": 0, "roundTo": 0, "rangeType": "fixed" }),
    ] {
        let mut rule = json!({ "path": PERTURB_AGE, "method": "perturb" });
        rule.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
        engine(&rules_only(json!([rule])));
    }
}

#[test]
fn generalize_settings_that_cannot_work_are_refused_by_name() {
    let generalize = |extra: Value| {
        let mut rule = json!({ "path": PERTURB_AGE, "method": "generalize" });
        rule.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        rules_only(json!([rule]))
    };
    assert_refused_naming(&generalize(json!({ "otherValues": "keep" })), &["cases"]);
    assert_refused_naming(&generalize(json!({ "cases": { "$this>=0 && $this<10": "10" }, "otherValues": "keep" })), &["$this>=0 && $this<10"]);
    assert_refused_naming(&generalize(json!({ "cases": { "$this>=0": "10 +" } })), &["10 +"]);
    assert_refused_naming(&generalize(json!({ "cases": { "$this>=0 and $this<10": "10" }, "otherValues": "unknown" })), &["otherValues"]);
}

#[test]
fn a_fhir_version_other_than_r4_is_refused() {
    for version in ["Stu3", "r3", "R5"] {
        let mut config = rules_only(json!([{ "path": "Patient.name", "method": "redact" }]));
        config["fhirVersion"] = json!(version);
        assert_refused_naming(&config, &["fhirVersion", version]);
    }
}

#[test]
fn r4_an_empty_fhir_version_or_none_is_accepted() {
    let rules = json!([
        { "path": "Patient.nodesByType('HumanName')", "method": "redact" },
        { "path": "nodesByType('HumanName')", "method": "redact" },
        { "path": "Resource", "method": "keep" },
        { "path": "Device.where(id.exists()).id", "method": "keep" }
    ]);
    for version in [Some("R4"), Some("r4"), Some(""), None] {
        let mut config = json!({ "fhirPathRules": rules, "parameters": { "dateShiftKey": "", "cryptoHashKey": "" } });
        if let Some(version) = version {
            config["fhirVersion"] = json!(version);
        }
        engine(&config);
    }
}

#[test]
fn processing_errors_other_than_raise_or_skip_are_refused() {
    let mut config = rules_only(json!([{ "path": "Patient.name", "method": "redact" }]));
    config["processingErrors"] = json!("ignore");
    assert_refused_naming(&config, &["processingErrors"]);
}

#[test]
fn a_date_shift_scope_other_than_resource_file_or_folder_is_refused() {
    let mut config = rules_only(json!([{ "path": "nodesByType('date')", "method": "dateShift" }]));
    config["parameters"] = json!({ "dateShiftScope": "bundle" });
    assert_refused_naming(&config, &["dateShiftScope"]);
}

#[test]
fn an_unknown_parameter_is_refused_by_name() {
    let mut config = rules_only(json!([{ "path": "Patient.name", "method": "redact" }]));
    config["parameters"] = json!({ "dateShiftKeys": "123" });
    assert_refused_naming(&config, &["dateShiftKeys"]);
}

#[test]
fn text_that_is_not_json_is_refused() {
    config_error_of_bytes(b"{ \"fhirPathRules\": [ ");
    config_error_of_bytes(b"");
    config_error_of_bytes(b"[]");
}

#[test]
fn a_key_given_twice_is_refused() {
    let text = br#"{ "fhirPathRules": [{ "path": "Patient.name", "method": "redact" }], "fhirPathRules": [] }"#;
    let message = config_error_of_bytes(text).to_string();
    assert!(message.contains("fhirPathRules") || message.to_lowercase().contains("duplicate"), "{message:?}");
}

#[test]
fn methods_are_matched_without_regard_to_case() {
    engine(&rules_only(json!([
        { "path": "nodesByType('date')", "method": "dateshift" },
        { "path": "Patient.id", "method": "CRYPTOHASH" },
        { "path": "Patient.name", "method": "Redact" }
    ])));
}
