//! A real Azurite (the Azure Storage emulator, pinned in tools/azurite) per test: started on a
//! free loopback port, in memory or in a directory that survives a restart, and stopped when
//! dropped. A missing Azurite fails the test with the command that installs it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bulkfhir::output::{Destination, OutputSettings};
use futures::TryStreamExt;
use object_store::{azure::MicrosoftAzureBuilder, ObjectStore};

pub struct Azurite {
    child: Child,
    pub port: u16,
    location: Option<PathBuf>,
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/azurite/node_modules/.bin/azurite-blob")
}

impl Azurite {
    /// In-memory storage.
    pub fn start() -> Self {
        Self::spawn(0, None)
    }

    /// Storage in `dir`, kept across `stop` and `restart`.
    pub fn start_in(dir: &Path) -> Self {
        Self::spawn(0, Some(dir.to_owned()))
    }

    fn spawn(port: u16, location: Option<PathBuf>) -> Self {
        let bin = binary();
        assert!(
            bin.exists(),
            "Azurite is not installed at {}: run `npm ci --prefix tools/azurite` (scripts/test.sh does it)",
            bin.display()
        );
        let mut command = Command::new(&bin);
        command.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--skipApiVersionCheck", "--loose", "--silent"]);
        match &location {
            Some(dir) => command.arg("--location").arg(dir),
            None => command.arg("--inMemoryPersistence"),
        };
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start Azurite");
        // Azurite prints the port it bound; the rest of its output is drained so it never blocks.
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.rsplit_once("http://127.0.0.1:").and_then(|(_, p)| p.trim().parse::<u16>().ok()) {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("Azurite did not report its port within 60 s")
        });
        Self { child, port, location }
    }

    /// Stops Azurite (SIGTERM: it saves its state, as a service restart would).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with the same storage directory.
    pub fn restart(&mut self) {
        *self = Self::spawn(self.port, self.location.clone());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }

    /// Output settings for this Azurite; short request timeouts, and retries for a minute.
    pub fn settings(&self) -> OutputSettings {
        OutputSettings {
            destination: Destination::Azure,
            azure_emulator: true,
            azure_endpoint: self.endpoint(),
            storage_timeout_seconds: 10,
            storage_max_retries: 1000,
            storage_retry_seconds: 60,
            ..Default::default()
        }
    }

    /// The blob names in a container, read with the test's own client (a missing container
    /// is an error).
    pub async fn blobs(&self, container: &str) -> object_store::Result<Vec<String>> {
        let store = MicrosoftAzureBuilder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_account("devstoreaccount1")
            .with_access_key(bulkfhir::output::settings::AZURITE_KEY)
            .with_container_name(container)
            .build()?;
        let blobs: Vec<_> = store.list(None).try_collect().await?;
        Ok(blobs.into_iter().map(|m| m.location.to_string()).collect())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
