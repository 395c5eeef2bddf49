//! Which roots outgoing HTTPS (client JWKS URLs, Azure Blob, S3) trusts: the system's store when
//! it holds any certificate, so an operator's own CAs and removals count; the bundled Mozilla set
//! (`webpki-root-certs`) otherwise, so a host or image without ca-certificates still reaches
//! public endpoints instead of failing every request.

use std::sync::LazyLock;

/// Where the trusted roots come from, decided once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    System,
    Bundled,
}

static ROOTS: LazyLock<Roots> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        tracing::warn!(?errors, "no CA certificates in the system store: outgoing HTTPS trusts the bundled Mozilla roots");
        Roots::Bundled
    } else {
        Roots::System
    }
});

/// The roots in force (reads the system store on first use).
pub fn roots() -> Roots {
    *ROOTS
}

/// A reqwest client builder that trusts [`roots`].
pub fn reqwest_trust(builder: reqwest13::ClientBuilder) -> reqwest13::ClientBuilder {
    reqwest_with(builder, roots())
}

fn reqwest_with(builder: reqwest13::ClientBuilder, roots: Roots) -> reqwest13::ClientBuilder {
    match roots {
        Roots::System => builder,
        Roots::Bundled => builder.tls_certs_only(bundled().filter_map(|der| reqwest13::Certificate::from_der(der).ok())),
    }
}

/// object_store client options that trust [`roots`].
pub fn object_store_trust(options: object_store::ClientOptions) -> object_store::ClientOptions {
    object_store_with(options, roots())
}

fn object_store_with(options: object_store::ClientOptions, roots: Roots) -> object_store::ClientOptions {
    match roots {
        Roots::System => options,
        Roots::Bundled => bundled()
            .filter_map(|der| object_store::Certificate::from_der(der).ok())
            .fold(options.with_no_system_certificates(true), |options, cert| options.with_root_certificate(cert)),
    }
}

fn bundled() -> impl Iterator<Item = &'static [u8]> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|cert| cert.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_roots_build_clients_that_need_no_system_store() {
        assert!(bundled().count() > 100, "the Mozilla set is bundled");
        reqwest_with(reqwest13::Client::builder(), Roots::Bundled).build().expect("a JWKS client on the bundled roots");
        let options = object_store_with(object_store::ClientOptions::new(), Roots::Bundled);
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("exports")
            .with_region("eu-west-1")
            .with_client_options(options)
            .build()
            .expect("an S3 client on the bundled roots");
    }
}
