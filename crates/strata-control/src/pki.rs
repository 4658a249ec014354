//! The daemon's small certificate authority for NBD over TCP with TLS: a CA kept in the data
//! dir (`tls/ca-cert.pem`, `tls/ca-key.pem`, the key readable by its owner only), a server
//! certificate issued at each start, and a client certificate issued per TCP attachment whose
//! Subject Common Name is the tenant: the NBD server opens an export for a TLS client only if
//! the export's volume belongs to the tenant its certificate names.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

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
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Strata NBD CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&ca_key)?;
        let ca_pem = ca.pem();
        write_private(&key_path, &ca_key.serialize_pem())?;
        std::fs::write(&cert_path, &ca_pem).map_err(io(&cert_path))?;
        Ok(Pki { ca, ca_key, ca_pem })
    }

    /// The CA certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issue(&self, names: Vec<String>, cn: &str, server: bool) -> Result<Credentials, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
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
        })
    }

    /// A server certificate for the given host names and addresses.
    pub fn server(&self, names: &[String]) -> Result<Credentials, PkiError> {
        self.issue(names.to_vec(), "strata-nbd", true)
    }

    /// A client certificate whose Common Name is `identity` (the tenant).
    pub fn client(&self, identity: &str) -> Result<Credentials, PkiError> {
        self.issue(Vec::new(), identity, false)
    }
}

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
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
