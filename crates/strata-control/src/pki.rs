//! The daemon's small certificate authority for NBD over TCP with TLS: a CA kept in the data
//! dir (`tls/ca-cert.pem`, `tls/ca-key.pem`, the key readable by its owner only), a server
//! certificate issued at each start, and a client certificate issued per TCP attachment whose
//! Subject Common Name is the tenant: the NBD server opens an export for a TLS client only if
//! the export's volume belongs to the tenant its certificate names.
//!
//! # Invariants
//! - Every certificate has a bounded lifetime: client certificates
//!   [`DEFAULT_CLIENT_CERT_LIFETIME`] unless the caller asks for another, the server's
//!   [`SERVER_CERT_LIFETIME`] (it is issued again at each start), the CA ten years.
//! - Every client certificate has a fresh random serial of [`SERIAL_LEN`] bytes whose first
//!   byte is in `0x01..=0x7f`, so its DER encoding is exactly those bytes and the NBD server's
//!   hex of the raw serial equals [`Credentials::serial`]: the control plane records it and
//!   the admit hook looks it up.

use std::path::{Path, PathBuf};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// Lifetime of a client certificate `attach --tcp` hands out.
pub const DEFAULT_CLIENT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// Lifetime of the server certificate (issued again at every start).
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Lifetime of a new CA.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Bytes of a certificate serial.
pub const SERIAL_LEN: usize = 16;
/// Certificates start to be valid this long before they are issued (clock skew).
const BACKDATE: Duration = Duration::from_secs(300);

/// PKI failures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing the files.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Generating or parsing a certificate.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Credentials {
    /// The CA certificate to trust.
    pub ca_cert: String,
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// Its serial, lowercase hex.
    pub serial: String,
    /// End of its validity, seconds since the epoch.
    pub not_after: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn datetime(secs: u64) -> time::OffsetDateTime {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A fresh serial (see the module invariants).
fn new_serial() -> Vec<u8> {
    use rand::RngCore;
    let mut b = [0u8; SERIAL_LEN];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] = (b[0] & 0x7f).max(1);
    b.to_vec()
}

/// The certificate authority.
pub struct Pki {
    ca: Certificate,
    ca_key: KeyPair,
    ca_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn write_private(path: &Path, data: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(data.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

impl Pki {
    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (cert_path, key_path) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
        if cert_path.exists() && key_path.exists() {
            let ca_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let ca_key = KeyPair::from_pem(&key_pem)?;
            // Same name and key as the stored certificate: what it signs chains to that file.
            let ca = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
            return Ok(Pki { ca, ca_key, ca_pem });
        }
        let (pki, key_pem) = Pki::generate("Strata NBD CA")?;
        write_private(&key_path, &key_pem)?;
        std::fs::write(&cert_path, &pki.ca_pem).map_err(io(&cert_path))?;
        Ok(pki)
    }

    /// A new CA named `cn`, in memory, and its key (PEM) for the caller to keep.
    pub fn generate(cn: &str) -> Result<(Pki, String), PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let t = unix(SystemTime::now());
        params.not_before = datetime(t.saturating_sub(BACKDATE.as_secs()));
        params.not_after = datetime(t + CA_LIFETIME.as_secs());
        let ca = params.self_signed(&ca_key)?;
        let ca_pem = ca.pem();
        let key_pem = ca_key.serialize_pem();
        Ok((Pki { ca, ca_key, ca_pem }, key_pem))
    }

    /// The CA whose certificate and key are these PEMs (kept elsewhere: the cluster's, in the
    /// store).
    pub fn from_pem(ca_pem: &str, key_pem: &str) -> Result<Pki, PkiError> {
        let ca_key = KeyPair::from_pem(key_pem)?;
        let ca = CertificateParams::from_ca_cert_pem(ca_pem)?.self_signed(&ca_key)?;
        Ok(Pki {
            ca,
            ca_key,
            ca_pem: ca_pem.to_string(),
        })
    }

    /// The CA certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issue(
        &self,
        names: Vec<String>,
        cn: &str,
        usages: &[ExtendedKeyUsagePurpose],
        lifetime: Duration,
    ) -> Result<Credentials, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        let serial = new_serial();
        let t = unix(SystemTime::now());
        let not_after = t.saturating_add(lifetime.as_secs());
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = datetime(t.saturating_sub(BACKDATE.as_secs()));
        params.not_after = datetime(not_after);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.extended_key_usages = usages.to_vec();
        // qemu (gnutls) refuses certificates without key encipherment.
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        Ok(Credentials {
            ca_cert: self.ca_pem.clone(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after,
        })
    }

