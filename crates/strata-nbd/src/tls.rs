//! TLS for TCP connections: building the rustls configuration from PEM files, the server
//! side of the handshake that `NBD_OPT_STARTTLS` starts, and the client identity a
//! certificate carries.
//!
//! Invariants:
//! - Who may connect is the [`rustls::ServerConfig`]'s decision (its client-certificate
//!   verifier); [`tls_server_config`] builds one that requires a certificate issued by the
//!   given CA. Which exports a verified client may open is the [`crate::Authorizer`]'s, given
//!   [`client_identity`] of the end-entity certificate.
//! - The identity is read only from a certificate the verifier accepted: the handshake has
//!   completed before the connection learns it.
//! - The crypto provider is always passed explicitly (ring), never the process default, so a
//!   second provider linked into the binary by another crate cannot make building panic.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConnection, StreamOwned};
use thiserror::Error;

use crate::socket::Stream;

/// A TLS session over a TCP connection, server side. The socket is the connection's
/// [`Stream`], so TLS records obey the same read deadline and write timeout as plain bytes.
pub(crate) type TlsStream = StreamOwned<ServerConnection, Stream>;

/// Why [`tls_server_config`] could not build a configuration.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// A PEM input did not parse.
    #[error("{what}: {source}")]
    Pem {
        /// Which input (`CA certificate`, `server certificate`, `server key`).
        what: &'static str,
        /// Cause.
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM input held no item of the expected kind.
    #[error("{0}: no PEM item of the expected kind")]
    Empty(&'static str),
    /// The CA certificate was rejected as a trust anchor.
    #[error("CA certificate: {0}")]
    Ca(rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the certificate chain, the key or the protocol versions.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every configuration of this crate uses (server and client): ring's,
/// with AES-128-GCM preferred. Every byte of a remote copy is encrypted on one node and
/// decrypted on the other, so the cipher is on the write path; AES-128 takes 10 rounds
/// where AES-256 takes 14, and TLS 1.3 makes it a mandatory suite. The others stay offered.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// The certificates of a PEM bundle (at least one).
pub(crate) fn certs(
    what: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let v = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Pem { what, source })?;
    if v.is_empty() {
        return Err(TlsConfigError::Empty(what));
    }
    Ok(v)
}

/// A store trusting the CA certificate(s) of `ca_pem` only.
pub(crate) fn roots(ca_pem: &[u8]) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for ca in certs("CA certificate", ca_pem)? {
        roots.add(ca).map_err(TlsConfigError::Ca)?;
    }
    Ok(roots)
}

/// The private key of `key_pem` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(
    what: &'static str,
    key_pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::Empty(what),
        source => TlsConfigError::Pem { what, source },
    })
}

/// A server configuration for NBD over TLS with mandatory client certificates.
///
/// - `ca_pem`: the CA certificate(s) that issue client certificates (PEM; several allowed).
/// - `cert_pem`: the server's certificate chain, end-entity first (PEM).
/// - `key_pem`: the server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
///
/// TLS 1.2 and 1.3 (the NBD spec requires 1.2), ring as the crypto provider. A client without
/// a certificate signed by the CA fails the handshake. These are the files qemu's
/// `tls-creds-x509` and libnbd's `tls-certificates` directory hold (`ca-cert.pem`,
/// `server-cert.pem`, `server-key.pem` on the server side).
///
/// ```no_run
/// # fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::path::Path::new("/etc/strata/pki");
/// let tls = strata_nbd::tls_server_config(
///     &std::fs::read(dir.join("ca-cert.pem"))?,
///     &std::fs::read(dir.join("server-cert.pem"))?,
///     &std::fs::read(dir.join("server-key.pem"))?,
/// )?;
/// let config = strata_nbd::ServerConfig {
///     tls: Some(tls),
///     tls_required: true,
///     ..Default::default()
/// };
/// # let _ = config; Ok(()) }
/// ```
pub fn tls_server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let roots = roots(ca_pem)?;
    let chain = certs("server certificate", cert_pem)?;
    let key = private_key("server key", key_pem)?;
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The identity a client certificate (DER) stands for: its Subject Common Name (the first,
/// if several), or `None` if it has none or does not parse. Parsed with `x509-parser`.
pub fn client_identity(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// What the server reads from a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject Common Name ([`client_identity`]).
    pub identity: Option<String>,
    /// Serial number, lowercase hex of its bytes, no separators.
    pub serial: Option<String>,
    /// End of validity.
    pub not_after: Option<SystemTime>,
}

/// [`CertInfo`] of a certificate (DER); fields it cannot read are `None`.
pub fn cert_info(cert_der: &[u8]) -> CertInfo {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return CertInfo::default();
    };
    let serial: String = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t = cert.validity().not_after.timestamp();
    let not_after = u64::try_from(t)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    CertInfo {
        identity: client_identity(cert_der),
        serial: Some(serial),
        not_after,
    }
}

/// Runs the server side of the TLS handshake on `sock` (whose read deadline and write timeout
/// bound it). Returns the session and what its verified end-entity certificate says (all
/// `None` without one).
pub(crate) fn accept(
    mut sock: Stream,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<(TlsStream, CertInfo)> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        // Blocking socket: returns once the handshake is done, or fails (a rejected
        // certificate is InvalidData, after the alert has been sent).
        conn.complete_io(&mut sock)?;
    }
    let info = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| cert_info(c))
        .unwrap_or_default();
    Ok((StreamOwned::new(conn, sock), info))
}

/// Ends a TLS session politely (close_notify), best effort: the spec asks the server to shut
/// TLS down before closing the socket.
pub(crate) fn close(s: &mut TlsStream) {
    s.conn.send_close_notify();
    // Write only: complete_io would also wait for the client's bytes.
    while s.conn.wants_write() {
        if !matches!(s.conn.write_tls(&mut s.sock), Ok(n) if n > 0) {
            break;
        }
    }
}
