//! A registered backend client as the store keeps it (`auth::clients` validates it).

/// A client as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    /// JWKS JSON text, when given inline.
    pub jwks: Option<String>,
    pub jwks_url: Option<String>,
    /// Space-separated system scopes.
    pub scopes: String,
}
