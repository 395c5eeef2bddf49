//! Settings: one typed tree, loaded once. Each setting is declared once, as a field of
//! `Settings` (its type, its doc, and with `#[arg]` its command-line flag), with its default in
//! `config/default.toml` (built in). Layers: defaults < a config file < environment
//! (`BULKFHIR_*`, `DATABASE_URL`) < command-line flags. A bad value stops start-up with a message
//! naming the key, and so does a key or `BULKFHIR_*` variable that names no setting (`strict`).
//! Renamed settings keep their old names for a release (`renamed`).

mod flags;
mod renamed;
mod strict;

use std::{net::SocketAddr, path::{Path, PathBuf}, time::Duration};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use serde::Deserialize;

pub use flags::Flags;

use crate::{
    auth::{clients::RegistrationError, settings::AuthSettings},
    export::worker::WorkerSettings,
    fhir::Validation,
    output::{OutputSettings, OutputSettingsError},
    telemetry::LogFormat,
};

/// The one place defaults are declared.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// Every setting. A field with `#[arg(long)]` is also a flag of every command (`--max-file-bytes`);
/// the doc comment is its `--help` text.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[command(next_help_heading = "Settings (flags over BULKFHIR_* variables over the config file)")]
pub struct Settings {
    /// Address to listen on, ADDR:PORT.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Public URL of the FHIR base (empty: http://{listen}/fhir).
    #[arg(long)]
    pub base_url: String,
    /// Database URL: sqlite://PATH or postgres://... (also DATABASE_URL).
    #[arg(long)]
    pub database_url: String,
    /// Database connections per process.
    #[arg(long)]
    pub database_pool_size: u32,
    /// How long a request or a worker waits for a Postgres connection before the database
    /// counts as unreachable (a 503 for requests, a retry for export tasks).
    #[arg(long)]
    pub database_acquire_timeout_millis: u64,
    /// Directory export files are written under.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Folder of the de-identification configurations (`_anonymizationConfig`) when the
    /// destination is local.
    #[arg(long)]
    pub anonymization_dir: PathBuf,
    /// File of the key (64 hex digits) that seals de-identified jobs' configurations in their
    /// rows; made (0600) when missing. Every node must use the same one.
    #[arg(long)]
    pub anonymization_key_file: PathBuf,
    /// Size at which an output file rolls over to the next.
    #[arg(long)]
    pub max_file_bytes: u64,
    /// Part size of streamed uploads (memory held per open file is about twice this).
    #[arg(long)]
    pub part_size_bytes: usize,
    /// Export workers in this process (0: an API-only node).
    #[arg(long)]
    pub workers: usize,
    /// How long completed exports are kept before their files are deleted.
    #[arg(long)]
    pub retention_seconds: u64,
    /// A worker's claim on a task lasts this long without a heartbeat.
    #[arg(long)]
    pub lease_seconds: u64,
    /// How often a worker renews its claim.
    #[arg(long)]
    pub heartbeat_millis: u64,
    /// Claims of one task before its job fails.
    #[arg(long)]
    pub max_attempts: i32,
    /// Time between housekeeping passes (expiry, file deletion).
    #[arg(long)]
    pub sweep_seconds: u64,
    /// Largest accepted request body.
    #[arg(long)]
    pub max_body_bytes: usize,
    /// Log format.
    #[arg(long)]
    pub log_format: LogFormat,
    /// Request timeout for everything but the streaming of file bodies.
    #[arg(long)]
    pub request_timeout_seconds: u64,
    /// How the kick-off treats missing or different `Accept` and `Prefer` headers.
    #[arg(long)]
    pub kickoff_headers: KickoffHeaders,
    /// Time a connection may take to send a request's headers.
    #[arg(long)]
    pub header_read_timeout_seconds: u64,
    /// Requests with bodies over 1 MiB handled at once; more wait their turn.
    #[arg(long)]
    pub concurrent_large_bodies: usize,
    /// How written and loaded resources are checked against their R4 definitions (a domain
    /// type: set it in the file or as BULKFHIR_VALIDATION).
    #[arg(skip)]
    pub validation: Validation,
    #[arg(skip)]
    pub auth: AuthSettings,
    /// Where export files go (`destination`, `file_urls`, `azure_*`, `s3_*`, `storage_*`).
    #[serde(flatten)]
    #[arg(skip)]
    pub output: OutputSettings,
}

impl Default for AuthSettings {
    /// The values of `config/default.toml`, for settings built in code (tests).
    fn default() -> Self {
        Figment::from(Toml::string(DEFAULTS)).extract_inner("auth").expect("the defaults file holds every auth setting")
    }
}

/// `kickoff_headers`: `strict` requires `Accept: application/fhir+json` and
/// `Prefer: respond-async` on a kick-off, as the seed system (Azure API for FHIR) does;
/// `lenient` takes a missing Accept or Prefer, and `application/json`, as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KickoffHeaders {
    #[default]
    Strict,
    Lenient,
}

/// Why the settings cannot be used: each names the file, key or variable to fix. The words
/// of the underlying error are part of the message (start-up prints only the top).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file '{}' does not exist", .0.display())]
    NoFile(PathBuf),
    #[error("invalid configuration: {}", .0.join("\ninvalid configuration: "))]
    UnknownKeys(Vec<String>),
    #[error("invalid configuration: {0}")]
    Read(Box<figment::Error>),
    #[error("invalid configuration: '{0}' must be greater than 0")]
    NotPositive(&'static str),
    #[error("invalid configuration: 'heartbeat_millis' must be shorter than 'lease_seconds'")]
    HeartbeatNotShorter,
    #[error("invalid configuration: 'auth.token_seconds' must be at most 3600 (SMART suggests 300)")]
    TokenTooLong,
    #[error("invalid configuration: 'auth.clients': {0}")]
    Client(RegistrationError),
    #[error("invalid configuration: {0}")]
    Output(OutputSettingsError),
    #[error("invalid configuration: 'base_url' {0}")]
    BaseUrl(url::ParseError),
}

