//! A real S3 emulator per test: moto's server (PyPI `moto[server]`, pinned in tools/moto),
//! on a free loopback port, stopped when dropped. A missing moto fails the test with the
//! command that installs it.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bulkfhir::output::{Destination, OutputSettings, Secret};
use futures::TryStreamExt;
use object_store::{aws::AmazonS3Builder, path::Path, ObjectStore};

pub const BUCKET: &str = "exports";

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto and creates the bucket.
    pub async fn start() -> Self {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/moto/.venv/bin/moto_server");
        assert!(
            bin.exists(),
            "moto is not installed at {}: run `python3 -m venv tools/moto/.venv && tools/moto/.venv/bin/pip install -r tools/moto/requirements.txt` (scripts/test.sh does it)",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto");
        // moto prints the address it bound on stderr; the rest is drained so it never blocks.
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.rsplit_once("http://127.0.0.1:").and_then(|(_, p)| p.trim().parse::<u16>().ok()) {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("moto did not report its port within 60 s")
        });
        let moto = Self { child, port };
        let created = reqwest::Client::new().put(format!("{}/{BUCKET}", moto.endpoint())).send().await.unwrap();
        assert!(created.status().is_success(), "create the bucket: {}", created.status());
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn settings(&self) -> OutputSettings {
        OutputSettings {
            destination: Destination::S3,
            s3_bucket: BUCKET.into(),
            s3_region: "us-east-1".into(),
            s3_endpoint: self.endpoint(),
            s3_access_key_id: "testing".into(),
            s3_secret_access_key: Secret::new("testing"),
            storage_timeout_seconds: 10,
            storage_retry_seconds: 10,
            ..Default::default()
        }
    }

    /// The object keys under a prefix, read with the test's own client.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let objects: Vec<_> = store.list(Some(&Path::from(prefix))).try_collect().await.unwrap();
        objects.into_iter().map(|m| m.location.to_string()).collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
