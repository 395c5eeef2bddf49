//! `cryptoHash` (the reference's CryptoHashProcessorTests, CryptoHashUtilityTests and
//! ReferenceUtilityTests): HMAC-SHA256 in lower-case hex; in `Reference.reference` only the id
//! part of a literal reference is hashed, anything else is hashed whole. Key "123" throughout.

use serde_json::{Value, json};

use crate::helpers::{anonymized, assert_same, label, rules};

fn hash_rules(path: &str) -> bulkfhir::anonymize::Engine {
    rules(json!([{ "path": path, "method": "cryptoHash" }]), json!({ "cryptoHashKey": "123" }))
}

#[test]
fn ids_and_strings_are_replaced_by_their_keyed_hash() {
    let engine = hash_rules("Patient.id");
    for (id, hash) in [
        ("a", "69e99e82127c1f146f50653e02b92c4bb0c3bc182a6165a5bbce5f4f94e1ccb7"),
        ("bb6f4872-e456-42d5-a9da-a0d82cb7ea29", "73defcb8fcaf4c0c3d5c77f05b479cadbe502db2ef6e9b1523d2bfee31f3b999"),
        ("example", "698d54f0494528a759f19c8e87a9f99e75a5881b9267ee3926bcf62c992d84ba"),
    ] {
        let actual = anonymized(&engine, json!({ "resourceType": "Patient", "id": id }));
        assert_same(&actual, &json!({ "resourceType": "Patient", "id": hash, "meta": label::meta(&[label::hashed()]) }));
    }
}

