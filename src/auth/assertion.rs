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

/// The header, if the token is a JWT signed with an algorithm SMART allows. `alg: none`, HMAC
/// and everything else are refused here, before any key is looked at.
pub fn header(assertion: &str) -> Result<Header, String> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| "the client assertion is not a signed JWT (alg none is refused)".to_owned())?;
    match header.alg {
        Algorithm::RS384 | Algorithm::ES384 => Ok(header),
        other => Err(format!("the client assertion is signed {other:?}; RS384 and ES384 are supported")),
    }
}

pub fn unverified_claims(assertion: &str) -> Result<UnverifiedClaims, String> {
    jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| "the client assertion's claims are not readable".to_owned())
}

/// The one key of the set that fits the algorithm and has this `kid`. Without a `kid` (Medplum's
/// CLI sends none), the one fitting key whose signature verifies the assertion. None or several
/// is an error: SMART asks for exactly one match.
pub fn select_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm, assertion: &str) -> Result<&'a Jwk, String> {
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
            (None, _) => Err(format!("the client assertion has no kid and none of the client's {alg:?} keys verifies its signature")),
            (Some(_), Some(_)) => Err(format!("the client assertion has no kid and several of the client's {alg:?} keys verify it; send a kid")),
        };
    };
    let mut matches = keys.keys.iter().filter(fits);
    match (matches.next(), matches.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(format!("the client's JWKS has no {alg:?} key with kid '{kid}'")),
        (Some(_), Some(_)) => Err(format!("the client's JWKS has several {alg:?} keys with kid '{kid}'")),
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
pub fn verify(assertion: &str, key: &Jwk, alg: Algorithm, client_id: &str, token_url: &str, skew: u64) -> Result<Claims, String> {
    let decoding = DecodingKey::from_jwk(key).map_err(|_| "the client's key is not usable".to_owned())?;
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
                ErrorKind::InvalidSignature => "the client assertion's signature does not verify with the client's key".to_owned(),
                ErrorKind::ExpiredSignature => "the client assertion has expired".to_owned(),
                ErrorKind::InvalidAudience => format!("the client assertion's aud must be the token URL {token_url}"),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => "the client assertion's iss and sub must both be the client_id".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => format!("the client assertion has no '{claim}'"),
                _ => "the client assertion is not valid".to_owned(),
            }
        })?
        .claims;
    let now = jsonwebtoken::get_current_timestamp();
    if claims.exp > now + MAX_LIFETIME_SECONDS + skew {
        return Err("the client assertion's exp is more than five minutes ahead".into());
    }
    match claims.jti.as_deref() {
        None | Some("") => return Err("the client assertion has no jti".into()),
        // The jti is stored to refuse replays: keep it to printable text of a sane length.
        Some(jti) if jti.len() > MAX_JTI_BYTES || jti.chars().any(char::is_control) => {
            return Err(format!("the client assertion's jti must be at most {MAX_JTI_BYTES} bytes without control characters"));
        }
        Some(_) => {}
    }
    Ok(claims)
}
