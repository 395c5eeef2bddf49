//! The reference engine's functional cases (its ResourceTests, CollectionResourceTests and R4
//! VersionSpecificTests): whole resources under whole configurations, compared exactly with the
//! reference's expected outputs. Fixtures in tests/fixtures/anonymize/{configs,inputs,expected}.

use serde_json::Value;

use crate::helpers::{anonymize, assert_case, config, engine, read_json};

#[test]
fn a_patient_under_the_common_rules_is_shifted_hashed_and_redacted_as_the_reference_does() {
    assert_case("patient", "common");
}

#[test]
fn redacting_every_resource_leaves_only_the_resource_type_and_the_redacted_label() {
    assert_case("patient", "redact_everything");
}

#[test]
fn a_patient_without_partial_redaction_loses_its_dates_and_postal_codes_whole() {
    assert_case("patient", "common_without_partial_redaction");
}

#[test]
fn non_ascii_text_is_hashed_kept_and_redacted_like_any_other() {
    assert_case("patient_with_unicode_text", "common");
}

#[test]
fn an_extension_on_a_date_without_a_value_is_still_shifted() {
    assert_case("patient_with_extension_on_absent_birth_date", "common");
}

#[test]
fn a_primitive_substitution_replaces_every_family_name() {
    assert_case("patient_names", "substitute_family");
}

#[test]
fn a_complex_substitution_replaces_whole_names() {
    assert_case("patient_names", "substitute_name");
}

#[test]
fn a_substitution_keeps_a_child_an_earlier_rule_already_redacted() {
    assert_case("patient_names_with_period_start", "substitute_after_redacting_a_child");
}

#[test]
fn a_substitution_keeps_a_child_an_earlier_rule_already_substituted() {
    assert_case("patient_names_with_period_start", "substitute_child_then_parent");
}

#[test]
fn a_child_rule_after_its_parent_was_substituted_changes_nothing() {
    assert_case("patient_names_with_period_start", "substitute_parent_then_child");
}

#[test]
fn generalize_maps_codes_dates_integers_and_postal_codes_by_their_cases() {
    assert_case("patient_to_generalize", "generalize_patient");
}

#[test]
fn a_failing_rule_under_skip_gives_the_empty_redacted_resource() {
    assert_case("patient", "failing_rule_skip");
}

#[test]
fn a_failing_rule_under_raise_is_an_error() {
    let engine = engine(&config("failing_rule_raise"));
    assert!(anonymize(&engine, read_json("inputs/patient.json")).is_err());
}

#[test]
fn a_failing_rule_without_processing_errors_set_is_an_error() {
    let engine = engine(&config("failing_rule_default"));
    assert!(anonymize(&engine, read_json("inputs/patient.json")).is_err());
}

#[test]
fn a_contained_resource_is_de_identified_and_its_labels_go_to_the_container() {
    assert_case("condition_with_contained_practitioner", "common");
}

#[test]
fn a_failing_rule_in_a_contained_resource_under_skip_empties_the_container() {
    assert_case("condition_with_contained_practitioner", "failing_rule_skip");
}

#[test]
fn a_failing_rule_in_a_contained_resource_under_raise_is_an_error() {
    let engine = engine(&config("failing_rule_raise"));
    assert!(anonymize(&engine, read_json("inputs/condition_with_contained_practitioner.json")).is_err());
}

#[test]
fn redacting_everything_keeps_contained_resources_as_bare_types_without_labels() {
    assert_case("condition_with_contained_practitioner", "redact_everything");
}

#[test]
fn each_bundle_entry_is_de_identified_as_a_resource_of_its_own() {
    assert_case("collection_bundle", "common");
}

#[test]
fn a_failing_rule_in_a_bundle_entry_under_skip_empties_the_bundle() {
    assert_case("collection_bundle", "failing_rule_skip");
}

#[test]
fn a_failing_rule_in_a_bundle_entry_under_raise_is_an_error() {
    let engine = engine(&config("failing_rule_raise"));
    assert!(anonymize(&engine, read_json("inputs/collection_bundle.json")).is_err());
}

#[test]
fn redacting_everything_in_a_bundle_labels_every_entry() {
    assert_case("collection_bundle", "redact_everything");
}

#[test]
fn a_resource_contained_in_a_bundle_entry_is_de_identified() {
    assert_case("bundle_with_contained_practitioner", "common");
}

#[test]
fn redacting_everything_in_a_bundle_keeps_contained_resources_as_bare_types() {
    assert_case("bundle_with_contained_practitioner", "redact_everything");
}

#[test]
fn a_bundle_without_entry_resources_shifts_its_own_instants_and_date_times() {
    assert_case("transaction_bundle_without_resources", "common");
}

#[test]
fn substitution_reaches_resources_contained_in_a_resource() {
    assert_case("condition_with_contained_patients", "substitute_child_then_parent");
}

#[test]
fn substitution_reaches_every_bundle_entry_and_labels_the_bundle() {
    assert_case("collection_bundle_with_names", "substitute_child_then_parent");
}

// R4 resources (and R4-only elements of common ones) under the reference's R4 sample
// configuration, where `Resource.id` is hashed before the dates are shifted, so the shift is
// keyed by the hashed id.

#[test]
fn organization_affiliation_keeps_its_identifiers_and_telecom_under_the_sample_configuration() {
    assert_case("organization_affiliation", "sample");
}

#[test]
fn a_service_request_and_its_contained_resources_share_one_shift_and_hashed_local_references() {
    assert_case("service_request_with_contained", "sample");
}

#[test]
fn medicinal_product_is_de_identified_under_the_sample_configuration() {
    assert_case("medicinal_product", "sample");
}

#[test]
fn account_with_r4_elements_is_de_identified_under_the_sample_configuration() {
    assert_case("account", "sample");
}

#[test]
fn claim_with_r4_elements_is_de_identified_under_the_sample_configuration() {
    assert_case("claim", "sample");
}

#[test]
fn contract_with_r4_elements_is_de_identified_under_the_sample_configuration() {
    assert_case("contract", "sample");
}

#[test]
fn the_sample_configuration_file_is_accepted_unchanged() {
    let bytes = std::fs::read(crate::helpers::fixture_path("configuration-sample.json")).unwrap();
    if let Err(e) = bulkfhir::anonymize::Engine::from_json(&bytes) {
        panic!("the reference's sample configuration is refused: {e}");
    }
}

#[test]
fn every_reference_configuration_fixture_is_accepted() {
    let dir = crate::helpers::fixture_path("configs");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if let Err(e) = bulkfhir::anonymize::Engine::from_json(config.to_string().as_bytes()) {
            panic!("{} is refused: {e}", path.display());
        }
    }
}
