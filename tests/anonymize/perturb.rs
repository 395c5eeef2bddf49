//! `perturb` (the reference's PerturbProcessorTests): uniform noise within ±span/2 (span times the
//! value when `rangeType` is proportional), rounded to `roundTo` places (integers to none),
//! positiveInt kept at 1 or more and unsignedInt at 0 or more. Random by design, so the tests run
//! each case many times and check the bounds and the number of decimal places.

use serde_json::{Value, json};

use crate::helpers::{anonymized, label, rules};

const RUNS: usize = 40;

/// `resource` after a perturb rule on `path`, `RUNS` times: the number found at `pointer` each time.
fn perturbed(resource: &Value, path: &str, settings: Value, pointer: &str) -> Vec<serde_json::Number> {
    let mut rule = json!({ "path": path, "method": "perturb" });
    rule.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    let engine = rules(json!([rule]), json!({}));
    (0..RUNS)
        .map(|_| {
            let output = anonymized(&engine, resource.clone());
            assert_eq!(output["meta"], label::meta(&[label::perturbed()]), "{path}");
            match output.pointer(pointer) {
                Some(Value::Number(n)) => n.clone(),
                other => panic!("{path}: {pointer} is {other:?} in {output}"),
            }
        })
        .collect()
}

fn decimal_places(n: &serde_json::Number) -> usize {
    let text = n.to_string();
    assert!(!text.contains(['e', 'E']), "{text} is written with an exponent");
    text.split_once('.').map_or(0, |(_, fraction)| fraction.trim_end_matches('0').len())
}

fn assert_within(values: &[serde_json::Number], low: f64, high: f64, places: usize, what: &str) {
    for n in values {
        let v = n.as_f64().unwrap();
        assert!(low - 1e-9 <= v && v <= high + 1e-9, "{what}: {n} outside [{low}, {high}]");
        assert!(decimal_places(n) <= places, "{what}: {n} has more than {places} decimal places");
    }
}

fn location(longitude: f64) -> Value {
    json!({ "resourceType": "Location", "position": { "longitude": longitude, "latitude": 0.0 } })
}

#[test]
fn decimals_stay_within_a_fixed_span_and_are_rounded() {
    for (value, span, round_to, low, high) in
        [(5.0, 0.0, 2, 5.0, 5.0), (5.234, 6.0, 2, 2.23, 8.23), (0.12, 2.0, 2, -0.88, 1.12)]
    {
        let values = perturbed(&location(value), "Location.position.longitude", json!({ "span": span, "roundTo": round_to }), "/position/longitude");
        assert_within(&values, low, high, round_to, &format!("{value} ± {span}/2"));
    }
}

#[test]
fn decimals_stay_within_a_proportional_span_and_are_rounded() {
    for (value, span, round_to, low, high) in
        [(5.0, 2.0, 2, 0.0, 10.0), (5.234, 1.0, 2, 2.62, 7.85), (0.12, 4.0, 2, -0.12, 0.36)]
    {
        let settings = json!({ "span": span, "roundTo": round_to, "rangeType": "proportional" });
        let values = perturbed(&location(value), "Location.position.longitude", settings, "/position/longitude");
        assert_within(&values, low, high, round_to, &format!("{value} ± {value}×{span}/2"));
    }
}

#[test]
fn integers_are_rounded_to_whole_numbers_and_kept_within_their_type() {
    let patient = |n: u64| json!({ "resourceType": "Patient", "multipleBirthInteger": n });
    let study = |series: u64| json!({ "resourceType": "ImagingStudy", "status": "available", "subject": { "reference": "Patient/1" }, "numberOfSeries": series });
    let claim = |sequence: u64| json!({ "resourceType": "Claim", "careTeam": [{ "sequence": sequence, "provider": { "reference": "Practitioner/1" } }] });
    let cases: Vec<(Value, &str, &str, Value, f64, f64)> = vec![
        (patient(100), "Patient.multipleBirth", "/multipleBirthInteger", json!({ "span": 0, "roundTo": 0 }), 100.0, 100.0),
        (patient(5), "Patient.multipleBirth", "/multipleBirthInteger", json!({ "span": 0.4, "rangeType": "proportional" }), 4.0, 6.0),
        (study(5000), "ImagingStudy.numberOfSeries", "/numberOfSeries", json!({ "span": 100, "roundTo": 2 }), 4950.0, 5050.0),
        (study(5000), "ImagingStudy.numberOfSeries", "/numberOfSeries", json!({ "span": 0.02, "roundTo": 2, "rangeType": "proportional" }), 4950.0, 5050.0),
        (study(10), "ImagingStudy.numberOfSeries", "/numberOfSeries", json!({ "span": 40, "roundTo": 0 }), 0.0, 30.0),
        (study(10), "ImagingStudy.numberOfSeries", "/numberOfSeries", json!({ "span": 4, "rangeType": "proportional" }), 0.0, 30.0),
        (claim(1000000), "Claim.careTeam.sequence", "/careTeam/0/sequence", json!({ "span": 2000, "roundTo": 2 }), 999000.0, 1001000.0),
        (claim(1), "Claim.careTeam.sequence", "/careTeam/0/sequence", json!({ "span": 200, "roundTo": 2 }), 1.0, 101.0),
        (claim(1), "Claim.careTeam.sequence", "/careTeam/0/sequence", json!({ "span": 200, "roundTo": 2, "rangeType": "proportional" }), 1.0, 101.0),
    ];
    for (resource, path, pointer, settings, low, high) in cases {
        let values = perturbed(&resource, path, settings.clone(), pointer);
        assert_within(&values, low, high, 0, &format!("{path} {settings}"));
    }
}

