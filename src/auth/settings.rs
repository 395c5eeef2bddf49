//! The settings of authorization (`auth.*` in the configuration); `config` loads them.

use std::path::PathBuf;

use serde::Deserialize;

use super::clients::{Client, RegistrationError};

/// SMART Backend Services authorization (`auth.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// Run without authorization while no client is registered (the quick start). Once a
    /// client is registered, authorization is on regardless.
    pub allow_open: bool,
    /// Lifetime of access tokens.
    pub token_seconds: u64,
    /// Leeway for client assertions' `exp` against our clock.
    pub clock_skew_seconds: u64,
    /// A P-384 PKCS#8 PEM key to sign access tokens with; without it, the server generates
    /// one and keeps it in the database.
    pub signing_key_file: Option<PathBuf>,
    /// Queued or running exports per client.
    pub max_concurrent_exports: u32,
    /// Status polls per client per second before 429s.
    pub status_polls_per_second: u32,
    /// Clients registered from the configuration file (stored in the database at start).
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
}

/// One client in the configuration file: `[[auth.clients]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientSettings {
    pub client_id: String,
    /// The JWKS as JSON text.
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    pub scopes: Vec<String>,
}

impl ClientSettings {
    pub fn to_client(&self) -> Result<Client, RegistrationError> {
        Client::new(&self.client_id, self.jwks.as_deref(), self.jwks_url.as_deref(), &self.scopes)
    }
}
