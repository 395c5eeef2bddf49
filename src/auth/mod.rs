//! SMART Backend Services authorization: the client registry, the token endpoint's checks of a
//! client assertion, scopes, the server's access tokens, and per-client limits. Knows neither
//! axum nor SQL; the store keeps clients, seen `jti`s and the signing key.

pub mod assertion;
pub mod clients;
pub mod jwks;
pub mod poll_limiter;
pub mod registered_clients_cache;
pub mod scopes;
pub mod settings;
pub mod tokens;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clients::{Client, KeySource};
use jwks::JwksFetcher;
use poll_limiter::PollLimiter;
use registered_clients_cache::RegisteredClientsCache;
use scopes::Scopes;
use settings::AuthSettings;
use tokens::TokenKeys;

use crate::{
    model::requester::Requester,
    store::{AuthStore, StoreError},
};

pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The token endpoint, under the FHIR base.
pub const TOKEN_PATH: &str = "/auth/token";

/// A token request's form fields.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub scope: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// RFC 6749 §5.2 errors of the token endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error(transparent)]
    Assertion(#[from] assertion::AssertionError),
    /// The client's keys at its JWKS URL could not be had: the client cannot be authenticated.
    #[error(transparent)]
    Jwks(#[from] jwks::FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::InvalidClient(_) | Self::Assertion(_) | Self::Jwks(_) => "invalid_client",
            Self::InvalidScope(_) => "invalid_scope",
            Self::Store(_) => "server_error",
        }
    }
}

/// Why a request to a protected endpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this endpoint needs a bearer access token (get one at the token endpoint)")]
    MissingToken,
    #[error(transparent)]
    InvalidToken(tokens::TokenRejected),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who is calling, as far as the server knows.
#[derive(Debug, Clone)]
pub struct Caller {
    pub requester: Requester,
    /// The token's scopes; None when the server runs open (everything allowed).
    pub scopes: Option<Scopes>,
}

impl Caller {
    /// Whether the caller may use this SMART permission letter on the type.
    pub fn may(&self, resource_type: &str, letter: char) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.allows(resource_type, letter))
    }

    pub fn client_id(&self) -> Option<&str> {
        self.scopes.as_ref().map(|_| self.requester.owner.as_str())
    }
}

#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn AuthStore>,
    settings: AuthSettings,
    keys: TokenKeys,
    jwks: JwksFetcher,
    polls: PollLimiter,
    registered_clients: RegisteredClientsCache,
    token_url: String,
}