    /// A server certificate for the given host names and addresses.
    pub fn server(&self, names: &[String]) -> Result<Credentials, PkiError> {
        self.issue(
            names.to_vec(),
            "strata-nbd",
            &[ExtendedKeyUsagePurpose::ServerAuth],
            SERVER_CERT_LIFETIME,
        )
    }

    /// A client certificate whose Common Name is `identity` (the tenant), valid for
    /// [`DEFAULT_CLIENT_CERT_LIFETIME`].
    pub fn client(&self, identity: &str) -> Result<Credentials, PkiError> {
        self.client_for(identity, DEFAULT_CLIENT_CERT_LIFETIME)
    }

    /// A client certificate for `identity` valid for `lifetime` from now.
    pub fn client_for(&self, identity: &str, lifetime: Duration) -> Result<Credentials, PkiError> {
        self.issue(
            Vec::new(),
            identity,
            &[ExtendedKeyUsagePurpose::ClientAuth],
            lifetime,
        )
    }

    /// A node's certificate: Common Name `node:NAME` (the identity the node port admits),
    /// `names` (the node's name and advertised address) as subject alternative names, good
    /// for both ends of a TLS session (a node serves its copies and reaches others').
    pub fn node(&self, node: &str, names: &[String]) -> Result<Credentials, PkiError> {
        self.issue(
            names.to_vec(),
            &format!("{NODE_IDENTITY_PREFIX}{node}"),
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            SERVER_CERT_LIFETIME,
        )
    }
}

/// What a node certificate's Common Name starts with; the rest is the node's name.
pub const NODE_IDENTITY_PREFIX: &str = "node:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_survives_reload_and_issues_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path()).unwrap();
        let c1 = a.client("acme").unwrap();
        assert!(c1.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(c1.key.contains("PRIVATE KEY"));
        let b = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem(), "the CA is kept, not regenerated");
        let s = b.server(&["127.0.0.1".into(), "localhost".into()]).unwrap();
        assert_eq!(s.ca_cert, a.ca_pem());
        // Certificates issued after a reload chain to the CA file written before it.
        let c2 = b.client("acme").unwrap();
        for (name, pem) in [("client.pem", &c2.cert), ("server.pem", &s.cert)] {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            let o = std::process::Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(dir.path().join("ca-cert.pem"))
                .arg(&p)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        // Bounded lifetime, and the serial the NBD server will read is the one recorded.
        let der = pem_der(&c2.cert);
        let info = strata_nbd::cert_info(&der);
        assert_eq!(info.serial.as_deref(), Some(c2.serial.as_str()));
        assert_eq!(info.identity.as_deref(), Some("acme"));
        let end = unix(info.not_after.unwrap());
        assert_eq!(end, c2.not_after);
        let now = unix(SystemTime::now());
        assert!(
            end <= now + DEFAULT_CLIENT_CERT_LIFETIME.as_secs() + 1,
            "{end} {now}"
        );
        assert!(end + 60 >= now + DEFAULT_CLIENT_CERT_LIFETIME.as_secs());
        assert_ne!(c1.serial, c2.serial);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// The DER bytes of a PEM certificate (one block).
    fn pem_der(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let o = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b64.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        o.stdout
    }
}
