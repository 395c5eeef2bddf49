//! Settings: one typed tree, loaded once. Defaults (`config/default.toml`, built in) < a config
//! file < environment (`BULKFHIR_*`, `DATABASE_URL`) < command-line flags. A bad value stops
//! start-up with a message naming the key, and so does a key or `BULKFHIR_*` variable that names
//! no setting (`strict`).

mod strict;

use std::{net::SocketAddr, path::{Path, PathBuf}, time::Duration};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

use crate::{auth::settings::AuthSettings, export::worker::WorkerSettings, fhir::Validation, output::OutputSettings, telemetry::LogFormat};

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub base_url: String,
    pub database_url: String,
    pub database_pool_size: u32,
    /// How long a request or a worker waits for a Postgres connection before the database
    /// counts as unreachable (a 503 for requests, a retry for export tasks).
    pub database_acquire_timeout_millis: u64,
    pub output_dir: PathBuf,
    /// The local configuration store of de-identified exports (`_anonymizationConfig`).
    pub anonymization_dir: PathBuf,
    /// The key that seals de-identified jobs' configurations in their rows (made if missing).
    pub anonymization_key_file: PathBuf,
    pub max_file_bytes: u64,
    pub part_size_bytes: usize,
    pub workers: usize,
    pub retention: u64,
    pub lease_seconds: u64,
    pub heartbeat_millis: u64,
    pub max_attempts: i32,
    pub sweep_seconds: u64,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    /// Request timeout (seconds) for everything but the streaming of file bodies.
    pub request_timeout_seconds: u64,
    /// How the kick-off treats missing or different `Accept` and `Prefer` headers.
    pub kickoff_headers: KickoffHeaders,
    /// Seconds a connection may take to send a request's headers.
    pub header_read_timeout_seconds: u64,
    /// Requests with bodies over 1 MiB handled at once; more wait their turn.
    pub concurrent_large_bodies: usize,
    /// How written and loaded resources are checked against their R4 definitions.
    pub validation: Validation,
    pub auth: AuthSettings,
    /// Where export files go (`destination`, `file_urls`, `azure_*`, `s3_*`, `storage_*`).
    #[serde(flatten)]
    pub output: OutputSettings,
}

impl Default for AuthSettings {
    /// The built-in defaults (as in config/default.toml).
    fn default() -> Self {
        Self {
            allow_open: true,
            token_seconds: 300,
            clock_skew_seconds: 30,
            signing_key_file: None,
            max_concurrent_exports: 4,
            status_polls_per_second: 20,
            clients: Vec::new(),
        }
    }
}

/// `kickoff_headers`: `strict` requires `Accept: application/fhir+json` and
/// `Prefer: respond-async` on a kick-off, as the seed system (Azure API for FHIR) does;
/// `lenient` takes a missing Accept or Prefer, and `application/json`, as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KickoffHeaders {
    #[default]
    Strict,
    Lenient,
}

/// Values given on the command line; unset ones leave the lower layers alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_file_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
}

