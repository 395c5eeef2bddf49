//! One build path for `main` and the tests: bind, connect, start workers and the janitor, serve.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, AppState},
    auth::Auth,
    config::Settings,
    export::{
        deid::{seal::ConfigKey, Configurations},
        janitor,
        status_cache::StatusCache,
        worker::Worker,
        Exports,
    },
    output::{ConfigStore, Output},
    store::Stores,
};

pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    base_url: String,
    state: AppState,
    stores: Stores,
    output: Output,
    config_key: Arc<ConfigKey>,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
    limits: api::Limits,
    header_read_timeout: Duration,
}

impl Application {
    /// Binds the listener (port 0 picks a free one), connects the store (applying migrations),
    /// and starts the worker pool and the janitor.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let address = listener.local_addr()?;
        let base_url = settings.public_base_url(address);
        let acquire_timeout = Duration::from_millis(settings.database_acquire_timeout_millis);
        let stores = Stores::connect_with(&settings.database_url, settings.database_pool_size, acquire_timeout)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
        let output = Output::from_settings(&settings.output, &settings.output_dir, settings.part_size_bytes)?;
        let worker_settings = settings.worker_settings();
        // A running job's progress changes at each heartbeat: answers that old tell no less.
        let status = Arc::new(StatusCache::new(worker_settings.heartbeat));
        let exports = Exports::new(
            stores.clone(),
            output.clone(),
            Duration::from_secs(settings.retention_seconds),
            settings.max_file_bytes,
            status.clone(),
        );
        let config_key = Arc::new(ConfigKey::load_or_create(&settings.anonymization_key_file)?);
        let configurations = Configurations { store: ConfigStore::new(output.clone(), settings.anonymization_dir.clone()), key: config_key.clone() };
        let exports = exports.with_configurations(configurations);
        let auth = Auth::start(stores.auth.clone(), &settings.auth, &base_url).await?;
        let shutdown = CancellationToken::new();
        let mut background = Worker::spawn_pool(stores.clone(), output.clone(), worker_settings, status, config_key.clone(), shutdown.clone());
        background.push(janitor::spawn(
            stores.clone(),
            output.clone(),
            Duration::from_secs(settings.sweep_seconds),
            settings.max_attempts,
            shutdown.clone(),
        ));
        let state = AppState {
            exports,
            stores: stores.clone(),
            base_url: base_url.clone(),
            auth,
            kickoff_headers: settings.kickoff_headers,
            output: output.clone(),
            validation: settings.validation,
        };
        let limits = api::Limits {
            max_body_bytes: settings.max_body_bytes,
            request_timeout: Duration::from_secs(settings.request_timeout_seconds),
            concurrent_large_bodies: settings.concurrent_large_bodies,
        };
        let header_read_timeout = Duration::from_secs(settings.header_read_timeout_seconds);
        // Installed before the first request, so the first scrape already lists what it can.
        crate::telemetry::metrics();
        Ok(Self { listener, address, base_url, state, stores, output, config_key, shutdown, background, limits, header_read_timeout })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The key that opens de-identified jobs' configurations (a test's own workers need it).
    pub fn config_key(&self) -> Arc<ConfigKey> {
        self.config_key.clone()
    }

    /// A token that stops the server, its workers and the janitor.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then waits for workers to stop.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(address = %self.address, base_url = %self.base_url, "bulkfhir serving");
        let app = api::app(self.state, self.limits);
        serve(self.listener, app, self.header_read_timeout, self.shutdown.clone()).await;
        self.shutdown.cancel();
        for handle in self.background {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a background task ended abnormally");
            }
        }
        Ok(())
    }
}

/// Accepts connections until shutdown, then waits for those open to finish their requests.
/// Our own loop rather than `axum::serve`, which cannot bound the time to send headers: a
/// client sending half its headers would hold a connection (and its task) for minutes.
async fn serve(listener: TcpListener, app: api::App, header_read_timeout: Duration, shutdown: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}
