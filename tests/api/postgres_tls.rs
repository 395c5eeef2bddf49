//! TLS: Postgres over TLS (`sslmode`, `sslrootcert` in the URL) against a throwaway cluster the
//! test starts itself (TLS only, on a free port; the shared cluster is left alone), and `serve`
//! on a host without a CA store.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bulkfhir::store::Stores;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::helpers::{spawn_app_in, AppOptions, TestDb};

/// A Postgres cluster in a temporary directory that accepts only TLS connections (`hostssl`,
/// trust), with a server certificate for `localhost` only, issued by a CA of its own.
struct TlsCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsCluster {
    fn start() -> Self {
        let bin = PathBuf::from(std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
        assert!(bin.join("initdb").exists(), "the TLS tests need Postgres's binaries in {} (or PG_BIN)", bin.display());
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let data = dir.path().join("data");

        let ca = CertifiedIssuer::self_signed(ca_params("bulkfhir test CA"), KeyPair::generate().unwrap()).unwrap();
        let other_ca = CertifiedIssuer::self_signed(ca_params("another CA"), KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&server_key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.crt"), other_ca.pem()).unwrap();

        // The cluster belongs to `postgres`: it refuses to run as root.
        run(Command::new("chown").arg("postgres:").arg(dir.path()));
        as_postgres(&bin, "initdb", |c| c.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "--no-sync"]));
        std::fs::write(data.join("server.crt"), server.pem()).unwrap();
        std::fs::write(data.join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n")
            .unwrap();
        run(Command::new("chown").arg("postgres:").arg(data.join("server.crt")).arg(data.join("server.key")).arg(data.join("pg_hba.conf")));
        run(Command::new("chmod").arg("600").arg(data.join("server.key")));

        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c ssl=on \
             -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off",
            data.display()
        );
        as_postgres(&bin, "pg_ctl", |c| {
            c.arg("-D").arg(&data).arg("-l").arg(dir.path().join("postgres.log")).args(["-w", "-t", "30", "-o", &options, "start"])
        });
        Self { dir, port }
    }

    /// A URL of database `bulkfhir` on this cluster.
    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/bulkfhir?{query}", self.port)
    }

    fn ca(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let bin = PathBuf::from(std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

fn as_postgres(bin: &Path, program: &str, args: impl FnOnce(&mut Command) -> &mut Command) {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(bin.join(program));
    run(args(&mut command));
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
}

async fn refusal(url: &str) -> String {
    match Stores::connect(url, 1).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn postgres_over_tls_connects_verifies_and_refuses() {
    let cluster = TlsCluster::start();
    let (ca, other_ca) = (cluster.ca("ca.crt"), cluster.ca("other-ca.crt"));

    // require: encrypted, certificate not checked. The CLI migrates; the server exports on it.
    let require = cluster.url("127.0.0.1", "sslmode=require");
    let migrate = Command::new(env!("CARGO_BIN_EXE_bulkfhir")).args(["migrate", "--database-url", &require]).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let app = spawn_app_in(TestDb::given(&require), AppOptions::default()).await;
    assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "over-tls"})).await.status(), 201);
    let status_url = app.kick_off("/Patient/$export").await;
    let manifest = app.wait_for_manifest(&status_url).await;
    let files = app.download_all(&manifest).await;
    assert_eq!(files["Patient"][0]["id"], "over-tls");
    drop(app);

    // verify-full with the right CA and the certificate's host name; verify-ca checks the CA only.
    Stores::connect(&cluster.url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")), 1).await.expect("verify-full with the right CA");
    Stores::connect(&cluster.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")), 1).await.expect("verify-ca with the right CA");

    let wrong_ca = refusal(&cluster.url("localhost", &format!("sslmode=verify-full&sslrootcert={other_ca}"))).await;
    assert!(wrong_ca.contains("not signed by a CA in sslrootcert"), "{wrong_ca}");
    let wrong_host = refusal(&cluster.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).await;
    assert!(wrong_host.contains("not valid for the host '127.0.0.1'"), "{wrong_host}");

    // disable against a TLS-only server: refused by the server, and said once.
    let disable = Command::new(env!("CARGO_BIN_EXE_bulkfhir"))
        .args(["migrate", "--database-url", &cluster.url("127.0.0.1", "sslmode=disable")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&disable.stderr);
    assert!(!disable.status.success());
    assert_eq!(stderr.matches("no encryption").count(), 1, "{stderr}");
}

/// `serve` with an empty CA store (`SSL_CERT_FILE`, `SSL_CERT_DIR`), as in an image without
/// ca-certificates: it starts and answers, for a local directory and for an HTTPS S3 endpoint
/// (whose client is built at start-up).
#[tokio::test]
async fn serve_starts_without_a_system_ca_store() {
    let s3 = [
        ("BULKFHIR_DESTINATION", "s3"),
        ("BULKFHIR_S3_BUCKET", "exports"),
        ("BULKFHIR_S3_REGION", "eu-west-1"),
        ("BULKFHIR_S3_ENDPOINT", "https://s3.example.invalid"),
        ("BULKFHIR_S3_ACCESS_KEY_ID", "id"),
        ("BULKFHIR_S3_SECRET_ACCESS_KEY", "secret"),
    ];
    for destination in [&[][..], &s3[..]] {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty-ca-dir");
        std::fs::create_dir(&empty).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut serve = Command::new(env!("CARGO_BIN_EXE_bulkfhir"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.path().join("bulkfhir.db").display()))
            .arg("--output-dir")
            .arg(dir.path().join("exports"))
            .env("SSL_CERT_FILE", dir.path().join("nonexistent"))
            .env("SSL_CERT_DIR", &empty)
            .envs(destination.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let answered = loop {
            if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/fhir/metadata")).send().await {
                break response.status();
            }
            if let Some(status) = serve.try_wait().unwrap() {
                let stderr = std::io::read_to_string(serve.stderr.take().unwrap()).unwrap();
                panic!("serve exited ({status}) with {destination:?}: {stderr}");
            }
            assert!(Instant::now() < deadline, "serve did not answer in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        serve.kill().unwrap();
        serve.wait().unwrap();
        assert_eq!(answered, 200, "with {destination:?}");
    }
}
