//! Registered backend clients: a `client_id`, its public keys (a JWKS inline or at a URL), and
//! the system scopes it may be granted.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use url::Url;

use super::scopes::Scopes;

/// A client as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    /// JWKS JSON text, when given inline.
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    /// Space-separated system scopes.
    pub scopes: String,
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
    pub fn new(client_id: &str, jwks: Option<&str>, jwks_url: Option<&str>, scopes: &[String]) -> Result<Self, String> {
        let id_ok = !client_id.is_empty() && client_id.len() <= 255 && client_id.chars().all(|c| c.is_ascii_graphic());
        if !id_ok {
            return Err(format!("client_id '{client_id}' must be 1 to 255 printable ASCII characters without spaces"));
        }
        let keys = match (jwks, jwks_url) {
            (Some(text), None) => KeySource::Inline(parse_jwks(text)?),
            (None, Some(url)) => KeySource::Url(parse_jwks_url(url)?),
            _ => return Err(format!("client '{client_id}' needs exactly one of a JWKS (inline) or a JWKS URL")),
        };
        let scopes = Scopes::parse_strict(scopes.iter().map(String::as_str))?;
        if scopes.is_empty() {
            return Err(format!("client '{client_id}' needs at least one scope, such as system/*.read"));
        }
        Ok(Self { id: client_id.to_owned(), keys, scopes })
    }

    pub fn from_record(record: &ClientRecord) -> Result<Self, String> {
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

/// Parses a JWKS and checks that it holds at least one usable signing key.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("the JWKS is not valid: {e}"))?;
    let usable = set.keys.iter().any(|k| {
        k.common.key_id.is_some()
            && match &k.algorithm {
                AlgorithmParameters::RSA(_) => true,
                AlgorithmParameters::EllipticCurve(ec) => ec.curve == EllipticCurve::P384,
                _ => false,
            }
    });
    if usable {
        Ok(set)
    } else {
        Err("the JWKS has no RSA or P-384 EC key with a 'kid' (RS384 and ES384 are supported)".into())
    }
}

/// JWKS URLs must be https; plain http only on the loopback interface (local tests).
fn parse_jwks_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("the JWKS URL '{text}' is not valid: {e}"))?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!("the JWKS URL '{text}' must use https")),
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
        assert!(Client::new("app", None, Some("http://app.example/jwks"), &scopes).unwrap_err().contains("https"));
        assert!(Client::new("app", Some(EC_JWKS), Some("https://a.example/j"), &scopes).is_err());
        assert!(Client::new("app", None, None, &scopes).is_err());
        assert!(Client::new("my app", Some(EC_JWKS), None, &scopes).is_err());
        assert!(Client::new("app", Some(EC_JWKS), None, &[]).is_err());
        assert!(Client::new("app", Some(EC_JWKS), None, &["patient/*.read".to_owned()]).is_err());
        assert!(Client::new("app", Some(r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA"}]}"#), None, &scopes).is_err());
    }

    #[test]
    fn a_record_round_trips() {
        let client = Client::new("app", Some(EC_JWKS), None, &["system/Patient.read system/Observation.rs".to_owned()]).unwrap();
        let record = client.to_record();
        assert_eq!(record.scopes, "system/Patient.read system/Observation.rs");
        assert_eq!(Client::from_record(&record).unwrap().to_record(), record);
    }
}
