//! cryptoHash and encrypt as the reference engine computes them: HMAC-SHA256 as lower-case hex
//! (of the id part only for a Reference's `reference`), and AES-CBC with PKCS#7 padding under a
//! random IV, written as base64 of IV then ciphertext.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        LazyLock,
    },
};

use aws_lc_rs::{
    cipher::{
        DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256,
    },
    hmac,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use regex::Regex;
use rustc_hash::FxHashMap;

use crate::fhir::ResourceType;

/// HMAC-SHA256 of `input` under `key`, lower-case hex; empty stays empty.
pub fn hash(input: &str, key: &hmac::Key) -> String {
    if input.is_empty() {
        return String::new();
    }
    let mut text = [0u8; 64];
    // 32 bytes of HMAC-SHA256 are 64 hex digits: the buffer always fits.
    let _ = hex::encode_to_slice(hmac::sign(key, input.as_bytes()), &mut text);
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

pub fn hmac_key(key: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())
}

/// Hashes kept per thread before the cache starts over: enough for the Patients,
/// Practitioners and Organizations a type's resources keep referring to.
const CACHED_HASHES: usize = 4096;

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

/// Input -> hash, of one key.
type Hashes = FxHashMap<Box<str>, Box<str>>;

/// A configuration's `cryptoHashKey`, with the hashes it gave kept on each thread: most
/// references of an export point at a few resources again and again.
pub struct HashKey {
    key: hmac::Key,
    /// Which key a thread's cache holds hashes of.
    serial: u64,
}

impl HashKey {
    pub fn new(key: &str) -> Self {
        HashKey { key: hmac_key(key), serial: NEXT_KEY.fetch_add(1, Ordering::Relaxed) }
    }

    /// The same as [`hash`] under this key.
    pub fn hash(&self, input: &str) -> String {
        thread_local! {
            static CACHE: RefCell<(u64, Hashes)> = RefCell::new((u64::MAX, Hashes::default()));
        }
        CACHE.with_borrow_mut(|(serial, hashes)| {
            if *serial != self.serial {
                hashes.clear();
                *serial = self.serial;
            }
            if let Some(hashed) = hashes.get(input) {
                return hashed.to_string();
            }
            let hashed = hash(input, &self.key);
            if hashes.len() >= CACHED_HASHES {
                hashes.clear();
            }
            hashes.insert(input.into(), hashed.as_str().into());
            hashed
        })
    }
}

/// The reference engine's literal reference patterns: a relative or absolute URL to a resource
/// type (id and optional history suffix), an OID, a UUID.
static LITERAL_REFERENCES: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    let types: Vec<&str> = ResourceType::all().iter().map(|t| t.as_str()).collect();
    [
        Regex::new(&format!(
            r"^(?P<prefix>((http|https)://([A-Za-z0-9\\/\.:%\$])*)?({})/)(?P<id>[A-Za-z0-9\-\.]{{1,64}})(?P<suffix>/_history/[A-Za-z0-9\-\.]{{1,64}})?$",
            types.join("|")
        ))
        .expect("the reference pattern compiles"),
        Regex::new(r"^(?P<prefix>urn:oid:)(?P<id>[0-2](\.(0|[1-9][0-9]*))+)(?P<suffix>)$").expect("the OID pattern compiles"),
        Regex::new(r"^(?P<prefix>urn:uuid:)(?P<id>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?P<suffix>)$")
            .expect("the UUID pattern compiles"),
    ]
});

/// Applies `transform` to the id part of a reference (`Patient/1`, `#c1`, `urn:uuid:...`), or
/// to the whole text when no pattern fits.
pub fn transform_reference_id(reference: &str, transform: impl Fn(&str) -> String) -> String {
    if reference.is_empty() {
        return String::new();
    }
    if let Some(internal) = reference.strip_prefix('#') {
        return format!("#{}", transform(internal));
    }
    if let Some((prefix, id, suffix)) = relative_reference(reference) {
        return [prefix, &transform(id), suffix].concat();
    }
    for pattern in LITERAL_REFERENCES.iter() {
        if let Some(caps) = pattern.captures(reference) {
            let part = |name| caps.name(name).map_or("", |m| m.as_str());
            return format!("{}{}{}", part("prefix"), transform(part("id")), part("suffix"));
        }
    }
    transform(reference)
}