#[test]
fn strings_outside_references_are_hashed_whole_whatever_they_look_like() {
    let engine = hash_rules("nodesByType('Identifier').value");
    let values = [
        ("abc", "8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae"),
        ("&*^%$@()=-,/", "33f6f7d6b3602bf5354dcb4b8d988982602349355f50f86798d8ce1ffd61521b"),
        ("ÆŊŋßſ♫∅", "1a94823f0a0f00a4b1ca771c3446dc5e17958f4dae3588ace2bca8a843eb63d9"),
        (
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890!@#$%^&*()=-",
            "352b5a4af5adb81fa616c2a5b5c492d0b0b544c188a9aa003767a2b5efbd1478",
        ),
        ("urn:oid:1.2.3.4.5", "6aa8e3e9af18cae990adc9c26dc006ebf633dd1332886867a691ee2d5247dd15"),
        ("urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "23a940be8f03522b52a393c7194407796bb5ea3c02b926b0e42fdab94ca30bad"),
    ];
    let identifiers = |texts: Vec<&str>| -> Value { texts.iter().map(|v| json!({ "system": "urn:test", "value": v })).collect() };
    let before = identifiers(values.iter().map(|v| v.0).collect());
    let after = identifiers(values.iter().map(|v| v.1).collect());
    let actual = anonymized(&engine, json!({ "resourceType": "Patient", "identifier": before }));
    assert_same(&actual, &json!({ "resourceType": "Patient", "identifier": after, "meta": label::meta(&[label::hashed()]) }));
}

#[test]
fn dates_are_hashed_as_the_text_they_are_written_as() {
    let engine = rules(
        json!([
            { "path": "Patient.birthDate", "method": "cryptoHash" },
            { "path": "Patient.deceased", "method": "cryptoHash" }
        ]),
        json!({ "cryptoHashKey": "123" }),
    );
    let actual =
        anonymized(&engine, json!({ "resourceType": "Patient", "birthDate": "2020-04-12", "deceasedDateTime": "2017-01-01T00:00:00.000Z" }));
    assert_same(
        &actual,
        &json!({
            "resourceType": "Patient",
            "birthDate": "1e99c6a8b99d3c8b4906c2e80911ad3b5961fd7498d3bc2b96fb128bc7148f90",
            "deceasedDateTime": "4c765fc04a6f9967d493ff39238d47993c709d3392a72060efeff285cf7b2501",
            "meta": label::meta(&[label::hashed()])
        }),
    );
}

/// References as `List.entry.item`s, so that one resource carries many.
fn list_of(references: &[&str]) -> Value {
    let entries: Vec<Value> = references.iter().map(|r| json!({ "item": { "reference": r } })).collect();
    json!({ "resourceType": "List", "status": "current", "mode": "working", "entry": entries })
}

#[test]
fn only_the_id_part_of_a_literal_reference_is_hashed() {
    let engine = hash_rules("List.entry.item.reference");
    let pairs = [
        ("#p1", "#a10e6bee4fbeb6a7804153c25688dd4dd7b9c2a005417136026350fc33ac609f"),
        ("Patient/example", "Patient/698d54f0494528a759f19c8e87a9f99e75a5881b9267ee3926bcf62c992d84ba"),
        (
            "http://fhir.hl7.org/svc/StructureDefinition/c8973a22-2b5b-4e76-9c66-00639c99e61b",
            "http://fhir.hl7.org/svc/StructureDefinition/b0ff9c939b3507a79e2ae3d2d3b595d62819b9b8f6ef10d4099b3058d902642f",
        ),
        (
            "http://example.org/fhir/Observation/apo89654/_history/2",
            "http://example.org/fhir/Observation/b1e85ca33baf76575ad28588af85b8f10c0dd40e9ed8cd57cdb7ae94ccd75695/_history/2",
        ),
        ("urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "urn:uuid:24970eb3f915e516a2b5241c0d6979097a6357a13b89612c6a54b8ab5479df34"),
        ("urn:uuid:C757873D-EC9A-4326-A141-556F43239520", "urn:uuid:b834a50238faf391e37477d3b99b9b7bd0e4a4f92187078b9b863ad90b92c5b8"),
        ("urn:oid:1.2.3.4.5", "urn:oid:0543fb50485f58a47073f51aad1677607aec031c2c83c25ee7b040ade95cfbcc"),
    ];
    assert_hashed_as(&engine, &pairs);
}

#[test]
fn a_reference_that_is_not_a_literal_one_is_hashed_whole() {
    let engine = hash_rules("List.entry.item.reference");
    let pairs = [
        ("034AB16", "eef2b7ff0558533eb79fde26811535ae58b36fdd116e3aa544b5d8f1859dd6e8"),
        ("Patient/AbcŴΉЙ", "40a7bf1f0a656eef3dbfb3b7b980fb43d312ca275fb5c1c63656e687fef04890"),
        (
            "http://fhir.hl7.org/svc/StructureDefinitionTest/c8973a22-2b5b-4e76-9c66-00639c99e61b",
            "67d0d43bc15a935d14128aad15cdd991bfdb4476062f21a884dc338bd5944fcd",
        ),
        (
            "ftp://fhir.hl7.org/svc/StructureDefinition/c8973a22-2b5b-4e76-9c66-00639c99e61b",
            "a1277cdee86a3d4e3e20e041b4774eb85a9d0e97ea20eba054d96c133129be18",
        ),
        ("wwurn:uuid:c757873d-ec9a-4326-a141-556f43239520", "f76f7aae04f0c1ed5cb662c49cb5692833097da3788bcc4883ecae9d8f19e25c"),
        ("urn:oid:1.2.3=4.5", "8af99132dc00335184c84e8d575e6d1d1fa819a4bcd0fda515010d751f838f46"),
        ("#", "#"),
    ];
    assert_hashed_as(&engine, &pairs);
}

#[test]
fn hashing_a_whole_reference_hashes_its_display_too() {
    let engine = hash_rules("Observation.subject");
    let actual = anonymized(
        &engine,
        json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" },
                "subject": { "reference": "Patient/example", "display": "abc" } }),
    );
    assert_same(
        &actual,
        &json!({
            "resourceType": "Observation", "status": "final", "code": { "text": "x" },
            "meta": label::meta(&[label::hashed()]),
            "subject": {
                "reference": "Patient/698d54f0494528a759f19c8e87a9f99e75a5881b9267ee3926bcf62c992d84ba",
                "display": "8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae"
            }
        }),
    );
}

/// A List of the first references of `pairs` comes out as a List of the second ones, labelled hashed.
fn assert_hashed_as(engine: &bulkfhir::anonymize::Engine, pairs: &[(&str, &str)]) {
    let before: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let after: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let mut expected = list_of(&after);
    expected["meta"] = label::meta(&[label::hashed()]);
    assert_same(&anonymized(engine, list_of(&before)), &expected);
}