impl Settings {
    /// The settings, and warnings to log once logging is set up (old names used).
    pub fn load(config_file: Option<&Path>, flags: &Flags) -> Result<(Self, Vec<String>), ConfigError> {
        let known = strict::KnownKeys::from_defaults(DEFAULTS);
        let mut found = known.check_env(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()));
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = config_file {
            if !file.exists() {
                return Err(ConfigError::NoFile(file.to_owned()));
            }
            let in_file = known.check_file(file);
            found.unknown.splice(0..0, in_file.unknown);
            found.deprecated.splice(0..0, in_file.deprecated);
            figment = figment.merge(renamed::Renamed(Toml::file(file)));
        }
        if !found.unknown.is_empty() {
            return Err(ConfigError::UnknownKeys(found.unknown));
        }
        let settings: Self = figment
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database_url".into()))
            // BULKFHIR_AUTH__ALLOW_OPEN sets auth.allow_open.
            .merge(renamed::Renamed(Env::prefixed("BULKFHIR_").split("__")))
            .merge(flags)
            .extract()
            .map_err(|e| ConfigError::Read(Box::new(e)))?;
        settings.validate()?;
        found.deprecated.extend(flags.deprecated().iter().cloned());
        Ok((settings, found.deprecated))
    }

    fn validate(&self) -> Result<(), ConfigError> {
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
            return Err(ConfigError::NotPositive(key));
        }
        if self.heartbeat_millis >= self.lease_seconds * 1000 {
            return Err(ConfigError::HeartbeatNotShorter);
        }
        if self.auth.token_seconds > 3600 {
            return Err(ConfigError::TokenTooLong);
        }
        if let Some(bad) = self.auth.clients.iter().find_map(|c| c.to_client().err()) {
            return Err(ConfigError::Client(bad));
        }
        self.output.validate().map_err(ConfigError::Output)?;
        if !self.base_url.is_empty() {
            url::Url::parse(&self.base_url).map_err(ConfigError::BaseUrl)?;
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

    fn load(file: Option<&Path>, flags: &[&str]) -> Result<(Settings, Vec<String>), String> {
        Settings::load(file, &Flags::parse(flags.iter().copied()).unwrap()).map_err(|e| e.to_string())
    }

    fn defaults() -> Settings {
        load(None, &[]).unwrap().0
    }

    fn with_file(toml: &str, flags: &[&str]) -> Result<(Settings, Vec<String>), String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bulkfhir.toml");
        std::fs::write(&file, toml).unwrap();
        load(Some(&file), flags)
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let (s, warnings) = with_file("workers = 3\nmax_file_bytes = 500\nlog_format = \"json\"\n", &["--workers", "7"]).unwrap();
        assert_eq!((s.workers, s.max_file_bytes, s.log_format), (7, 500, LogFormat::Json));
        assert_eq!(s.retention_seconds, 86400);
        assert_eq!(s.kickoff_headers, KickoffHeaders::Strict);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn every_flag_is_a_key_of_the_defaults_file() {
        let known = strict::KnownKeys::from_defaults(DEFAULTS);
        let flags = flags::flag_args();
        let positional: Vec<_> = flags.iter().filter(|a| a.get_long().is_none()).map(|a| a.get_id()).collect();
        assert!(positional.is_empty(), "each field of Settings needs #[arg(long)] or #[arg(skip)]: {positional:?}");
        let shown: Vec<&str> = flags.iter().filter(|a| !a.is_hide_set()).map(|a| a.get_id().as_str()).collect();
        assert!(shown.len() >= 20 && shown.contains(&"retention_seconds"), "{shown:?}");
        for flag in shown {
            assert!(known.knows(flag), "--{flag} has no line in config/default.toml");
        }
    }

    #[test]
    fn an_old_name_in_the_file_still_works_and_warns_naming_the_new_one() {
        let (s, warnings) = with_file("retention = 60\n", &[]).unwrap();
        assert_eq!(s.retention_seconds, 60);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("'retention'") && warnings[0].contains("'retention_seconds'"), "{warnings:?}");
        let (s, _) = with_file("retention = 60\n", &["--retention-seconds", "90"]).unwrap();
        assert_eq!(s.retention_seconds, 90, "a flag under its new name is still above the file");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        assert!(load(None, &["--max-file-bytes", "0"]).unwrap_err().contains("max_file_bytes"));
    }

    #[test]
    fn the_built_in_auth_defaults_are_the_defaults_file() {
        let d = AuthSettings::default();
        assert_eq!((d.allow_open, d.token_seconds, d.max_concurrent_exports), (true, 300, 4));
        assert!(d.signing_key_file.is_none() && d.clients.is_empty());
    }

    #[test]
    fn validation_is_strict_unless_set() {
        assert_eq!(defaults().validation, Validation::Strict);
        assert_eq!(with_file("validation = \"allow_unknown_elements\"\n", &[]).unwrap().0.validation, Validation::AllowUnknownElements);
        assert!(with_file("validation = \"loose\"\n", &[]).unwrap_err().contains("validation"));
    }
}
