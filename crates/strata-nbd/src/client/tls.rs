//! The client's TLS: a rustls client configuration that presents a certificate (a node's)
//! and trusts one CA (the cluster's), and the name the server's certificate must carry.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::tls::{self, TlsConfigError};

/// TLS for a client: the configuration and the server name to verify.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls configuration ([`tls_client_config`]).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// TLS to the server named `server_name` (checked against its certificate).
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<Self, TlsConfigError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsConfigError::Empty("server name"))?;
        Ok(ClientTls {
            config,
            server_name,
        })
    }
}

/// A client configuration for NBD over TLS: trusts the CA(s) in `ca_pem` only, and presents
/// `cert_pem` (chain, end-entity first) with `key_pem`. TLS 1.2 and 1.3, ring as the crypto
/// provider (passed explicitly, as the server side does).
pub fn tls_client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let roots = tls::roots(ca_pem)?;
    let chain = tls::certs("client certificate", cert_pem)?;
    let key = tls::private_key("client key", key_pem)?;
    let provider = tls::provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}