impl Settings {
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Self, String> {
        let known = strict::KnownKeys::from_defaults(DEFAULTS);
        let mut unknown = known.check_env(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()));
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = config_file {
            if !file.exists() {
                return Err(format!("config file '{}' does not exist", file.display()));
            }
            unknown.splice(0..0, known.check_file(file));
            figment = figment.merge(Toml::file(file));
        }
        if !unknown.is_empty() {
            return Err(format!("invalid configuration: {}", unknown.join("\ninvalid configuration: ")));
        }
        let settings: Self = figment
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database_url".into()))
            // BULKFHIR_AUTH__ALLOW_OPEN sets auth.allow_open.
            .merge(Env::prefixed("BULKFHIR_").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_file_bytes", self.max_file_bytes as u128),
            ("part_size_bytes", self.part_size_bytes as u128),
            ("lease_seconds", self.lease_seconds as u128),
            ("heartbeat_millis", self.heartbeat_millis as u128),
            ("max_attempts", self.max_attempts.max(0) as u128),
            ("sweep_seconds", self.sweep_seconds as u128),
            ("database_pool_size", self.database_pool_size as u128),
            ("database_acquire_timeout_millis", self.database_acquire_timeout_millis as u128),
            ("request_timeout_seconds", self.request_timeout_seconds as u128),
            ("header_read_timeout_seconds", self.header_read_timeout_seconds as u128),
            ("concurrent_large_bodies", self.concurrent_large_bodies as u128),
            ("auth.token_seconds", self.auth.token_seconds as u128),
            ("auth.max_concurrent_exports", self.auth.max_concurrent_exports as u128),
            ("auth.status_polls_per_second", self.auth.status_polls_per_second as u128),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("invalid configuration: '{key}' must be greater than 0"));
        }
        if self.heartbeat_millis >= self.lease_seconds * 1000 {
            return Err("invalid configuration: 'heartbeat_millis' must be shorter than 'lease_seconds'".into());
        }
        if self.auth.token_seconds > 3600 {
            return Err("invalid configuration: 'auth.token_seconds' must be at most 3600 (SMART suggests 300)".into());
        }
        if let Some(bad) = self.auth.clients.iter().find_map(|c| c.to_client().err()) {
            return Err(format!("invalid configuration: 'auth.clients': {bad}"));
        }
        self.output.validate().map_err(|e| format!("invalid configuration: {e}"))?;
        if !self.base_url.is_empty() {
            url::Url::parse(&self.base_url).map_err(|e| format!("invalid configuration: 'base_url' {e}"))?;
        }
        Ok(())
    }

    /// The public FHIR base URL without a trailing slash, given the address actually bound.
    pub fn public_base_url(&self, bound: SocketAddr) -> String {
        if self.base_url.is_empty() {
            format!("http://{bound}/fhir")
        } else {
            self.base_url.trim_end_matches('/').to_owned()
        }
    }

    pub fn worker_settings(&self) -> WorkerSettings {
        WorkerSettings {
            workers: self.workers,
            lease: Duration::from_secs(self.lease_seconds),
            heartbeat: Duration::from_millis(self.heartbeat_millis),
            max_attempts: self.max_attempts,
            idle_poll: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let overrides = Overrides { workers: Some(7), max_file_bytes: Some(1000), ..Default::default() };
        let s = Settings::load(None, &overrides).unwrap();
        assert_eq!(s.workers, 7);
        assert_eq!(s.max_file_bytes, 1000);
        assert_eq!(s.retention, 86400);
        assert_eq!(s.kickoff_headers, KickoffHeaders::Strict);
    }

    #[test]
    fn output_defaults_in_code_match_the_defaults_file() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        assert_eq!(format!("{:?}", s.output), format!("{:?}", OutputSettings::default()));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let overrides = Overrides { max_file_bytes: Some(0), ..Default::default() };
        assert!(Settings::load(None, &overrides).unwrap_err().contains("max_file_bytes"));
    }

    #[test]
    fn the_built_in_auth_defaults_match_the_defaults_file() {
        let s = Settings::load(None, &Overrides::default()).unwrap();
        let d = AuthSettings::default();
        assert_eq!(
            (s.auth.allow_open, s.auth.token_seconds, s.auth.clock_skew_seconds, s.auth.max_concurrent_exports, s.auth.status_polls_per_second),
            (d.allow_open, d.token_seconds, d.clock_skew_seconds, d.max_concurrent_exports, d.status_polls_per_second)
        );
        assert!(s.auth.signing_key_file.is_none() && s.auth.clients.is_empty());
    }

    #[test]
    fn validation_is_strict_unless_set() {
        assert_eq!(Settings::load(None, &Overrides::default()).unwrap().validation, Validation::Strict);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bulkfhir.toml");
        std::fs::write(&file, "validation = \"allow_unknown_elements\"\n").unwrap();
        assert_eq!(Settings::load(Some(&file), &Overrides::default()).unwrap().validation, Validation::AllowUnknownElements);
        std::fs::write(&file, "validation = \"loose\"\n").unwrap();
        assert!(Settings::load(Some(&file), &Overrides::default()).unwrap_err().contains("validation"));
    }
}
