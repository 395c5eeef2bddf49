//! One build path for `main` and the tests: bind, connect, start workers and the janitor, serve.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, AppState},
    auth::Auth,
    config::Settings,
    export::{janitor, status_cache::StatusCache, worker::Worker, Exports},
    output::Output,
    store::Stores,
};

pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    base_url: String,
    state: AppState,
    stores: Stores,
    output: Output,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
    limits: api::Limits,
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
        let stores = Stores::connect(&settings.database_url, settings.database_pool_size)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
        let output = Output::from_settings(&settings.output, &settings.output_dir, settings.part_size_bytes)?;
        let worker_settings = settings.worker_settings();
        // A running job's progress changes at each heartbeat: answers that old tell no less.
        let status = Arc::new(StatusCache::new(worker_settings.heartbeat));
        let exports = Exports::new(
            stores.clone(),
            output.clone(),
            Duration::from_secs(settings.retention),
            settings.max_file_bytes,
            status.clone(),
        );
        let auth = Auth::start(stores.auth.clone(), &settings.auth, &base_url).await?;
        let shutdown = CancellationToken::new();
        let mut background = Worker::spawn_pool(stores.clone(), output.clone(), worker_settings, status, shutdown.clone());
        background.push(janitor::spawn(
            stores.clone(),
            output.clone(),
            Duration::from_secs(settings.sweep_seconds),
            settings.max_attempts,
            shutdown.clone(),
        ));
        let state = AppState { exports, stores: stores.clone(), base_url: base_url.clone(), auth, validation: settings.validation };
        let limits = api::Limits { max_body_bytes: settings.max_body_bytes, request_timeout: Duration::from_secs(settings.request_timeout_seconds) };
        Ok(Self { listener, address, base_url, state, stores, output, shutdown, background, limits })
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

    /// A token that stops the server, its workers and the janitor.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then waits for workers to stop.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(address = %self.address, base_url = %self.base_url, "bulkfhir serving");
        let app = api::app(self.state, self.limits);
        let shutdown = self.shutdown.clone();
        let service = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
        let served = axum::serve(self.listener, service).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        self.shutdown.cancel();
        for handle in self.background {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a background task ended abnormally");
            }
        }
        served
    }
}
