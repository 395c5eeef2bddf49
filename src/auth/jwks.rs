//! Client JWKS published at a URL: fetched over HTTP(S) and cached as long as the response's
//! `Cache-Control: max-age` allows (not at all without one, at most an hour).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use jsonwebtoken::jwk::JwkSet;
use url::Url;

use super::clients::{parse_jwks, JwksError};

const MAX_CACHE: Duration = Duration::from_secs(3600);
/// A JWKS larger than this is refused (a key set is a few kilobytes).
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why the key set at a client's JWKS URL could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot build the HTTPS client that fetches JWKS URLs: {0}")]
    Client(Arc<reqwest13::Error>),
    #[error("fetching the JWKS at {url} failed: {reason}")]
    Fetch { url: Url, reason: reqwest13::Error },
    #[error("the JWKS URL {url} answered {status}")]
    Status { url: Url, status: reqwest13::StatusCode },
    #[error("reading the JWKS at {url} failed: {reason}")]
    Read { url: Url, reason: reqwest13::Error },
    #[error("the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { url: Url },
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

#[derive(Clone, Default)]
pub struct JwksFetcher {
    /// Built on the first fetch, not at start-up: most servers never fetch a JWKS, and a client
    /// that cannot be built must fail that fetch, not the server.
    http: Arc<OnceLock<Result<reqwest13::Client, Arc<reqwest13::Error>>>>,
    cache: Arc<Mutex<HashMap<Url, (JwkSet, Instant)>>>,
}

impl JwksFetcher {
    pub fn new() -> Self {
        Self::default()
    }

    fn http(&self) -> Result<&reqwest13::Client, FetchError> {
        let built = self.http.get_or_init(|| {
            crate::https::reqwest_trust(reqwest13::Client::builder())
                .timeout(Duration::from_secs(10))
                .redirect(reqwest13::redirect::Policy::none())
                .build()
                .map_err(Arc::new)
        });
        built.as_ref().map_err(|e| FetchError::Client(e.clone()))
    }

    /// The key set at `url`: from the cache while it is fresh, unless `refresh` (a `kid` was
    /// not found in the cached set, so the client may have rotated its keys).
    pub async fn get(&self, url: &Url, refresh: bool) -> Result<(JwkSet, bool), FetchError> {
        if !refresh {
            let cache = self.cache.lock().expect("the JWKS cache lock is not poisoned");
            if let Some((set, until)) = cache.get(url)
                && Instant::now() < *until
            {
                return Ok((set.clone(), true));
            }
        }
        let response = self.http()?.get(url.clone()).send().await.map_err(|reason| FetchError::Fetch { url: url.clone(), reason })?;
        if !response.status().is_success() {
            return Err(FetchError::Status { url: url.clone(), status: response.status() });
        }
        let max_age = response.headers().get(reqwest13::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).map_or(Duration::ZERO, max_age);
        let body = response.bytes().await.map_err(|reason| FetchError::Read { url: url.clone(), reason })?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge { url: url.clone() });
        }
        let set = parse_jwks(&String::from_utf8_lossy(&body))?;
        if !max_age.is_zero() {
            let mut cache = self.cache.lock().expect("the JWKS cache lock is not poisoned");
            cache.insert(url.clone(), (set.clone(), Instant::now() + max_age.min(MAX_CACHE)));
        }
        Ok((set, false))
    }
}

/// How long a response may be cached: `max-age`, or nothing under `no-store`/`no-cache`.
fn max_age(cache_control: &str) -> Duration {
    let directives: Vec<String> = cache_control.split(',').map(|d| d.trim().to_ascii_lowercase()).collect();
    if directives.iter().any(|d| d == "no-store" || d == "no-cache") {
        return Duration::ZERO;
    }
    directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age=").and_then(|v| v.trim_matches('"').parse().ok()))
        .map_or(Duration::ZERO, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_sets_the_lifetime() {
        assert_eq!(max_age("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(max_age("max-age=600, no-store"), Duration::ZERO);
        assert_eq!(max_age("private"), Duration::ZERO);
    }
}