impl Auth {
    /// Loads (or creates) the signing key and registers the clients of the configuration.
    pub async fn start(store: Arc<dyn AuthStore>, settings: &AuthSettings, base_url: &str) -> anyhow::Result<Self> {
        let keys = match &settings.signing_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read auth.signing_key_file {}: {e}", path.display()))?;
                TokenKeys::from_pem(&pem, base_url)
            }
            None => TokenKeys::from_stored(&store.signing_key(&TokenKeys::generate()).await?, base_url),
        }?;
        for configured in &settings.clients {
            let client = configured.to_client().map_err(|e| anyhow::anyhow!("invalid configuration: auth.clients: {e}"))?;
            store.put_client(&client.to_record()).await?;
        }
        let auth = Self {
            inner: Arc::new(Inner {
                store,
                settings: settings.clone(),
                keys,
                jwks: JwksFetcher::new(),
                polls: PollLimiter::new(settings.status_polls_per_second),
                registered_clients: RegisteredClientsCache::default(),
                token_url: format!("{base_url}{TOKEN_PATH}"),
            }),
        };
        if !auth.enforced().await? {
            tracing::warn!(
                "authorization is OFF: no clients are registered and auth.allow_open is true, so anyone who can reach \
                 this server can export all of its data. Register a client (bulkfhir clients add) to turn it on."
            );
        } else if !auth.inner.store.has_clients().await? {
            tracing::warn!("authorization is on but no client is registered: nobody can obtain a token yet (bulkfhir clients add)");
        }
        Ok(auth)
    }

    pub fn token_url(&self) -> &str {
        &self.inner.token_url
    }

    /// Authorization is on whenever a client is registered, and always unless `allow_open`.
    /// Rechecked every `registered_clients_cache::RECHECK`, so registering the first client turns
    /// it on without a restart.
    pub async fn enforced(&self) -> Result<bool, StoreError> {
        Ok(!self.inner.settings.allow_open || self.inner.registered_clients.any_client(self.inner.store.as_ref()).await?)
    }

    /// The caller of a protected endpoint, from its `Authorization` header.
    pub async fn caller(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        if !self.enforced().await? {
            return Ok(Caller { requester: Requester::anonymous(), scopes: None });
        }
        let token = authorization
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(AuthError::MissingToken)?;
        let grant = self.inner.keys.verify(token).map_err(AuthError::InvalidToken)?;
        // A client removed since the token was issued loses access (within `registered_clients_cache::RECHECK`).
        if !self.inner.registered_clients.registered(self.inner.store.as_ref(), &grant.client_id).await? {
            return Err(AuthError::InvalidToken(tokens::TokenRejected::ClientGone));
        }
        let requester = Requester {
            owner: grant.client_id,
            types: grant.scopes.export_access(),
            max_active_exports: Some(self.inner.settings.max_concurrent_exports),
        };
        Ok(Caller { requester, scopes: Some(grant.scopes) })
    }

    /// Whether the caller may poll a status URL now. False when it polls far too often.
    pub fn poll_allowed(&self, caller: &Caller) -> bool {
        caller.client_id().is_none_or(|client| self.inner.polls.allow(client))
    }

    /// The token endpoint: `client_credentials` with a `private_key_jwt` client assertion.
    pub async fn issue_token(&self, request: TokenRequest) -> Result<IssuedToken, TokenError> {
        match request.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(other) => return Err(TokenError::UnsupportedGrantType(format!("grant_type '{other}' is not supported; use client_credentials"))),
            None => return Err(TokenError::InvalidRequest("grant_type is required".into())),
        }
        if request.client_assertion_type.as_deref() != Some(CLIENT_ASSERTION_TYPE) {
            return Err(TokenError::InvalidRequest(format!("client_assertion_type must be {CLIENT_ASSERTION_TYPE}")));
        }
        let assertion = request.client_assertion.as_deref().filter(|a| !a.is_empty()).ok_or_else(|| TokenError::InvalidRequest("client_assertion is required".into()))?;
        // An empty scope asks for nothing; a missing one asks for the default (checked below).
        if request.scope.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(TokenError::InvalidScope("the scope is empty; ask for system scopes such as system/*.read".into()));
        }
        let requested = request.scope.as_deref().map(|s| (s.trim(), Scopes::parse_lenient(s)));
        if let Some(unknown) = requested.as_ref().and_then(|(_, scopes)| scopes.unknown_type()) {
            return Err(TokenError::InvalidScope(format!("'{unknown}' is not a FHIR R4 resource type")));
        }

        let (client, expires_at, jti) = self.authenticate_client(assertion).await?;
        let granted = match &requested {
            Some((text, scopes)) => {
                let granted = client.scopes.grant(scopes);
                if granted.is_empty() {
                    return Err(TokenError::InvalidScope(format!("none of the requested scopes '{text}' is allowed for this client")));
                }
                granted
            }
            None => {
                // RFC 6749 §3.3 lets the server apply a default; Medplum's CLI sends no scope.
                tracing::info!(client = %client.id, scope = %client.scopes, "the token request has no scope: granting the client's registered scopes");
                client.scopes.clone()
            }
        };
        // The jti is recorded last, so a request refused for its scope can be retried as is.
        if !self.inner.store.remember_jti(&client.id, &jti, expires_at).await? {
            return Err(TokenError::InvalidClient("the client assertion's jti was already used".into()));
        }
        let lifetime = self.inner.settings.token_seconds;
        let access_token = self.inner.keys.issue(&client.id, &granted, lifetime);
        tracing::info!(client = %client.id, scope = %granted, "access token issued");
        Ok(IssuedToken { access_token, expires_in: lifetime, scope: granted.to_string() })
    }

    async fn authenticate_client(&self, assertion: &str) -> Result<(Client, DateTime<Utc>, String), TokenError> {
        let invalid = TokenError::InvalidClient;
        let header = assertion::header(assertion)?;
        let unverified = assertion::unverified_claims(assertion)?;
        let client_id = match (unverified.iss, unverified.sub) {
            (Some(iss), Some(sub)) if iss == sub => iss,
            _ => return Err(assertion::AssertionError::IssuerSubject.into()),
        };
        // No registered id has control characters or is that long: refuse before the store sees
        // it (Postgres refuses NUL in text with an error of its own).
        if !clients::valid_client_id(&client_id) {
            return Err(invalid("unknown client: the client assertion's iss is not a registered client_id".into()));
        }
        let record = self.inner.store.client(&client_id).await?.ok_or_else(|| invalid(format!("unknown client '{client_id}'")))?;
        let client = Client::from_record(&record).map_err(|e| invalid(format!("the registration of client '{client_id}' is not usable: {e}")))?;

        // SMART: a `jku` must be the JWKS URL registered for the client; keys come only from
        // the registration.
        if let Some(jku) = &header.jku {
            let registered = matches!(&client.keys, KeySource::Url(url) if url::Url::parse(jku).is_ok_and(|j| &j == url));
            if !registered {
                return Err(invalid("the client assertion's jku is not the JWKS URL registered for the client".into()));
            }
        }
        let kid = header.kid.as_deref();
        let keys = match &client.keys {
            KeySource::Inline(set) => set.clone(),
            KeySource::Url(url) => {
                let (set, cached) = self.inner.jwks.get(url, false).await?;
                if cached && assertion::select_key(&set, kid, header.alg, assertion).is_err() {
                    self.inner.jwks.get(url, true).await?.0
                } else {
                    set
                }
            }
        };
        let key = assertion::select_key(&keys, kid, header.alg, assertion)?;
        if kid.is_none() {
            tracing::info!(client = %client.id, kid = key.common.key_id.as_deref().unwrap_or_default(), "the client assertion has no kid: the one registered key that verifies it was used");
        }
        let skew = self.inner.settings.clock_skew_seconds;
        let claims = assertion::verify(assertion, key, header.alg, &client.id, &self.inner.token_url, skew)?;
        let expires_at = DateTime::from_timestamp(claims.exp as i64, 0).unwrap_or_else(Utc::now);
        Ok((client, expires_at, claims.jti.unwrap_or_default()))
    }

    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.inner.store
    }
}