/// `Type/id` or `Type/id/_history/v`, split as the first pattern splits it, without the
/// regex (most stored references); None for anything else, which goes to the patterns.
fn relative_reference(reference: &str) -> Option<(&str, &str, &str)> {
    let (ty, rest) = reference.split_once('/')?;
    ResourceType::parse(ty)?;
    let (id, suffix) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let part = |text: &str| (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let suffix_ok = suffix.is_empty() || suffix.strip_prefix("/_history/").is_some_and(part);
    (part(id) && suffix_ok).then(|| (&reference[..ty.len() + 1], id, suffix))
}

fn algorithm(key: &[u8]) -> Option<&'static aws_lc_rs::cipher::Algorithm> {
    match key.len() {
        16 => Some(&AES_128),
        24 => Some(&AES_192),
        32 => Some(&AES_256),
        _ => None,
    }
}

/// AES-CBC of the UTF-8 text under a fresh random IV: base64(IV || ciphertext). None when the
/// key is not 16, 24 or 32 bytes (the configuration refuses those).
pub fn encrypt(plain: &str, key: &[u8]) -> Option<String> {
    if plain.is_empty() {
        return Some(String::new());
    }
    let key = UnboundCipherKey::new(algorithm(key)?, key).ok()?;
    let key = PaddedBlockEncryptingKey::cbc_pkcs7(key).ok()?;
    let mut data = plain.as_bytes().to_vec();
    let context = key.encrypt(&mut data).ok()?;
    let DecryptionContext::Iv128(iv) = context else { return None };
    let mut out = iv.as_ref().to_vec();
    out.extend_from_slice(&data);
    Some(STANDARD.encode(out))
}

