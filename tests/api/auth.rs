//! SMART Backend Services: real RS384 and ES384 client assertions, the token endpoint, and what
//! an access token lets a client do, and not do.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};

use crate::{
    helpers::{assert_outcome, backend_tests, spawn_app},
    smart::{
        access_token, assert_challenged, assert_token_error, claims, client, export_as, kick_off_as, now, post_form, request_token,
        spawn_secured, token_url, TestKey, ASSERTION_TYPE,
    },
};

/// base64url without padding, to hand-craft tokens no library would sign (`alg: none`).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

backend_tests! {
    async fn an_authorized_export_runs_from_token_to_download(backend: Backend) {
        let key = TestKey::rsa("rsa-1");
        let app = spawn_secured(backend, vec![client("analytics", &[&key], &["system/*.read"])], |_| {}).await;
        app.load_synthea().await;

        // Discovery: under the FHIR base, at the host root, and in the CapabilityStatement.
        let root = app.base_url.trim_end_matches("/fhir");
        for url in [app.url("/.well-known/smart-configuration"), format!("{root}/.well-known/smart-configuration")] {
            let config: Value = app.client.get(&url).send().await.unwrap().json().await.unwrap();
            assert_eq!(config["token_endpoint"], token_url(&app), "{url}");
            assert!(config["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap().contains(&json!("RS384")));
            assert!(config["capabilities"].as_array().unwrap().contains(&json!("client-confidential-asymmetric")));
        }
        let metadata: Value = app.client.get(app.url("/metadata")).send().await.unwrap().json().await.unwrap();
        let oauth = &metadata["rest"][0]["security"]["extension"][0];
        assert!(oauth["url"].as_str().unwrap().ends_with("oauth-uris"));
        assert_eq!(oauth["extension"][0]["valueUri"], token_url(&app));

        // Without a token: 401 with a challenge.
        assert_challenged(&app.kick_off_raw("/$export").await);

        let response = request_token(&app, &key.sign(&claims(&app, "analytics")), "system/Patient.read system/Observation.rs").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let grant: Value = response.json().await.unwrap();
        assert_eq!(grant["token_type"], "bearer");
        assert_eq!(grant["expires_in"], 300);
        assert_eq!(grant["scope"], "system/Patient.read system/Observation.rs");
        let token = grant["access_token"].as_str().unwrap();

        let (status_url, manifest) = export_as(&app, token, "/$export").await;
        let types: Vec<&str> = manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["Observation", "Patient"], "all types narrowed to the token's scopes");
        assert_eq!(manifest["requiresAccessToken"], true);

        let file_url = manifest["output"][1]["url"].as_str().unwrap();
        assert_challenged(&app.client.get(&status_url).send().await.unwrap());
        assert_challenged(&app.client.get(file_url).send().await.unwrap());
        assert_challenged(&app.client.get(file_url).bearer_auth("not-a-token").send().await.unwrap());
        let download = app.client.get(file_url).bearer_auth(token).send().await.unwrap();
        assert_eq!(download.status(), StatusCode::OK);
        assert_eq!(download.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(download.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let lines = download.text().await.unwrap();
        assert_eq!(lines.lines().count() as u64, manifest["output"][1]["count"].as_u64().unwrap());
        assert!(lines.lines().all(|l| l.contains(r#""resourceType":"Patient""#)));

        assert_challenged(&app.client.delete(&status_url).send().await.unwrap());
        assert_eq!(app.client.delete(&status_url).bearer_auth(token).send().await.unwrap().status(), StatusCode::ACCEPTED);
        assert_eq!(app.client.get(&status_url).bearer_auth(token).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    }

    async fn the_token_endpoint_refuses_every_bad_assertion(backend: Backend) {
        let key = TestKey::ec("ec-1");
        let app = spawn_secured(backend, vec![client("app", &[&key], &["system/*.rs"])], |_| {}).await;
        let scope = "system/*.rs";
        let good = || claims(&app, "app");
        let with = |field: &str, value: Value| {
            let mut c = good();
            c[field] = value;
            c
        };
        use StatusCode as S;
        let cases: Vec<(&str, String, &str)> = vec![
            ("expired", key.sign(&with("exp", json!(now() - 120))), "expired"),
            ("exp too far ahead", key.sign(&with("exp", json!(now() + 600))), "five minutes"),
            ("wrong aud", key.sign(&with("aud", json!(app.url("/metadata")))), "aud"),
            ("unknown iss", key.sign(&{ let mut c = with("iss", json!("stranger")); c["sub"] = json!("stranger"); c }), "unknown client"),
            ("iss differs from sub", key.sign(&with("sub", json!("someone-else"))), "iss and sub"),
            ("no jti", key.sign(&{ let mut c = good(); c.as_object_mut().unwrap().remove("jti"); c }), "jti"),
            ("wrong key", TestKey::other_ec("ec-1").sign(&good()), "signature"),
            ("unknown kid", TestKey::ec("ec-2").sign(&good()), "kid 'ec-2'"),
            ("RS384 against an EC key", { let rsa = TestKey::rsa("ec-1"); rsa.sign(&good()) }, "RS384 key"),
            ("jku not registered", key.sign_with(&good(), Some("https://evil.example/jwks.json")), "jku"),
            ("HS256", jsonwebtoken::encode(&{ let mut h = Header::new(Algorithm::HS256); h.kid = Some("ec-1".into()); h }, &good(), &EncodingKey::from_secret(b"secret")).unwrap(), "HS256"),
            ("alg none", format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT","kid":"ec-1"}"#), b64url(good().to_string().as_bytes())), "alg none"),
            ("not a JWT", "garbage".to_owned(), "not a signed JWT"),
        ];
        for (what, assertion, needle) in cases {
            let response = request_token(&app, &assertion, scope).await;
            assert_eq!(response.status(), S::UNAUTHORIZED, "{what}");
            assert_token_error(response, S::UNAUTHORIZED, "invalid_client", needle).await;
        }

        // A replayed jti: the first use succeeds, the second is refused.
        let once = key.sign(&good());
        assert_eq!(request_token(&app, &once, scope).await.status(), S::OK);
        assert_token_error(request_token(&app, &once, scope).await, S::UNAUTHORIZED, "invalid_client", "already used").await;

        // Form-level errors are 400s.
        let assertion = key.sign(&good());
        let form = |grant: &'static str, kind: &'static str| vec![("grant_type", grant), ("client_assertion_type", kind), ("scope", scope)];
        let mut f = form("password", ASSERTION_TYPE);
        f.push(("client_assertion", &assertion));
        assert_token_error(post_form(&app, &f).await, S::BAD_REQUEST, "unsupported_grant_type", "password").await;
        let mut f = form("client_credentials", "urn:other");
        f.push(("client_assertion", &assertion));
        assert_token_error(post_form(&app, &f).await, S::BAD_REQUEST, "invalid_request", "client_assertion_type").await;
        assert_token_error(post_form(&app, &form("client_credentials", ASSERTION_TYPE)).await, S::BAD_REQUEST, "invalid_request", "client_assertion").await;
        // Scope escalation: nothing asked for is allowed.
        let response = request_token(&app, &key.sign(&good()), "system/*.write patient/*.read").await;
        assert_token_error(response, S::BAD_REQUEST, "invalid_scope", "none of the requested scopes").await;
    }

    async fn scopes_bound_what_an_export_and_a_read_may_cover(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("narrow", &[&key], &["system/Patient.read", "system/Observation.rs"])], |_| {}).await;
        app.load_synthea().await;

        // Asking for more than allowed grants only the allowed part; asking only for more is refused.
        let response = request_token(&app, &key.sign(&claims(&app, "narrow")), "system/*.read").await;
        let grant: Value = response.json().await.unwrap();
        assert_eq!(grant["scope"], "system/Patient.read system/Observation.read");
        let response = request_token(&app, &key.sign(&claims(&app, "narrow")), "system/Condition.read").await;
        assert_token_error(response, StatusCode::BAD_REQUEST, "invalid_scope", "Condition").await;

        let token = access_token(&app, &key, "narrow", "system/Patient.read").await;
        assert_outcome(kick_off_as(&app, &token, "/$export?_type=Patient,Observation").await, StatusCode::FORBIDDEN, "Observation").await;
        assert_outcome(kick_off_as(&app, &token, "/Patient/$export?_type=Condition").await, StatusCode::FORBIDDEN, "Condition").await;
        let (_, manifest) = export_as(&app, &token, "/Patient/$export").await;
        let types: Vec<&str> = manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["Patient"]);

        // A file needs the type's scope on the token that downloads it, even the owner's.
        let observations_only = access_token(&app, &key, "narrow", "system/Observation.rs").await;
        let file = app.client.get(manifest["output"][0]["url"].as_str().unwrap()).bearer_auth(&observations_only).send().await.unwrap();
        assert_outcome(file, StatusCode::FORBIDDEN, "Patient").await;

        // FHIR REST follows the same scopes: reads of allowed types only, no writes.
        let some_patient = app.client.get(manifest["output"][0]["url"].as_str().unwrap()).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
        let id = serde_json::from_str::<Value>(some_patient.lines().next().unwrap()).unwrap()["id"].as_str().unwrap().to_owned();
        assert_eq!(app.client.get(app.url(&format!("/Patient/{id}"))).bearer_auth(&token).send().await.unwrap().status(), StatusCode::OK);
        assert_challenged(&app.client.get(app.url(&format!("/Patient/{id}"))).send().await.unwrap());
        let write = app.client.put(app.url("/Patient/new-one")).bearer_auth(&token).json(&json!({"resourceType": "Patient", "id": "new-one"})).send().await.unwrap();
        assert_outcome(write, StatusCode::FORBIDDEN, "update Patient").await;
        assert_outcome(app.client.get(app.url("/Condition/x")).bearer_auth(&token).send().await.unwrap(), StatusCode::FORBIDDEN, "read Condition").await;
    }

    async fn jobs_status_urls_and_files_belong_to_their_client(backend: Backend) {
        let (a_key, b_key) = (TestKey::ec("a"), TestKey::rsa("b"));
        let clients = vec![client("alice", &[&a_key], &["system/*.read"]), client("bob", &[&b_key], &["system/*.read"])];
        let app = spawn_secured(backend, clients, |_| {}).await;
        app.load_synthea().await;
        let alice = access_token(&app, &a_key, "alice", "system/*.read").await;
        let bob = access_token(&app, &b_key, "bob", "system/*.read").await;

        let (status_url, manifest) = export_as(&app, &alice, "/$export?_type=Patient").await;
        let file_url = manifest["output"][0]["url"].as_str().unwrap();
        assert_outcome(app.client.get(&status_url).bearer_auth(&bob).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;
        assert_outcome(app.client.get(file_url).bearer_auth(&bob).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;
        assert_outcome(app.client.delete(&status_url).bearer_auth(&bob).send().await.unwrap(), StatusCode::NOT_FOUND, "no export job").await;
        // Bob's attempts changed nothing for Alice.
        assert_eq!(app.client.get(&status_url).bearer_auth(&alice).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(app.client.get(file_url).bearer_auth(&alice).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(app.db.count("SELECT count(*) FROM export_jobs WHERE owner = 'alice'").await, 1);
    }

    async fn an_access_token_stops_working_when_it_expires(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("app", &[&key], &["system/*.read"])], |o| o.auth.token_seconds = 1).await;
        let token = access_token(&app, &key, "app", "system/*.read").await;
        let response = kick_off_as(&app, &token, "/$export").await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let response = kick_off_as(&app, &token, "/$export").await;
        assert_challenged(&response);
        assert!(response.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().contains("invalid_token"));
        assert_outcome(response, StatusCode::UNAUTHORIZED, "expired").await;
    }

    async fn a_client_is_limited_in_concurrent_exports_and_polling(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("busy", &[&key], &["system/*.*"])], |o| {
            o.workers = 0; // jobs stay queued
            o.auth.max_concurrent_exports = 1;
            o.auth.status_polls_per_second = 3;
        })
        .await;
        let token = access_token(&app, &key, "busy", "system/*.*").await;
        assert_eq!(app.put(&json!({"resourceType": "Patient", "id": "p"})).await.status(), StatusCode::UNAUTHORIZED);
        // Something to export, so that jobs stay queued (there are no workers).
        let write = app.client.put(app.url("/Patient/p")).bearer_auth(&token).json(&json!({"resourceType": "Patient", "id": "p"})).send().await.unwrap();
        assert_eq!(write.status(), StatusCode::CREATED);
        let first = kick_off_as(&app, &token, "/$export").await;
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        let status_url = first.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned();
        let second = kick_off_as(&app, &token, "/$export").await;
        assert_eq!(second.headers()[header::RETRY_AFTER], "30");
        assert_outcome(second, StatusCode::TOO_MANY_REQUESTS, "already queued or running").await;

        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(app.client.get(&status_url).bearer_auth(&token).send().await.unwrap().status());
        }
        assert_eq!(statuses[0], StatusCode::ACCEPTED);
        assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    }

    async fn with_allow_open_off_a_server_without_clients_refuses_everyone(backend: Backend) {
        let app = spawn_secured(backend, Vec::new(), |o| o.auth.allow_open = false).await;
        assert_challenged(&app.kick_off_raw("/$export").await);
        let metadata: Value = app.client.get(app.url("/metadata")).send().await.unwrap().json().await.unwrap();
        assert_eq!(metadata["rest"][0]["security"]["extension"][0]["extension"][0]["valueUri"], token_url(&app));
    }

    async fn without_clients_the_server_runs_open_and_says_so(backend: Backend) {
        let app = spawn_app(backend).await;
        let metadata: Value = app.client.get(app.url("/metadata")).send().await.unwrap().json().await.unwrap();
        assert!(metadata["rest"][0]["security"]["description"].as_str().unwrap().contains("Authorization is OFF"));
        assert_eq!(app.kick_off_raw("/$export").await.status(), StatusCode::ACCEPTED);
    }
}

/// Serves a JWKS at `http://127.0.0.1:{port}/jwks.json` with `Cache-Control: max-age=60`,
/// counting fetches.
async fn serve_jwks(jwks: String) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { ([(header::CACHE_CONTROL.as_str(), "max-age=60")], jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, hits)
}

backend_tests! {
    async fn a_client_may_publish_its_keys_at_a_jwks_url(backend: Backend) {
        let key = TestKey::rsa("published");
        let (jwks_url, hits) = serve_jwks(TestKey::jwks(&[&key])).await;
        let mut registration = client("remote", &[], &["system/*.read"]);
        (registration.jwks, registration.jwks_url) = (None, Some(jwks_url.clone()));
        let app = spawn_secured(backend, vec![registration], |_| {}).await;

        access_token(&app, &key, "remote", "system/*.read").await;
        // SMART's jku rule: the registered URL is accepted, any other refused.
        let response = request_token(&app, &key.sign_with(&claims(&app, "remote"), Some(&jwks_url)), "system/*.read").await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = request_token(&app, &key.sign_with(&claims(&app, "remote"), Some("http://127.0.0.1:9/other.json")), "system/*.read").await;
        assert_token_error(response, StatusCode::UNAUTHORIZED, "invalid_client", "jku").await;
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the JWKS is cached within its max-age");
    }

    async fn clients_are_managed_from_the_cli_and_the_first_one_turns_authorization_on(backend: Backend) {
        let app = spawn_app(backend).await;
        assert_eq!(app.kick_off_raw("/$export").await.status(), StatusCode::ACCEPTED, "open while no client exists");
        let key = TestKey::ec("cli");
        // Async, so the server on this test's runtime keeps serving while the command runs.
        let cli = async |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_bulkfhir")).args(args).env("DATABASE_URL", &app.db.url).output().await.unwrap();
            (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr))
        };
        let jwks = TestKey::jwks(&[&key]);
        let (ok, text) = cli(&["clients", "add", "from-cli", "--jwks", &jwks, "--scope", "system/*.read"]).await;
        assert!(ok, "{text}");
        let (ok, text) = cli(&["clients", "add", "bad", "--jwks-url", "http://example.org/jwks", "--scope", "system/*.read"]).await;
        assert!(!ok && text.contains("https"), "{text}");
        let (ok, text) = cli(&["clients", "add", "other", "--jwks", &jwks, "--scope", "system/Patient.rs"]).await;
        assert!(ok, "{text}");
        let (ok, text) = cli(&["clients", "list"]).await;
        assert!(ok && text.contains("from-cli") && text.contains("system/*.read") && !text.contains("bad"), "{text}");

        // Registered while the server runs: authorization is on within a second (each node
        // rechecks the registry once a second, not on every request).
        let registered = Instant::now();
        while app.kick_off_raw("/$export").await.status() != StatusCode::UNAUTHORIZED {
            assert!(registered.elapsed() < Duration::from_secs(3), "authorization still off 3 s after a client was registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_challenged(&app.kick_off_raw("/$export").await);
        let token = access_token(&app, &key, "from-cli", "system/*.read").await;
        let accepted = kick_off_as(&app, &token, "/$export").await;
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
        let status_url = accepted.headers()[header::CONTENT_LOCATION].to_str().unwrap().to_owned();

        let (ok, text) = cli(&["clients", "remove", "from-cli"]).await;
        assert!(ok, "{text}");
        assert!(!cli(&["clients", "remove", "from-cli"]).await.0, "removing twice fails");
        // Its token died with it, within a second.
        let removed = Instant::now();
        let response = loop {
            let response = app.client.get(&status_url).bearer_auth(&token).send().await.unwrap();
            if response.status() == StatusCode::UNAUTHORIZED {
                break response;
            }
            assert!(removed.elapsed() < Duration::from_secs(3), "the removed client's token still works 3 s later");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_challenged(&response);
        assert_outcome(response, StatusCode::UNAUTHORIZED, "no longer registered").await;
    }
}

/// The public half of a 1024-bit RSA key (e = 65537): too short to register.
const RSA_1024_N: &str = "wvC7i-GUWpiiRvy1iYq0bFz5ouHWY5gaULpbf8-RIkCG49g4qvdnBtzZ6ZXGZ5duBMddwIhD2DiPgSZaK1b_FSz684w3TThumhoXo3EW6k8vODYh45WRXEIb_tmFTVJ9K5Sw713YrRZKqUBPSJ_oSJlQc9T_4NFO5p64R7NY9Hk";

backend_tests! {
    async fn a_token_request_without_kid_or_scope_gets_the_registered_key_and_scopes(backend: Backend) {
        // Medplum's `login --auth-type jwt-assertion`: RS384, no kid in the header, no scope.
        let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
        let twins = (TestKey::ec("twin-a"), TestKey::ec("twin-b"));
        let clients = vec![
            client("medplum", &[&ec, &rsa], &["system/Patient.read", "system/Observation.rs"]),
            client("twins", &[&twins.0, &twins.1], &["system/*.read"]),
        ];
        let app = spawn_secured(backend, clients, |_| {}).await;
        app.load_synthea().await;
        let without_scope = |assertion: &str| {
            vec![("grant_type", "client_credentials"), ("client_assertion_type", ASSERTION_TYPE), ("client_assertion", assertion)].into_iter().map(|(k, v)| (k, v.to_owned())).collect::<Vec<_>>()
        };
        let post = async |form: Vec<(&str, String)>| {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&app, &form).await
        };

        let response = post(without_scope(&rsa.sign_without_kid(&claims(&app, "medplum")))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let grant: Value = response.json().await.unwrap();
        assert_eq!(grant["scope"], "system/Patient.read system/Observation.rs", "the registered scopes");
        let (_, manifest) = export_as(&app, grant["access_token"].as_str().unwrap(), "/$export").await;
        let types: Vec<&str> = manifest["output"].as_array().unwrap().iter().map(|o| o["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["Observation", "Patient"]);

        // A kid-less ES384 assertion finds the EC key; with a scope, the scope rules as usual.
        let response = request_token(&app, &ec.sign_without_kid(&claims(&app, "medplum")), "system/Patient.read").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap()["scope"], "system/Patient.read");

        // No registered key verifies it, or two do: refused, as with a kid.
        let response = post(without_scope(&TestKey::other_ec("x").sign_without_kid(&claims(&app, "medplum")))).await;
        assert_token_error(response, StatusCode::UNAUTHORIZED, "invalid_client", "none of the client's ES384 keys verifies").await;
        let response = post(without_scope(&twins.0.sign_without_kid(&claims(&app, "twins")))).await;
        assert_token_error(response, StatusCode::UNAUTHORIZED, "invalid_client", "several").await;
        // The kid-less path still checks the claims.
        let mut expired = claims(&app, "medplum");
        expired["exp"] = json!(now() - 120);
        let response = post(without_scope(&rsa.sign_without_kid(&expired))).await;
        assert_token_error(response, StatusCode::UNAUTHORIZED, "invalid_client", "expired").await;
    }

    async fn scopes_of_unknown_types_and_empty_scopes_are_invalid_scope(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("app", &[&key], &["system/*.rs"])], |_| {}).await;
        for scope in ["system/UnknownResource.read", "system/UnknownResource.r", "system/Patient.rs system/UnknownResource.rs"] {
            let response = request_token(&app, &key.sign(&claims(&app, "app")), scope).await;
            assert_token_error(response, StatusCode::BAD_REQUEST, "invalid_scope", "'UnknownResource' is not a FHIR R4 resource type").await;
        }
        for scope in ["", "   "] {
            let response = request_token(&app, &key.sign(&claims(&app, "app")), scope).await;
            assert_token_error(response, StatusCode::BAD_REQUEST, "invalid_scope", "empty").await;
        }
        // A known type the server holds none of is granted.
        let response = request_token(&app, &key.sign(&claims(&app, "app")), "system/Medication.rs").await;
        assert_eq!(response.json::<Value>().await.unwrap()["scope"], "system/Medication.rs");
    }

    async fn a_nul_in_an_assertion_claim_is_an_oauth_error_not_a_500(backend: Backend) {
        let key = TestKey::ec("k");
        let app = spawn_secured(backend, vec![client("app", &[&key], &["system/*.rs"])], |_| {}).await;
        let mut nul_iss = claims(&app, "app\u{0}x");
        nul_iss["sub"] = nul_iss["iss"].clone();
        let response = request_token(&app, &key.sign(&nul_iss), "system/*.rs").await;
        assert_token_error(response, StatusCode::UNAUTHORIZED, "invalid_client", "unknown client").await;
        let mut nul_jti = claims(&app, "app");
        nul_jti["jti"] = json!("a\u{0}b");
        let response = request_token(&app, &key.sign(&nul_jti), "system/*.rs").await;
        assert_token_error(response, StatusCode::UNAUTHORIZED, "invalid_client", "jti").await;
        // The endpoint still works afterwards.
        assert_eq!(request_token(&app, &key.sign(&claims(&app, "app")), "system/*.rs").await.status(), StatusCode::OK);
    }

    async fn weak_rsa_keys_cannot_be_registered(backend: Backend) {
        let app = spawn_app(backend).await;
        let cli = async |args: &[&str]| {
            let output = Command::new(env!("CARGO_BIN_EXE_bulkfhir")).args(args).env("DATABASE_URL", &app.db.url).output().await.unwrap();
            (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr))
        };
        let short = json!({"keys": [{"kty": "RSA", "kid": "short", "n": RSA_1024_N, "e": "AQAB"}]}).to_string();
        let (ok, text) = cli(&["clients", "add", "weak", "--jwks", &short, "--scope", "system/*.read"]).await;
        assert!(!ok && text.contains("'short' has 1024 bits; at least 2048"), "{text}");
        let mut e3 = TestKey::rsa("e3").jwk;
        e3["e"] = json!("Aw");
        let (ok, text) = cli(&["clients", "add", "weak", "--jwks", &json!({"keys": [e3]}).to_string(), "--scope", "system/*.read"]).await;
        assert!(!ok && text.contains("public exponent 3"), "{text}");
        // A weak key beside a strong one is refused too, and nothing was registered.
        let both = json!({"keys": [TestKey::rsa("strong").jwk, {"kty": "RSA", "kid": "short", "n": RSA_1024_N, "e": "AQAB"}]}).to_string();
        assert!(!cli(&["clients", "add", "weak", "--jwks", &both, "--scope", "system/*.read"]).await.0);
        let (ok, text) = cli(&["clients", "list"]).await;
        assert!(ok && !text.contains("weak"), "{text}");
        assert_eq!(app.kick_off_raw("/$export").await.status(), StatusCode::ACCEPTED, "still open: no client was registered");
    }

    async fn discovery_documents_are_never_cacheable(backend: Backend) {
        let key = TestKey::ec("k");
        let open = spawn_app(backend).await;
        let secured = spawn_secured(backend, vec![client("app", &[&key], &["system/*.rs"])], |_| {}).await;
        for app in [&open, &secured] {
            let root = app.base_url.trim_end_matches("/fhir");
            let urls = [app.url("/metadata"), app.url("/.well-known/smart-configuration"), format!("{root}/.well-known/smart-configuration")];
            for url in urls {
                let response = app.client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{url}");
                assert_eq!(response.headers().get(header::CACHE_CONTROL).map(|v| v.to_str().unwrap()), Some("no-store"), "{url}");
            }
        }
    }
}
