//! `generalize` (the reference's GeneralizeProcessorTests): the first case whose FHIRPath
//! condition holds for the value gives the new value; no case holding means `otherValues`
//! (redact unless it says keep). Only the cases whose answer does not hang on comparing values of
//! different precision are here: those follow the .NET FHIRPath library, not the specification.

use bulkfhir::anonymize::Engine;
use serde_json::{Value, json};

use crate::helpers::{anonymized, label, refusal, rules};

fn generalize(path: &str, cases: Value, other_values: Option<&str>) -> Engine {
    let mut rule = json!({ "path": path, "method": "generalize", "cases": cases });
    if let Some(other) = other_values {
        rule["otherValues"] = json!(other);
    }
    rules(json!([rule]), json!({}))
}

/// Runs `engine` on `resource(value)` for each `(value, expected)`: `None` means the element goes.
/// Reports every value that went wrong, not only the first.
fn check(engine: &Engine, resource: impl Fn(Value) -> Value, pointer: &str, cases: &[(Value, Option<Value>)]) {
    let mut wrong = Vec::new();
    for (before, after) in cases {
        let output = anonymized(engine, resource(before.clone()));
        let labels = output["meta"]["security"].as_array().cloned().unwrap_or_default();
        if output.pointer(pointer) != after.as_ref() || !labels.contains(&label::generalized()) {
            wrong.push(format!("  {before} gave {output}, expected {pointer} = {after:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

fn birth_count(n: Value) -> Value {
    json!({ "resourceType": "Patient", "multipleBirthInteger": n })
}

fn integer_ranges() -> Value {
    json!({ "$this>=0 and $this<20": "20", "$this>=20 and $this<40": "40", "$this>=40 and $this<60": "60", "$this>=60 and $this<80": "80" })
}

#[test]
fn integers_are_mapped_to_the_top_of_their_range() {
    let cases = [(json!(5), Some(json!(20))), (json!(20), Some(json!(40))), (json!(43), Some(json!(60))), (json!(78), Some(json!(80)))];
    check(&generalize("Patient.multipleBirth", integer_ranges(), None), birth_count, "/multipleBirthInteger", &cases);
    check(&generalize("Patient.multipleBirth", integer_ranges(), Some("redact")), birth_count, "/multipleBirthInteger", &[(json!(110), None)]);
    check(&generalize("Patient.multipleBirth", integer_ranges(), Some("keep")), birth_count, "/multipleBirthInteger", &[(json!(110), Some(json!(110)))]);
}

#[test]
fn integers_are_approximated_by_an_expression_of_the_value() {
    let cases = json!({ "$this>=-20 and $this<80": "($this div 10 -1)*10 " });
    let engine = generalize("Patient.multipleBirth", cases.clone(), None);
    let values = [(json!(5), Some(json!(-10))), (json!(20), Some(json!(10))), (json!(43), Some(json!(30))), (json!(78), Some(json!(60))), (json!(110), None)];
    check(&engine, birth_count, "/multipleBirthInteger", &values);
    check(&generalize("Patient.multipleBirth", cases.clone(), Some("keep")), birth_count, "/multipleBirthInteger", &[(json!(110), Some(json!(110)))]);

    let series = |n: Value| json!({ "resourceType": "ImagingStudy", "status": "available", "subject": { "reference": "Patient/1" }, "numberOfSeries": n });
    check(&generalize("ImagingStudy.numberOfSeries", cases.clone(), None), series, "/numberOfSeries", &[(json!(24), Some(json!(10)))]);
    let sequence = |n: Value| json!({ "resourceType": "Claim", "careTeam": [{ "sequence": n, "provider": { "reference": "Practitioner/1" } }] });
    check(&generalize("Claim.careTeam.sequence", cases, None), sequence, "/careTeam/0/sequence", &[(json!(24), Some(json!(10)))]);
}

#[test]
fn the_first_case_that_holds_wins() {
    let cases = json!({ "$this>=0 and $this<20": "20", "$this>=10 and $this<40": "40", "$this>=30 and $this<60": "60", "true": "80" });
    let values = [(json!(18), Some(json!(20))), (json!(31), Some(json!(40))), (json!(45), Some(json!(60))), (json!(110), Some(json!(80)))];
    check(&generalize("Patient.multipleBirth", cases, None), birth_count, "/multipleBirthInteger", &values);
}

#[test]
fn an_integer_can_be_compared_with_and_mapped_to_a_decimal() {
    let engine = generalize("Patient.multipleBirth", json!({ "$this>=0 and $this<20": "$this / 2" }), None);
    check(&engine, birth_count, "/multipleBirthInteger", &[(json!(5), Some(json!(2.5)))]);
    let engine = generalize("Patient.multipleBirth", json!({ "$this<5.5": "$this" }), None);
    check(&engine, birth_count, "/multipleBirthInteger", &[(json!(5), Some(json!(5)))]);
}

fn language(code: Value) -> Value {
    json!({ "resourceType": "Patient", "communication": [{ "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": code }] } }] })
}

#[test]
fn codes_in_a_value_set_are_mapped_to_one_code() {
    let cases = json!({
        "$this in ('en-AU' | 'en-CA' | 'en-GB' | 'en-IN' | 'en-NZ' | 'en-SG' | 'en-US')": "'en'",
        "('es-AR' | 'es-ES' | 'es-UY') contains $this": "'es'"
    });
    let engine = generalize("Patient.communication.language.coding.code", cases, None);
    let values = [
        (json!("en-AU"), Some(json!("en"))),
        (json!("en-CA"), Some(json!("en"))),
        (json!("en-CI"), None),
        (json!("es-AR"), Some(json!("es"))),
        (json!("es-ES"), Some(json!("es"))),
    ];
    check(&engine, language, "/communication/0/language/coding/0/code", &values);
}

fn postal_code(code: Value) -> Value {
    json!({ "resourceType": "Patient", "address": [{ "country": "US", "postalCode": code }] })
}

#[test]
fn strings_are_masked_by_an_expression() {
    let cases = json!({ "$this.startsWith('123') or $this.endsWith('234')": "$this.substring(0,3)+'****'" });
    let values = [
        (json!("1230005"), Some(json!("123****"))),
        (json!("1238765"), Some(json!("123****"))),
        (json!("2345234"), Some(json!("234****"))),
        (json!("1111111"), None),
    ];
    check(&generalize("Patient.address.postalCode", cases.clone(), Some("redact")), postal_code, "/address/0/postalCode", &values);
    check(&generalize("Patient.address.postalCode", cases, Some("keep")), postal_code, "/address/0/postalCode", &[(json!("7654321"), Some(json!("7654321")))]);
}

#[test]
fn dates_are_mapped_by_range() {
    let cases = json!({ "$this >= @1990-01-01 and $this < @2000-01-01": "@1990", "$this = @2010": "@2010-01-01", "$this ~ @2020": "@2020-01-01" });
    let birth = |d: Value| json!({ "resourceType": "Patient", "birthDate": d });
    check(&generalize("Patient.birthDate", cases.clone(), None), birth, "/birthDate", &[(json!("1990-01-01"), Some(json!("1990"))), (json!("2000-01-01"), None)]);
    check(&generalize("Patient.birthDate", cases.clone(), Some("redact")), birth, "/birthDate", &[(json!("2020-05-20"), None)]);
    check(&generalize("Patient.birthDate", cases, Some("keep")), birth, "/birthDate", &[(json!("2021-05-20"), Some(json!("2021-05-20")))]);
}

#[test]
fn date_times_are_mapped_by_range_across_time_zones() {
    let cases = json!({
        "$this >= @1990-01-01T00:00:00Z and $this <= @2000-01-01T00:00:00+08:00": "@1990",
        "$this = @2010-01-01T00:00:00+08:00": "@2010-01-01",
        "$this ~ @2020-01-01T00:00:00": "@2020-01-01"
    });
    let effective = |d: Value| json!({ "resourceType": "Observation", "status": "final", "effectiveDateTime": d });
    let values = [
        (json!("1990-01-01T00:00:00Z"), Some(json!("1990"))),
        (json!("1990-01-01T00:00:00+08:00"), None),
        (json!("2000-01-01T00:00:00Z"), None),
        (json!("2000-01-01T00:00:00+08:00"), Some(json!("1990"))),
        (json!("2000-01-01T00:00:00+09:00"), Some(json!("1990"))),
        (json!("2000-01-01T00:00:00-09:00"), None),
        (json!("2010-01-01T00:00:00Z"), None),
        (json!("2010-01-01T00:00:00+08:00"), Some(json!("2010-01-01"))),
        (json!("2010-01-01T00:00:00+09:00"), None),
        (json!("2009-12-31T16:00:00Z"), Some(json!("2010-01-01"))),
        (json!("2020-01-01T00:00:00"), Some(json!("2020-01-01"))),
    ];
    check(&generalize("Observation.effective", cases, None), effective, "/effectiveDateTime", &values);
}

#[test]
fn times_are_mapped_by_range() {
    let cases = json!({ "$this >= @T13:45:02 and $this < @T23:45:02": "@T12:00:00", "$this = @T00:00:00": "@T00:00:00", "$this ~ @T10:00:00": "@T10:00:00" });
    let value = |t: Value| json!({ "resourceType": "Observation", "status": "final", "valueTime": t });
    let values = [
        (json!("13:45:02"), Some(json!("12:00:00"))),
        (json!("02:00:00"), None),
        (json!("06:00:00"), None),
        (json!("00:00:00"), Some(json!("00:00:00"))),
        (json!("10:00:00"), Some(json!("10:00:00"))),
    ];
    check(&generalize("nodesByType('time')", cases, None), value, "/valueTime", &values);
}

#[test]
fn instants_are_mapped_by_range() {
    let cases = json!({ "$this >= @1990-01-01T00:00:00Z and $this <= @2020-01-01T00:00:00+08:00": "@1990-01-01T00:00:00Z" });
    let issued = |t: Value| json!({ "resourceType": "Observation", "status": "final", "issued": t });
    let values = [
        (json!("2001-04-06T04:13:14Z"), Some(json!("1990-01-01T00:00:00Z"))),
        (json!("1995-04-06T05:13:14+05:00"), Some(json!("1990-01-01T00:00:00Z"))),
        (json!("2020-04-06T05:13:14+05:00"), None),
    ];
    check(&generalize("Observation.issued", cases, None), issued, "/issued", &values);
}

#[test]
fn the_day_can_be_cut_off_with_a_regular_expression() {
    let date_cases = json!({ "true": r"$this.toString().replaceMatches('\\b(?<year>\\d{2,4})-(?<month>\\d{1,2})-(?<day>\\d{1,2})\\b','${year}-${month}')" });
    let birth = |d: Value| json!({ "resourceType": "Patient", "birthDate": d });
    let values = [(json!("1990-11-01"), Some(json!("1990-11"))), (json!("1990"), Some(json!("1990"))), (json!("1990-11"), Some(json!("1990-11")))];
    check(&generalize("Patient.birthDate", date_cases, None), birth, "/birthDate", &values);

    let date_time_cases = json!({
        "true": r"$this.toString().replaceMatches('\\b(?<year>\\d{2,4})-(?<month>\\d{1,2})-(?<day>\\d{1,2})(T)?(?<hour>\\d{1,2})?(:)?(?<minute>\\d{1,2})?(:)?(?<second>\\d{1,2})?(Z)?\\b','${year}-${month}')"
    });
    let effective = |d: Value| json!({ "resourceType": "Observation", "status": "final", "effectiveDateTime": d });
    let values = [
        (json!("1990-01-01T00:00:00Z"), Some(json!("1990-01"))),
        (json!("1990-01-01T00:00:00"), Some(json!("1990-01"))),
        (json!("1990-01-01"), Some(json!("1990-01"))),
    ];
    check(&generalize("Observation.effective", date_time_cases, None), effective, "/effectiveDateTime", &values);
}

#[test]
fn a_primitive_carrying_an_extension_is_refused_as_the_reference_refuses_it() {
    // The reference applies a rule's method to every node under the selected one: the
    // extension under `_birthDate` is not a primitive, so generalize gives up.
    let config = json!({ "fhirPathRules": [{ "path": "Patient.birthDate", "method": "generalize", "cases": { "true": "@2000-01-01" } }] });
    let input = json!({ "resourceType": "Patient", "birthDate": "1990-02-03",
                        "_birthDate": { "extension": [{ "url": "http://example.org/x", "valueString": "y" }] } });
    let message = refusal(&config, input);
    assert!(message.to_lowercase().contains("generaliz"), "{message}");
}

#[test]
fn a_case_that_cannot_be_evaluated_on_the_value_is_refused() {
    let rule = |path: &str, cases: Value| json!({ "fhirPathRules": [{ "path": path, "method": "generalize", "cases": cases }] });
    refusal(&rule("Patient.multipleBirth", json!({ "$this>='0' and $this<'20'": "20" })), birth_count(json!(5)));
    refusal(&rule("Patient.address.postalCode", json!({ "$this > @2015-01-01": "@2015-01-01" })), postal_code(json!("2015-01-01")));
}

#[test]
fn generalizing_a_complex_element_is_refused() {
    let input = json!({ "resourceType": "Patient", "address": [{ "state": "DC" }],
                        "name": [{ "use": "official", "family": "Green", "given": ["Chris", "Jason"] }],
                        "telecom": [{ "use": "home", "system": "email", "value": "test@example.com" }] });
    for path in ["Patient.address", "Patient.name", "Patient.telecom"] {
        let config = json!({ "fhirPathRules": [{ "path": path, "method": "generalize", "cases": { "true": "'x'" } }] });
        let message = refusal(&config, input.clone());
        assert!(message.to_lowercase().contains("generaliz"), "{path}: {message}");
    }
}
