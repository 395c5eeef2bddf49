//! Access tokens: JWTs the server signs (ES384) with a key it generates and keeps in the
//! database (so every node on one database accepts every node's tokens), or a configured one.

use aws_lc_rs::{rand::SystemRandom, signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING}};
use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::scopes::Scopes;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
    scope: String,
}

/// What a valid access token says.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub scopes: Scopes,
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// `iss` and `aud` of our tokens: the FHIR base URL.
    issuer: String,
}

/// Why the token-signing key cannot be used (start-up stops on it).
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("the stored token-signing key is not valid hex")]
    StoredNotHex,
    #[error("the token-signing key file is not a P-384 PKCS#8 PEM key: {0}")]
    NotPem(jsonwebtoken::errors::Error),
    #[error("the token-signing key is not a P-384 key: {0}")]
    NotP384(jsonwebtoken::errors::Error),
    #[error("the token-signing key is not usable: {0}")]
    Unusable(jsonwebtoken::errors::Error),
}

/// Why a bearer token is refused (the client reads it in `WWW-Authenticate`).
#[derive(Debug, thiserror::Error)]
pub enum TokenRejected {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid")]
    Invalid,
    #[error("the access token's client is no longer registered")]
    ClientGone,
}

impl TokenKeys {
    /// A new P-384 key as PKCS#8 DER, hex-encoded for storage.
    pub fn generate() -> String {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .expect("the system random source works");
        hex::encode(document.as_ref())
    }

    pub fn from_stored(hex_pkcs8: &str, issuer: &str) -> Result<Self, SigningKeyError> {
        let der = hex::decode(hex_pkcs8).map_err(|_| SigningKeyError::StoredNotHex)?;
        Self::new(EncodingKey::from_ec_der(&der), issuer)
    }

    /// A P-384 private key in a PKCS#8 PEM file (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384`).
    pub fn from_pem(pem: &[u8], issuer: &str) -> Result<Self, SigningKeyError> {
        let key = EncodingKey::from_ec_pem(pem).map_err(SigningKeyError::NotPem)?;
        Self::new(key, issuer)
    }

    fn new(encoding: EncodingKey, issuer: &str) -> Result<Self, SigningKeyError> {
        let public = Jwk::from_encoding_key(&encoding, Algorithm::ES384).map_err(SigningKeyError::NotP384)?;
        let decoding = DecodingKey::from_jwk(&public).map_err(SigningKeyError::Unusable)?;
        Ok(Self { encoding, decoding, issuer: issuer.to_owned() })
    }

    /// Signs an access token for the client with the granted scopes.
    pub fn issue(&self, client_id: &str, scopes: &Scopes, lifetime_seconds: u64) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: client_id.to_owned(),
            aud: self.issuer.clone(),
            exp: now + lifetime_seconds,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES384), &claims, &self.encoding).expect("an ES384 token signs")
    }

    /// Checks a bearer token: our signature, our issuer and audience, not expired (no leeway:
    /// we issued it on our own clock).
    pub fn verify(&self, token: &str) -> Result<Grant, TokenRejected> {
        let mut validation = Validation::new(Algorithm::ES384);
        validation.leeway = 0;
        validation.set_audience(&[&self.issuer]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenRejected::Expired,
            _ => TokenRejected::Invalid,
        })?;
        Ok(Grant { client_id: data.claims.sub, scopes: Scopes::parse_lenient(&data.claims.scope) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_scopes_and_not_elsewhere() {
        let keys = TokenKeys::from_stored(&TokenKeys::generate(), "http://a/fhir").unwrap();
        let scopes = Scopes::parse_lenient("system/Patient.read");
        let token = keys.issue("app", &scopes, 300);
        let grant = keys.verify(&token).unwrap();
        assert_eq!(grant.client_id, "app");
        assert_eq!(grant.scopes, scopes);

        let other = TokenKeys::from_stored(&TokenKeys::generate(), "http://a/fhir").unwrap();
        assert!(other.verify(&token).is_err(), "another key's token");
        let elsewhere = TokenKeys::from_stored(&TokenKeys::generate(), "http://b/fhir").unwrap();
        assert!(elsewhere.verify(&elsewhere.issue("app", &scopes, 300)).is_ok());
        assert!(keys.verify(&elsewhere.issue("app", &scopes, 300)).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }

    #[test]
    fn a_configured_pem_key_signs_and_an_rsa_one_is_refused() {
        let fixture = |name: &str| std::fs::read(format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let keys = TokenKeys::from_pem(&fixture("ec-384.pem"), "http://a/fhir").unwrap();
        let scopes = Scopes::parse_lenient("system/*.rs");
        assert_eq!(keys.verify(&keys.issue("app", &scopes, 300)).unwrap().scopes, scopes);
        assert!(TokenKeys::from_pem(&fixture("rsa-384.pem"), "http://a/fhir").is_err());
    }
}
