//! `encrypt` (the reference's EncryptProcessorTests and EncryptUtilityTests): AES-CBC with PKCS#7
//! padding, the key being the UTF-8 bytes of `encryptKey` (16, 24 or 32 of them), a random IV
//! written before the cipher text, all in standard base64. Random by design, so the tests decrypt.

use aws_lc_rs::cipher::{AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::{anonymized, label, rules};

const KEY: &str = "704ab12c8e3e46d4bea600ef62a6bec7";

/// The reference's EncryptUtility.DecryptTextFromBase64WithAes.
fn decrypt(base64_text: &str, key: &str) -> String {
    let bytes = STANDARD.decode(base64_text).expect("the cipher text is base64");
    assert!(bytes.len() >= 32, "IV and at least one block: {base64_text}");
    let (iv, cipher_text) = bytes.split_at(16);
    let algorithm = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        n => panic!("no AES key of {n} bytes"),
    };
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(algorithm, key.as_bytes()).unwrap()).unwrap();
    let mut in_out = cipher_text.to_vec();
    let iv: [u8; 16] = iv.try_into().unwrap();
    let plain = key.decrypt(&mut in_out, DecryptionContext::Iv128(FixedLength::from(iv))).expect("the cipher text decrypts");
    String::from_utf8(plain.to_vec()).expect("the plain text is UTF-8")
}

#[test]
fn the_tests_decryption_reads_the_reference_engines_cipher_texts() {
    for (cipher_text, plain) in [
        ("qpxGp6T9DP7wB0EYPQwOYVrScQ/pq3c0D+JQ+hjnfkY=", "abc"),
        ("GI99peR2SpPfcqEgzr7/z7gxYym6qyVPPzvmGc8o8SSwqMpCsW0CRj3v6ZsxFCef", "This is for test"),
        ("JxNRbbxL6pYYpbrtHWZ+1gPTPcIVrLWmrugPiUR9d6k=", "!@)(*&%^!@#$%@"),
        ("nQTtB/efLGpEqzOh/Pt4ZRlqZynO7gjePdu7LbLxH2LoqYJXAq6SQWkFeQ1SiqRM", "ͶΆΈΞξτϡϿῧῄᾴѶѾ"),
        ("zrFYnZ2cIwcfmjCVybP1ZC+LaD7gwGXBHR2bZjuutzA=", "测试"),
    ] {
        assert_eq!(decrypt(cipher_text, KEY), plain);
    }
}

const PLAIN: [&str; 5] = ["abc", "This is for test", "!@)(*&%^!@#$%@", "ͶΆΈΞξτϡϿῧῄᾴѶѾ", "测试"];

fn patient_with_identifiers(values: &[&str]) -> Value {
    let identifiers: Vec<Value> = values.iter().map(|v| json!({ "system": "urn:test", "value": v })).collect();
    json!({ "resourceType": "Patient", "gender": "other", "identifier": identifiers })
}

fn encrypted_values(key: &str) -> (Value, Vec<String>) {
    let engine = rules(json!([{ "path": "nodesByType('Identifier').value", "method": "encrypt" }]), json!({ "encryptKey": key }));
    let output = anonymized(&engine, patient_with_identifiers(&PLAIN));
    let values = output["identifier"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap().to_owned()).collect();
    (output, values)
}

#[test]
fn encrypted_values_decrypt_to_the_originals_with_the_key() {
    for key in [KEY, "0123456789abcdef", "0123456789abcdef01234567"] {
        let (output, values) = encrypted_values(key);
        let decrypted: Vec<String> = values.iter().map(|v| decrypt(v, key)).collect();
        assert_eq!(decrypted, PLAIN, "key of {} bytes", key.len());
        assert_eq!(output["meta"], label::meta(&[label::masked()]));
        assert_eq!(output["gender"], "other");
        assert!(output["identifier"].as_array().unwrap().iter().all(|i| i["system"] == "urn:test"));
    }
}

#[test]
fn the_same_value_encrypts_differently_each_time() {
    let (_, first) = encrypted_values(KEY);
    let (_, second) = encrypted_values(KEY);
    for (a, b) in first.iter().zip(&second) {
        assert_ne!(a, b, "a fresh IV for every value");
    }
}

#[test]
fn an_empty_or_absent_value_stays_so() {
    let engine = rules(json!([{ "path": "nodesByType('Identifier').value", "method": "encrypt" }]), json!({ "encryptKey": KEY }));
    let input = json!({ "resourceType": "Patient", "identifier": [{ "system": "urn:test" }] });
    assert_eq!(anonymized(&engine, input.clone()), input);
}
