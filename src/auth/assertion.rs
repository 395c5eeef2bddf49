//! The client assertion of SMART Backend Services (`private_key_jwt`): which key may have signed
//! it, and the checks on its header and claims.

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey, Header, Validation,
};
use serde::Deserialize;

use super::clients::strong_enough;

/// Assertions may expire at most this far ahead (SMART: "no more than five minutes in the future").
pub const MAX_LIFETIME_SECONDS: u64 = 300;
const MAX_JTI_BYTES: usize = 512;

/// Claims read before the signature is checked, only to find the client.
#[derive(Debug, Deserialize)]
pub struct UnverifiedClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Claims {
    pub exp: u64,
    pub jti: Option<String>,
}

/// Why a client assertion is refused (the token endpoint answers `invalid_client` with it).
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("the client assertion is not a signed JWT (alg none is refused)")]
    NotSignedJwt,
    #[error("the client assertion is signed {0:?}; RS384 and ES384 are supported")]
    Algorithm(Algorithm),
    #[error("the client assertion's claims are not readable")]
    UnreadableClaims,
    #[error("the client assertion has no kid and none of the client's {0:?} keys verifies its signature")]
    NoKeyVerifies(Algorithm),
    #[error("the client assertion has no kid and several of the client's {0:?} keys verify it; send a kid")]
    SeveralKeysVerify(Algorithm),
    #[error("the client's JWKS has no {alg:?} key with kid '{kid}'")]
    NoKey { alg: Algorithm, kid: String },
    #[error("the client's JWKS has several {alg:?} keys with kid '{kid}'")]
    SeveralKeys { alg: Algorithm, kid: String },
    #[error("the client's key is not usable")]
    KeyUnusable,
    #[error("the client assertion's signature does not verify with the client's key")]
    Signature,
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion's aud must be the token URL {0}")]
    Audience(String),
    #[error("the client assertion's iss and sub must both be the client_id")]
    IssuerSubject,
    #[error("the client assertion has no '{0}'")]
    MissingClaim(String),
    #[error("the client assertion is not valid")]
    Invalid,
    #[error("the client assertion's exp is more than five minutes ahead")]
    TooLongLived,
    #[error("the client assertion has no jti")]
    NoJti,
    #[error("the client assertion's jti must be at most {MAX_JTI_BYTES} bytes without control characters")]
    BadJti,
}

/// The header, if the token is a JWT signed with an algorithm SMART allows. `alg: none`, HMAC
/// and everything else are refused here, before any key is looked at.
pub fn header(assertion: &str) -> Result<Header, AssertionError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AssertionError::NotSignedJwt)?;
    match header.alg {
        Algorithm::RS384 | Algorithm::ES384 => Ok(header),
        other => Err(AssertionError::Algorithm(other)),
    }
}

pub fn unverified_claims(assertion: &str) -> Result<UnverifiedClaims, AssertionError> {
    jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| AssertionError::UnreadableClaims)
}

/// The one key of the set that fits the algorithm and has this `kid`. Without a `kid` (Medplum's
/// CLI sends none), the one fitting key whose signature verifies the assertion. None or several
/// is an error: SMART asks for exactly one match.
pub fn select_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm, assertion: &str) -> Result<&'a Jwk, AssertionError> {
    let fits = |k: &&Jwk| {
        kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid))
            && !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption))
            && k.common.key_algorithm.is_none_or(|a| key_algorithm(alg) == Some(a))
            && strong_enough(k).is_ok()
            && match (&k.algorithm, alg) {
                (AlgorithmParameters::RSA(_), Algorithm::RS384) => true,
                (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => ec.curve == EllipticCurve::P384,
                _ => false,
            }
    };
    let Some(kid) = kid else {
        let mut verifying = keys.keys.iter().filter(fits).filter(|k| signature_verifies(assertion, k, alg));
        return match (verifying.next(), verifying.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(AssertionError::NoKeyVerifies(alg)),
            (Some(_), Some(_)) => Err(AssertionError::SeveralKeysVerify(alg)),
        };
    };
    let mut matches = keys.keys.iter().filter(fits);
    match (matches.next(), matches.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(AssertionError::NoKey { alg, kid: kid.to_owned() }),
        (Some(_), Some(_)) => Err(AssertionError::SeveralKeys { alg, kid: kid.to_owned() }),
    }
}

/// Whether the key signed the assertion, claims unchecked (`verify` checks them).
fn signature_verifies(assertion: &str, key: &Jwk, alg: Algorithm) -> bool {
    let Ok(decoding) = DecodingKey::from_jwk(key) else { return false };
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(assertion, &decoding, &validation).is_ok()
}

fn key_algorithm(alg: Algorithm) -> Option<KeyAlgorithm> {
    match alg {
        Algorithm::RS384 => Some(KeyAlgorithm::RS384),
        Algorithm::ES384 => Some(KeyAlgorithm::ES384),
        _ => None,
    }
}

/// Verifies the signature and the claims: `iss` = `sub` = the client, `aud` = the token URL,
/// `exp` not past and at most five minutes ahead (both within `skew`), and a `jti`.
pub fn verify(assertion: &str, key: &Jwk, alg: Algorithm, client_id: &str, token_url: &str, skew: u64) -> Result<Claims, AssertionError> {
    let decoding = DecodingKey::from_jwk(key).map_err(|_| AssertionError::KeyUnusable)?;
    let mut validation = Validation::new(alg);
    validation.leeway = skew;
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<Claims>(assertion, &decoding, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => AssertionError::Signature,
                ErrorKind::ExpiredSignature => AssertionError::Expired,
                ErrorKind::InvalidAudience => AssertionError::Audience(token_url.to_owned()),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => AssertionError::IssuerSubject,
                ErrorKind::MissingRequiredClaim(claim) => AssertionError::MissingClaim(claim.clone()),
                _ => AssertionError::Invalid,
            }
        })?
        .claims;
    let now = jsonwebtoken::get_current_timestamp();
    if claims.exp > now + MAX_LIFETIME_SECONDS + skew {
        return Err(AssertionError::TooLongLived);
    }
    match claims.jti.as_deref() {
        None | Some("") => return Err(AssertionError::NoJti),
        // The jti is stored to refuse replays: keep it to printable text of a sane length.
        Some(jti) if jti.len() > MAX_JTI_BYTES || jti.chars().any(char::is_control) => {
            return Err(AssertionError::BadJti);
        }
        Some(_) => {}
    }
    Ok(claims)
}
