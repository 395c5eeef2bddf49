//! Azure Blob Storage: one object_store handle per container (object_store binds a handle to
//! one container), and the two container calls object_store lacks (create, delete), signed with
//! the same credential through object_store's `AzureAuthorizer`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{Method, StatusCode};
use object_store::{
    azure::{AzureAuthorizer, MicrosoftAzure, MicrosoftAzureBuilder},
    client::{HttpClient, HttpConnector, HttpRequestBody},
    ClientOptions, RetryConfig,
};

use super::{
    error::{plain_reason, OutputError},
    settings::{OutputSettings, AZURITE_ACCOUNT, AZURITE_KEY},
};

pub struct Azure {
    account: String,
    /// The blob service URL, without a trailing slash.
    service: String,
    builder: MicrosoftAzureBuilder,
    http: HttpClient,
    retry: RetryConfig,
    stores: Mutex<HashMap<String, Arc<MicrosoftAzure>>>,
    /// Containers this process created or found, so each is checked once.
    known: tokio::sync::Mutex<HashSet<String>>,
}

impl Azure {
    pub fn new(settings: &OutputSettings) -> Result<Self, OutputError> {
        let config = |e: object_store::Error| OutputError::Config(format!("azure: {}", plain_reason(&e)));
        let emulator = settings.azure_emulator;
        let account = match (settings.azure_account.as_str(), emulator) {
            ("", true) => AZURITE_ACCOUNT.to_owned(),
            (account, _) => account.to_owned(),
        };
        let service = match (settings.azure_endpoint.as_str(), emulator) {
            ("", true) => format!("http://127.0.0.1:10000/{account}"),
            ("", false) => format!("https://{account}.blob.core.windows.net"),
            (endpoint, _) => endpoint.trim_end_matches('/').to_owned(),
        };
        let options = crate::https::object_store_trust(ClientOptions::new()).with_timeout(settings.request_timeout());
        // from_env picks up the default credential chain (AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE,
        // managed identity, ...) when neither a key nor a SAS token is configured.
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&account)
            .with_endpoint(service.clone())
            .with_client_options(options.clone())
            .with_allow_http(service.starts_with("http://"))
            .with_retry(settings.retry())
            .with_http_connector(super::metered::Metered::new("azure"));
        if settings.azure_access_key.is_set() {
            builder = builder.with_access_key(settings.azure_access_key.expose());
        } else if settings.azure_sas_token.is_set() {
            let pairs = object_store::azure::split_sas(settings.azure_sas_token.expose().trim_start_matches('?'))
                .map_err(|_| OutputError::Config("'azure_sas_token' is not a SAS query string".into()))?;
            builder = builder.with_sas_authorization(pairs);
        } else if emulator {
            builder = builder.with_access_key(AZURITE_KEY);
        }
        let options = options.with_allow_http(service.starts_with("http://"));
        let http = super::metered::Metered::new("azure").connect(&options).map_err(config)?;
        let azure = Self {
            account,
            service,
            builder,
            http,
            retry: settings.retry(),
            stores: Mutex::default(),
            known: tokio::sync::Mutex::default(),
        };
        // Fails now, not at the first export, when the settings cannot make a handle.
        azure.builder.clone().with_container_name("check").build().map_err(config)?;
        Ok(azure)
    }

    /// "Azure Blob Storage account 'x'", for error messages.
    pub fn describe(&self, container: &str) -> String {
        format!("Azure Blob Storage account '{}' container '{container}'", self.account)
    }

    pub fn store(&self, container: &str) -> Result<Arc<MicrosoftAzure>, OutputError> {
        let mut stores = self.stores.lock().expect("the store cache lock is never poisoned");
        if let Some(store) = stores.get(container) {
            return Ok(store.clone());
        }
        let store = self
            .builder
            .clone()
            .with_container_name(container)
            .build()
            .map_err(|e| OutputError::Config(format!("{}: {}", self.describe(container), plain_reason(&e))))?;
        let store = Arc::new(store);
        stores.insert(container.to_owned(), store.clone());
        Ok(store)
    }

    /// Creates the container unless this process already saw it.
    pub async fn ensure_container(&self, container: &str) -> Result<(), OutputError> {
        let mut known = self.known.lock().await;
        if known.contains(container) {
            return Ok(());
        }
        let status = self.container_call(container, Method::PUT, "creating the container").await?;
        if !(status.is_success() || status == StatusCode::CONFLICT) {
            return Err(self.failed(container, "creating the container", format!("the storage service answered {status}")));
        }
        known.insert(container.to_owned());
        Ok(())
    }

    /// Deletes a whole container (one created for a single job). A missing one is no error.
    pub async fn delete_container(&self, container: &str) -> Result<(), OutputError> {
        let status = self.container_call(container, Method::DELETE, "deleting the container").await?;
        tracing::debug!(%status, container, "delete container");
        if !(status.is_success() || status == StatusCode::NOT_FOUND) {
            return Err(self.failed(container, "deleting the container", format!("the storage service answered {status}")));
        }
        self.known.lock().await.remove(container);
        self.stores.lock().expect("the store cache lock is never poisoned").remove(container);
        Ok(())
    }

    /// One container request, retried like object_store's own requests: connection failures,
    /// timeouts, 5xx, 408 and 429, with exponential backoff and jitter, within the retry bounds.
    async fn container_call(&self, container: &str, method: Method, action: &str) -> Result<StatusCode, OutputError> {
        let credential = self
            .store(container)?
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.failed(container, action, format!("no credential: {}", plain_reason(&e))))?;
        let url = format!("{}/{container}?restype=container", self.service);
        let started = Instant::now();
        let mut backoff = self.retry.backoff.init_backoff;
        let mut attempt = 0;
        loop {
            let mut request = http::Request::builder()
                .method(method.clone())
                .uri(&url)
                .header(http::header::CONTENT_LENGTH, "0")
                .body(HttpRequestBody::empty())
                .map_err(|e| self.failed(container, action, e.to_string()))?;
            AzureAuthorizer::new(&credential, &self.account)
                .try_authorize(&mut request)
                .map_err(|e| self.failed(container, action, plain_reason(&e)))?;
            let outcome = self.http.execute(request).await;
            let retryable = match &outcome {
                Ok(response) => {
                    let status = response.status();
                    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
                }
                Err(_) => true,
            };
            let exhausted = attempt >= self.retry.max_retries || started.elapsed() > self.retry.retry_timeout;
            if !retryable || exhausted {
                let retries = if attempt > 0 { format!(" (after {attempt} retries)") } else { String::new() };
                return match outcome {
                    Ok(response) => Ok(response.status()),
                    Err(e) => Err(self.failed(container, action, format!("{}{retries}", plain_reason(&e)))),
                };
            }
            attempt += 1;
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff.mul_f64(self.retry.backoff.base)).min(self.retry.backoff.max_backoff);
        }
    }

    fn failed(&self, container: &str, action: &str, reason: String) -> OutputError {
        OutputError::Storage { destination: self.describe(container), action: action.to_owned(), reason }
    }
}

/// A random share (50-100%) of the backoff, so that many workers do not retry in step.
fn jitter(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    backoff.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure").field("account", &self.account).field("service", &self.service).finish_non_exhaustive()
    }
}
