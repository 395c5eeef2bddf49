//! Registered backend clients: a `client_id`, its public keys (a JWKS inline or at a URL), and
//! the system scopes it may be granted.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use url::Url;

use super::scopes::{NotASystemScope, Scopes};
use crate::model::client::ClientRecord;

/// Why a client registration is refused, in words naming the field and what it needs.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("client_id '{0}' must be 1 to 255 printable ASCII characters without spaces")]
    ClientId(String),
    #[error("client '{0}' needs exactly one of a JWKS (inline) or a JWKS URL")]
    KeySource(String),
    #[error("client '{0}' needs at least one scope, such as system/*.read")]
    NoScope(String),
    #[error(transparent)]
    Scope(#[from] NotASystemScope),
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error("the JWKS URL '{text}' is not valid: {reason}")]
    JwksUrl { text: String, reason: url::ParseError },
    #[error("the JWKS URL '{0}' must use https")]
    InsecureJwksUrl(String),
}

/// Why a JWKS (registered inline or fetched from a URL) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not valid: {0}")]
    Invalid(serde_json::Error),
    #[error("the JWKS has no RSA or P-384 EC key with a 'kid' (RS384 and ES384 are supported)")]
    NoUsableKey,
    #[error(transparent)]
    Weak(#[from] WeakKey),
}

/// An RSA key too weak to trust.
#[derive(Debug, thiserror::Error)]
pub enum WeakKey {
    #[error("the RSA key '{0}' is not valid base64url")]
    NotBase64(String),
    #[error("the RSA key '{kid}' has {bits} bits; at least {MIN_RSA_BITS} are required")]
    Short { kid: String, bits: usize },
    #[error("the RSA key '{kid}' has public exponent {exponent}; an odd exponent of at least {MIN_RSA_EXPONENT} is required")]
    Exponent { kid: String, exponent: u64 },
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(JwkSet),
    Url(Url),
}

/// A validated client registration.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub keys: KeySource,
    pub scopes: Scopes,
}

impl Client {
    /// Validates a registration: a printable id, exactly one of an inline JWKS (with at least one
    /// RS384 or ES384 key that has a `kid`) or an http(s) JWKS URL, and at least one scope.
    pub fn new(client_id: &str, jwks: Option<&str>, jwks_url: Option<&str>, scopes: &[String]) -> Result<Self, RegistrationError> {
        if !valid_client_id(client_id) {
            return Err(RegistrationError::ClientId(client_id.to_owned()));
        }
        let keys = match (jwks, jwks_url) {
            (Some(text), None) => {
                let set = parse_jwks(text)?;
                set.keys.iter().try_for_each(strong_enough).map_err(JwksError::from)?;
                KeySource::Inline(set)
            }
            (None, Some(url)) => KeySource::Url(parse_jwks_url(url)?),
            _ => return Err(RegistrationError::KeySource(client_id.to_owned())),
        };
        let scopes = Scopes::parse_strict(scopes.iter().map(String::as_str))?;
        if scopes.is_empty() {
            return Err(RegistrationError::NoScope(client_id.to_owned()));
        }
        Ok(Self { id: client_id.to_owned(), keys, scopes })
    }

    pub fn from_record(record: &ClientRecord) -> Result<Self, RegistrationError> {
        let scopes: Vec<String> = record.scopes.split_whitespace().map(str::to_owned).collect();
        Self::new(&record.client_id, record.jwks.as_deref(), record.jwks_url.as_deref(), &scopes)
    }

    pub fn to_record(&self) -> ClientRecord {
        let (jwks, jwks_url) = match &self.keys {
            KeySource::Inline(set) => (Some(serde_json::to_string(set).expect("a JWKS serializes")), None),
            KeySource::Url(url) => (None, Some(url.to_string())),
        };
        ClientRecord { client_id: self.id.clone(), jwks, jwks_url, scopes: self.scopes.to_string() }
    }
}

/// Whether the text can be a client_id: 1 to 255 printable ASCII characters without spaces.
pub fn valid_client_id(client_id: &str) -> bool {
    !client_id.is_empty() && client_id.len() <= 255 && client_id.chars().all(|c| c.is_ascii_graphic())
}

/// RSA keys need a modulus of at least this many bits (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// And a public exponent of at least this (FIPS 186-5: e > 2^16); e = 3 invites old attacks.
const MIN_RSA_EXPONENT: u64 = 65537;

