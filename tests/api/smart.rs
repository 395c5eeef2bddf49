//! Test side of SMART Backend Services: client keys (test-only PEMs in tests/fixtures/auth),
//! signed client assertions, and a server with registered clients.

use std::path::PathBuf;

use bulkfhir::auth::settings::{AuthSettings, ClientSettings};
use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use reqwest::{header, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, AppOptions, Backend, TestApp};

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's signing key and its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name)).unwrap()
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        Self::new(Algorithm::RS384, kid, EncodingKey::from_rsa_pem(&pem("rsa-384.pem")).unwrap())
    }

    pub fn ec(kid: &str) -> Self {
        Self::new(Algorithm::ES384, kid, EncodingKey::from_ec_pem(&pem("ec-384.pem")).unwrap())
    }

    /// A different P-384 key: a wrong key when it claims another key's kid.
    pub fn other_ec(kid: &str) -> Self {
        Self::new(Algorithm::ES384, kid, EncodingKey::from_ec_pem(&pem("ec-384-other.pem")).unwrap())
    }

    fn new(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self { alg, kid: kid.to_owned(), encoding, jwk: serde_json::to_value(jwk).unwrap() }
    }

    pub fn jwks(keys: &[&TestKey]) -> String {
        json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
    }

    /// Signs claims with this key, `kid` in the header, and optional extra header fields.
    pub fn sign_with(&self, claims: &Value, jku: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.jku = jku.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(claims, None)
    }

    /// Signs without a `kid` in the header, as Medplum's CLI does.
    pub fn sign_without_kid(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.encoding).unwrap()
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Good assertion claims for a client: four minutes to live, a fresh jti.
pub fn claims(app: &TestApp, client_id: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url(app),
        "exp": now() + 240,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

pub fn token_url(app: &TestApp) -> String {
    app.url("/auth/token")
}

pub fn client(client_id: &str, keys: &[&TestKey], scopes: &[&str]) -> ClientSettings {
    ClientSettings {
        client_id: client_id.to_owned(),
        jwks: Some(TestKey::jwks(keys)),
        jwks_url: None,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// A server with these clients registered from its configuration, so authorization is on.
pub async fn spawn_secured(backend: Backend, clients: Vec<ClientSettings>, tweak: impl FnOnce(&mut AppOptions)) -> TestApp {
    let mut options = AppOptions { auth: AuthSettings { clients, ..AuthSettings::default() }, ..Default::default() };
    tweak(&mut options);
    spawn_app_with(backend, options).await
}

/// POSTs a token request with this assertion and scope.
pub async fn request_token(app: &TestApp, assertion: &str, scope: &str) -> Response {
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ];
    post_form(app, &form).await
}

pub async fn post_form(app: &TestApp, form: &[(&str, &str)]) -> Response {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    app.client
        .post(token_url(app))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// An access token for the client, asserting the grant succeeded.
pub async fn access_token(app: &TestApp, key: &TestKey, client_id: &str, scope: &str) -> String {
    let response = request_token(app, &key.sign(&claims(app, client_id)), scope).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Asserts an RFC 6749 error response.
pub async fn assert_token_error(response: Response, status: StatusCode, error: &str, needle: &str) {
    let got = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!((got, body["error"].as_str().unwrap_or_default()), (status, error), "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(needle), "error_description '{description}' should mention '{needle}'");
}

/// A GET kick-off with a bearer token.
pub async fn kick_off_as(app: &TestApp, token: &str, path_and_query: &str) -> Response {
    app.client
        .get(app.url(path_and_query))
        .bearer_auth(token)
        .header(header::ACCEPT, "application/fhir+json")
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap()
}

/// Kicks off and polls to the manifest with a bearer token.
pub async fn export_as(app: &TestApp, token: &str, path_and_query: &str) -> (String, Value) {
    let response = kick_off_as(app, token, path_and_query).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap());
    let status_url = response.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let response = app.client.get(&status_url).bearer_auth(token).send().await.unwrap();
        match response.status() {
            StatusCode::OK => return (status_url, response.json().await.unwrap()),
            StatusCode::ACCEPTED => {}
            other => panic!("status {other}: {}", response.text().await.unwrap()),
        }
        assert!(std::time::Instant::now() < deadline, "export did not finish in time");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Asserts a 401 that challenges for a bearer token.
pub fn assert_challenged(response: &Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{}", response.url());
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).expect("a 401 carries WWW-Authenticate");
    assert!(challenge.to_str().unwrap().starts_with("Bearer"), "{challenge:?}");
}