#[test]
fn quantities_have_their_value_perturbed_and_keep_their_unit() {
    let observation = |value: f64| {
        json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" },
                "valueQuantity": { "value": value, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg" } })
    };
    let claim = |value: f64| json!({ "resourceType": "Claim", "total": { "value": value, "currency": "USD" } });
    let supply = |value: f64| {
        json!({ "resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": { "reference": "Patient/1" },
                "dispenseRequest": { "expectedSupplyDuration": { "value": value, "unit": "days" } } })
    };
    let condition = |value: f64| json!({ "resourceType": "Condition", "subject": { "reference": "Patient/1" }, "onsetAge": { "value": value, "unit": "a" } });
    let cases: Vec<(Value, &str, &str, Value, usize, f64, f64)> = vec![
        (condition(20.0), "Condition.onset as Age", "/onsetAge/value", json!({ "span": 0, "roundTo": 2 }), 2, 20.0, 20.0),
        (supply(0.0001), "MedicationRequest.dispenseRequest.expectedSupplyDuration", "/dispenseRequest/expectedSupplyDuration/value",
            json!({ "span": 0.00002, "roundTo": 2 }), 2, 0.0, 0.0),
        (claim(7000.12345678), "Claim.total", "/total/value", json!({ "span": 2000, "roundTo": 4 }), 4, 6000.1235, 8000.1235),
        (observation(25162.1378), "Observation.value as Quantity", "/valueQuantity/value", json!({ "span": 2.26, "roundTo": 2 }), 2, 25161.01, 25163.27),
        (supply(0.0001), "MedicationRequest.dispenseRequest.expectedSupplyDuration", "/dispenseRequest/expectedSupplyDuration/value",
            json!({ "span": 2000, "roundTo": 2, "rangeType": "proportional" }), 2, -0.1, 0.1),
        (claim(100.0), "Claim.total", "/total/value", json!({ "span": 2000, "roundTo": 4, "rangeType": "proportional" }), 4, -99900.0, 100100.0),
        (observation(25162.1378), "Observation.value as Quantity", "/valueQuantity/value",
            json!({ "span": 1, "roundTo": 2, "rangeType": "proportional" }), 2, 12581.07, 37743.21),
    ];
    for (resource, path, pointer, settings, places, low, high) in cases {
        let values = perturbed(&resource, path, settings.clone(), pointer);
        assert_within(&values, low, high, places, &format!("{path} {settings}"));
    }
    let engine = rules(json!([{ "path": "Claim.total", "method": "perturb", "span": 10 }]), json!({}));
    let output = anonymized(&engine, claim(100.0));
    assert_eq!(output["total"]["currency"], "USD");
}

#[test]
fn the_sample_configuration_perturbs_family_member_ages_by_up_to_five_percent() {
    let engine = crate::helpers::engine(&crate::helpers::sample_config_with_keys());
    let history = json!({
        "resourceType": "FamilyMemberHistory", "status": "completed", "patient": { "reference": "Patient/1" },
        "relationship": { "text": "father" },
        "condition": [{ "code": { "text": "stroke" }, "onsetAge": { "value": 60, "unit": "a" } }]
    });
    for _ in 0..RUNS {
        let output = anonymized(&engine, history.clone());
        let age = &output["condition"][0]["onsetAge"]["value"];
        let n = age.as_f64().unwrap_or_else(|| panic!("no age in {output}"));
        assert!((57.0..=63.0).contains(&n) && n.fract() == 0.0, "{age}");
    }
}
