//! Counts storage requests that failed the way object_store retries them (connection errors,
//! timeouts, 5xx, 408, 429). object_store retries inside its client, out of our sight; wrapping
//! the HTTP client it is given is the one place each attempt passes.

use async_trait::async_trait;
use object_store::{
    client::{HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector},
    ClientOptions,
};

use crate::telemetry::names;

/// An `HttpConnector` whose clients count retried failures under `destination` (azure, s3).
#[derive(Debug)]
pub struct Metered {
    inner: Box<dyn HttpConnector>,
    destination: &'static str,
}

impl Metered {
    pub fn new(destination: &'static str) -> Self {
        Self { inner: Box::new(ReqwestConnector::default()), destination }
    }
}

impl HttpConnector for Metered {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = self.inner.connect(options)?;
        Ok(HttpClient::new(MeteredService { inner, destination: self.destination }))
    }
}

#[derive(Debug)]
struct MeteredService {
    inner: HttpClient,
    destination: &'static str,
}

#[async_trait]
impl HttpService for MeteredService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let result = self.inner.execute(request).await;
        if retryable(&result) {
            metrics::counter!(names::STORAGE_RETRIES, "destination" => self.destination).increment(1);
        }
        result
    }
}

/// As object_store's `RetryConfig` decides: these are tried again (until the retry bounds end).
fn retryable(result: &Result<HttpResponse, HttpError>) -> bool {
    match result {
        Ok(response) => {
            let status = response.status();
            status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS || status == http::StatusCode::REQUEST_TIMEOUT
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use object_store::{path::Path, ObjectStoreExt, RetryConfig};

    use super::*;

    /// A storage endpoint that answers every request 503, over a real socket.
    async fn failing_endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(|| async { http::StatusCode::SERVICE_UNAVAILABLE });
            drop(axum::serve(listener, app).await);
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn each_retried_failure_is_counted() {
        let endpoint = failing_endpoint().await;
        let retry = RetryConfig { max_retries: 2, retry_timeout: std::time::Duration::from_secs(10), backoff: Default::default() };
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(retry)
            .with_http_connector(Metered::new("test-s3"))
            .build()
            .unwrap();
        let handle = crate::telemetry::metrics();
        assert!(store.put(&Path::from("x"), "y".into()).await.is_err());
        let text = handle.render();
        let line = text.lines().find(|l| l.starts_with("bulkfhir_storage_retries_total{destination=\"test-s3\"}")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(" 3"), "the first try and two retries: {line}");
    }
}
