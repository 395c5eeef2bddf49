//! Where export files go, as configured: the destination (`local`, `azure`, `s3`), how manifest
//! URLs are minted, and how storage requests are retried. Flattened into the top-level settings,
//! so each key is a plain `BULKFHIR_<KEY>` variable.

use std::{fmt, time::Duration};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Destination {
    /// A local directory (`output_dir`), files served by this server.
    #[default]
    Local,
    /// Azure Blob Storage (or Azurite).
    Azure,
    /// An S3 bucket, or an S3-compatible store.
    S3,
}

/// How the manifest's file URLs are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UrlMode {
    /// `signed` for Azure and S3, `proxy` for a local directory.
    #[default]
    Auto,
    /// A SAS or presigned URL valid until the export expires (`requiresAccessToken: false`).
    Signed,
    /// The server streams the file at its own URL (`requiresAccessToken: true`).
    Proxy,
}

/// A secret setting: never printed, by `Debug` or otherwise.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "[redacted]" } else { "[unset]" })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputSettings {
    pub destination: Destination,
    pub file_urls: UrlMode,
    /// Azure storage account name (not needed with `azure_emulator`).
    pub azure_account: String,
    /// Shared Key of the account; or
    pub azure_access_key: Secret,
    /// an account SAS token (`sv=...&sig=...`); with neither, the default Azure credential
    /// chain (AZURE_* environment variables, workload or managed identity, Azure CLI).
    pub azure_sas_token: Secret,
    /// Blob service URL; empty means `https://{account}.blob.core.windows.net`.
    pub azure_endpoint: String,
    /// Azurite: account `devstoreaccount1` with its well-known key at http://127.0.0.1:10000
    /// unless `azure_endpoint` and the key are given.
    pub azure_emulator: bool,
    pub s3_bucket: String,
    pub s3_region: String,
    /// Empty for AWS; the URL of an S3-compatible store otherwise (path-style requests).
    pub s3_endpoint: String,
    /// With the secret, static credentials; empty means the AWS default chain (AWS_*
    /// environment variables, web identity, instance metadata).
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    /// Timeout of one storage request (seconds).
    pub storage_timeout_seconds: u64,
    /// Retries of a failed storage request (timeouts, 5xx, 429, connection errors), with
    /// exponential backoff and jitter, stopping at whichever bound comes first.
    pub storage_max_retries: usize,
    pub storage_retry_seconds: u64,
}

/// The values of `config/default.toml` (where defaults are declared), for settings built in
/// code (tests). The output keys sit at the top level of that file.
impl Default for OutputSettings {
    fn default() -> Self {
        use figment::providers::Format;
        let defaults = figment::providers::Toml::string(include_str!("../../config/default.toml"));
        figment::Figment::from(defaults).extract().expect("the defaults file holds every output setting")
    }
}

/// Azurite's well-known development account (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl OutputSettings {
    /// The URL mode in force for this destination.
    pub fn url_mode(&self) -> UrlMode {
        match (self.file_urls, self.destination) {
            (UrlMode::Auto, Destination::Local) => UrlMode::Proxy,
            (UrlMode::Auto, _) => UrlMode::Signed,
            (mode, _) => mode,
        }
    }

    pub fn retry(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                // Short enough that a store back from an outage is noticed within seconds.
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.storage_max_retries,
            retry_timeout: Duration::from_secs(self.storage_retry_seconds),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.storage_timeout_seconds)
    }

    /// Start-up checks: an error naming the key that is wrong.
    pub fn validate(&self) -> Result<(), OutputSettingsError> {
        use OutputSettingsError::*;
        if self.storage_timeout_seconds == 0 {
            return Err(ZeroStorageTimeout);
        }
        match self.destination {
            Destination::Local if self.file_urls == UrlMode::Signed => Err(SignedLocal),
            Destination::Azure if self.azure_account.is_empty() && !self.azure_emulator => Err(NoAzureAccount),
            Destination::Azure if self.azure_access_key.is_set() && self.azure_sas_token.is_set() => Err(TwoAzureCredentials),
            // object_store cannot sign a URL with a SAS token (a SAS cannot mint another).
            Destination::Azure if self.azure_sas_token.is_set() && self.url_mode() == UrlMode::Signed => Err(SasCannotSign),
            Destination::S3 if self.s3_bucket.is_empty() => Err(NoS3Bucket),
            Destination::S3 if self.s3_access_key_id.is_empty() == self.s3_secret_access_key.is_set() => Err(HalfS3Credentials),
            _ => Ok(()),
        }
    }
}

/// Output settings that cannot work together, each naming the key to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputSettingsError {
    #[error("'storage_timeout_seconds' must be greater than 0")]
    ZeroStorageTimeout,
    #[error("'file_urls' = \"signed\" needs an azure or s3 destination; a local directory is served by proxy")]
    SignedLocal,
    #[error("'azure_account' is required for the azure destination (or set 'azure_emulator' for Azurite)")]
    NoAzureAccount,
    #[error("set only one of 'azure_access_key' and 'azure_sas_token'")]
    TwoAzureCredentials,
    #[error("signed file URLs cannot be made with 'azure_sas_token': set 'file_urls' = \"proxy\" or use 'azure_access_key'")]
    SasCannotSign,
    #[error("'s3_bucket' is required for the s3 destination")]
    NoS3Bucket,
    #[error("set both 's3_access_key_id' and 's3_secret_access_key', or neither")]
    HalfS3Credentials,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_signed_for_cloud_stores_and_proxied_for_a_directory_unless_set() {
        let mut s = OutputSettings::default();
        assert_eq!(s.url_mode(), UrlMode::Proxy);
        s.destination = Destination::Azure;
        assert_eq!(s.url_mode(), UrlMode::Signed);
        s.file_urls = UrlMode::Proxy;
        assert_eq!(s.url_mode(), UrlMode::Proxy);
    }

    #[test]
    fn secrets_never_print() {
        let s = OutputSettings { azure_access_key: Secret::new("hunter2"), ..Default::default() };
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2") && text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn incomplete_destinations_name_the_missing_key() {
        let azure = OutputSettings { destination: Destination::Azure, ..Default::default() };
        assert!(azure.validate().unwrap_err().to_string().contains("azure_account"));
        let s3 = OutputSettings { destination: Destination::S3, s3_bucket: "b".into(), s3_access_key_id: "id".into(), ..Default::default() };
        assert!(s3.validate().unwrap_err().to_string().contains("s3_secret_access_key"));
        let local = OutputSettings { file_urls: UrlMode::Signed, ..Default::default() };
        assert!(local.validate().unwrap_err().to_string().contains("file_urls"));
    }
}