/// Refuses RSA keys too weak to trust: a modulus under 2048 bits or a small public exponent.
pub fn strong_enough(key: &Jwk) -> Result<(), WeakKey> {
    let AlgorithmParameters::RSA(rsa) = &key.algorithm else { return Ok(()) };
    let kid = key.common.key_id.as_deref().unwrap_or("(no kid)").to_owned();
    let decode = |text: &str| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| WeakKey::NotBase64(kid.clone()));
    let (n, e) = (decode(&rsa.n)?, decode(&rsa.e)?);
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    let bits = n.first().map_or(0, |top| (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize));
    if bits < MIN_RSA_BITS {
        return Err(WeakKey::Short { kid, bits });
    }
    let e = &e[e.iter().take_while(|b| **b == 0).count()..];
    let exponent = if e.len() > 8 { u64::MAX } else { e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)) };
    if exponent < MIN_RSA_EXPONENT || exponent % 2 == 0 {
        return Err(WeakKey::Exponent { kid, exponent });
    }
    Ok(())
}

/// Parses a JWKS and checks that it holds at least one usable signing key (weak RSA keys are
/// not usable; a registration refuses them outright, see `Client::new`).
pub fn parse_jwks(text: &str) -> Result<JwkSet, JwksError> {
    let set: JwkSet = serde_json::from_str(text).map_err(JwksError::Invalid)?;
    let usable = set.keys.iter().any(|k| {
        k.common.key_id.is_some()
            && strong_enough(k).is_ok()
            && match &k.algorithm {
                AlgorithmParameters::RSA(_) => true,
                AlgorithmParameters::EllipticCurve(ec) => ec.curve == EllipticCurve::P384,
                _ => false,
            }
    });
    if usable {
        Ok(set)
    } else if let Some(weak) = set.keys.iter().find_map(|k| strong_enough(k).err()) {
        Err(weak.into())
    } else {
        Err(JwksError::NoUsableKey)
    }
}

/// JWKS URLs must be https; plain http only on the loopback interface (local tests).
fn parse_jwks_url(text: &str) -> Result<Url, RegistrationError> {
    let url = Url::parse(text).map_err(|reason| RegistrationError::JwksUrl { text: text.to_owned(), reason })?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(RegistrationError::InsecureJwksUrl(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-384","kid":"k1","x":"AAAA","y":"AAAA"}]}"#;

    #[test]
    fn a_registration_needs_one_key_source_and_scopes() {
        let scopes = vec!["system/*.read".to_owned()];
        assert!(Client::new("app", Some(EC_JWKS), None, &scopes).is_ok());
        assert!(Client::new("app", None, Some("https://app.example/jwks.json"), &scopes).is_ok());
        assert!(Client::new("app", None, Some("http://127.0.0.1:9/jwks"), &scopes).is_ok());
        assert!(Client::new("app", None, Some("http://app.example/jwks"), &scopes).unwrap_err().to_string().contains("https"));
        assert!(Client::new("app", Some(EC_JWKS), Some("https://a.example/j"), &scopes).is_err());
        assert!(Client::new("app", None, None, &scopes).is_err());
        assert!(Client::new("my app", Some(EC_JWKS), None, &scopes).is_err());
        assert!(Client::new("app", Some(EC_JWKS), None, &[]).is_err());
        assert!(Client::new("app", Some(EC_JWKS), None, &["patient/*.read".to_owned()]).is_err());
        assert!(Client::new("app", Some(r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA"}]}"#), None, &scopes).is_err());
    }

    #[test]
    fn weak_rsa_keys_are_refused_and_the_message_says_why() {
        let n_1024 = "wvC7i-GUWpiiRvy1iYq0bFz5ouHWY5gaULpbf8-RIkCG49g4qvdnBtzZ6ZXGZ5duBMddwIhD2DiPgSZaK1b_FSz684w3TThumhoXo3EW6k8vODYh45WRXEIb_tmFTVJ9K5Sw713YrRZKqUBPSJ_oSJlQc9T_4NFO5p64R7NY9Hk";
        let n_2048 = format!("AQ{}", "A".repeat(340)); // 2^2040-ish: the top byte is 1, so 2041 bits
        let jwks = |n: &str, e: &str| format!(r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{n}","e":"{e}"}}]}}"#);
        let scopes = vec!["system/*.read".to_owned()];
        let refused = |n: &str, e: &str| Client::new("app", Some(&jwks(n, e)), None, &scopes).unwrap_err().to_string();
        assert!(refused(n_1024, "AQAB").contains("has 1024 bits; at least 2048"));
        assert!(refused(&n_2048, "AQAB").contains("has 2041 bits"));
        let n_4096 = format!("gA{}", "A".repeat(681));
        assert!(refused(&n_4096, "Aw").contains("public exponent 3"));
        assert!(Client::new("app", Some(&jwks(&n_4096, "AQAB")), None, &scopes).is_ok());
    }

    #[test]
    fn a_record_round_trips() {
        let client = Client::new("app", Some(EC_JWKS), None, &["system/Patient.read system/Observation.rs".to_owned()]).unwrap();
        let record = client.to_record();
        assert_eq!(record.scopes, "system/Patient.read system/Observation.rs");
        assert_eq!(Client::from_record(&record).unwrap().to_record(), record);
    }
}