/// The inverse of `encrypt`, for tests and for users holding the key.
pub fn decrypt(base64_text: &str, key: &[u8]) -> Option<String> {
    if base64_text.is_empty() {
        return Some(String::new());
    }
    let bytes = STANDARD.decode(base64_text).ok()?;
    if bytes.len() < 16 {
        return None;
    }
    let (iv, data) = bytes.split_at(16);
    let iv: [u8; 16] = iv.try_into().ok()?;
    let key = PaddedBlockDecryptingKey::cbc_pkcs7(UnboundCipherKey::new(algorithm(key)?, key).ok()?).ok()?;
    let mut data = data.to_vec();
    let plain = key.decrypt(&mut data, DecryptionContext::Iv128(iv.into())).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_splits_references_as_the_pattern_does() {
        let references = [
            "Patient/6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2", "Patient/1/_history/2", "Patient/1/_history/", "Patient/1/other/2",
            "Patient/", "Patient/a b", "Nonsense/1", "Medication/x.y-z", "MedicationRequest/1", "Patient/1/_history/2/3",
            &format!("Patient/{}", "1".repeat(64)), &format!("Patient/{}", "1".repeat(65)),
        ];
        for reference in references {
            let by_pattern = LITERAL_REFERENCES[0].captures(reference).map(|caps| {
                let part = |name| caps.name(name).map_or("", |m| m.as_str()).to_owned();
                (part("prefix"), part("id"), part("suffix"))
            });
            let fast = relative_reference(reference).map(|(p, i, s)| (p.to_owned(), i.to_owned(), s.to_owned()));
            assert_eq!(fast, by_pattern, "{reference}");
        }
    }

    #[test]
    fn hmac_sha256_as_the_reference_crypto_hash_tests() {
        let key = hmac_key("123");
        assert_eq!(hash("", &key), "");
        assert_eq!(hash("abc", &key), "8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae");
        assert_eq!(hash("&*^%$@()=-,/", &key), "33f6f7d6b3602bf5354dcb4b8d988982602349355f50f86798d8ce1ffd61521b");
        assert_eq!(hash("ÆŊŋßſ♫∅", &key), "1a94823f0a0f00a4b1ca771c3446dc5e17958f4dae3588ace2bca8a843eb63d9");
        assert_eq!(
            hash("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890!@#$%^&*()=-", &key),
            "352b5a4af5adb81fa616c2a5b5c492d0b0b544c188a9aa003767a2b5efbd1478"
        );
    }

    #[test]
    fn a_cached_hash_is_the_hash_under_its_own_key() {
        let (a, b) = (HashKey::new("123"), HashKey::new("456"));
        for round in 0..2 {
            for input in ["abc", "", "Patient-1", "abc"] {
                assert_eq!(a.hash(input), hash(input, &hmac_key("123")), "round {round}");
                // Another key on the same thread: its own hashes, never the first key's.
                assert_eq!(b.hash(input), hash(input, &hmac_key("456")), "round {round}");
            }
        }
        let many: Vec<String> = (0..CACHED_HASHES + 10).map(|n| n.to_string()).collect();
        for input in many.iter().chain(many.iter().rev()) {
            assert_eq!(a.hash(input), hash(input, &hmac_key("123")));
        }
    }

    #[test]
    fn references_keep_all_but_their_id_as_the_reference_utility_tests() {
        let t = |r: &str| transform_reference_id(r, |_| "@ID".into());
        assert_eq!(t("#p1"), "#@ID");
        assert_eq!(t("Patient/034AB16"), "Patient/@ID");
        assert_eq!(t("http://fhir.hl7.org/svc/StructureDefinition/c8973a22-2b5b-4e76-9c66-00639c99e61b"), "http://fhir.hl7.org/svc/StructureDefinition/@ID");
        assert_eq!(t("http://example.org/fhir/Observation/apo89654/_history/2"), "http://example.org/fhir/Observation/@ID/_history/2");
        assert_eq!(t("urn:uuid:C757873D-EC9A-4326-A141-556F43239520"), "urn:uuid:@ID");
        assert_eq!(t("urn:oid:1.2.3.4.5"), "urn:oid:@ID");
        for whole in [
            "034AB16",
            "Patient/AbcŴΉЙ",
            "http://fhir.hl7.org/svc/StructureDefinitionTest/c8973a22-2b5b-4e76-9c66-00639c99e61b",
            "ftp://fhir.hl7.org/svc/StructureDefinition/c8973a22-2b5b-4e76-9c66-00639c99e61b",
            "wwurn:uuid:c757873d-ec9a-4326-a141-556f43239520",
            "urn:oid:1.2.3=4.5",
        ] {
            assert_eq!(t(whole), "@ID", "{whole}");
        }
    }

    #[test]
    fn encryption_round_trips_with_a_fresh_iv_for_each_key_size() {
        for key in ["0123456789abcdef", "0123456789abcdef01234567", "0123456789abcdef0123456789abcdef"] {
            let a = encrypt("Peter Chalmers ÆŊ", key.as_bytes()).unwrap();
            let b = encrypt("Peter Chalmers ÆŊ", key.as_bytes()).unwrap();
            assert_ne!(a, b, "a random IV per value");
            assert_eq!(decrypt(&a, key.as_bytes()).as_deref(), Some("Peter Chalmers ÆŊ"));
            // IV (16 bytes) then one padded block per 16 bytes of text.
            assert_eq!(STANDARD.decode(&a).unwrap().len(), 16 + 32);
        }
        assert_eq!(encrypt("", b"0123456789abcdef").as_deref(), Some(""));
        assert!(encrypt("x", b"short").is_none());
        assert!(decrypt("AAAA", b"0123456789abcdef").is_none());
    }
}
